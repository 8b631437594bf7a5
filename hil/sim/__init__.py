"""The simulated bench: an emulator behind every device's seam, the physiology and face
they render, the crystals and trigger wiring they share, the scenario that drives them,
and ``rig`` which wires them together for the composition root.
"""
