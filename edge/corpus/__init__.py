"""The MMME corpus: readers of its release layout and the importer to rig recordings."""
