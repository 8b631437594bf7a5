"""Evaluation protocols (MEGC spotting)."""
