"""What the driver tests share: read a running driver for a while, and join its blocks."""

from __future__ import annotations

import time

import numpy as np

from sensors.blocks import SampleBlock
from sensors.seams import SampleDriver


def collect(drv: SampleDriver, seconds: float, poll_s: float = 0.05) -> list[SampleBlock]:
    """Every block ``drv`` delivers in ``seconds``, polling ``poll_s`` at a time."""
    blocks: list[SampleBlock] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        blocks += drv.poll(poll_s)
    return blocks


def run(drv: SampleDriver, seconds: float, poll_s: float = 0.05) -> list[SampleBlock]:
    """Open, stream ``seconds``, stop, and close ``drv``: every block it delivered."""
    drv.open()
    drv.start()
    try:
        blocks = collect(drv, seconds, poll_s)
    finally:
        drv.stop()
    blocks += drv.poll(0.0)
    drv.close()
    return blocks


def cat(blocks: list[SampleBlock], field: str) -> np.ndarray:
    """One field of every block, joined in order."""
    return np.concatenate([getattr(b, field) for b in blocks])
