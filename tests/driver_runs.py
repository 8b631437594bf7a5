"""What the driver tests share: read a running driver for a while, and join its blocks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

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


@contextmanager
def streaming(drv: SampleDriver) -> Iterator[list[SampleBlock]]:
    """Open and start ``drv`` for the body to add its blocks to the list yielded; on
    leaving, stop it, add what it still held, and close it."""
    blocks: list[SampleBlock] = []
    drv.open()
    drv.start()
    try:
        yield blocks
    finally:
        drv.stop()
        blocks += drv.poll(0.0)
        drv.close()


def run(drv: SampleDriver, seconds: float, poll_s: float = 0.05) -> list[SampleBlock]:
    """Open, stream ``seconds``, stop, and close ``drv``: every block it delivered."""
    with streaming(drv) as blocks:
        blocks += collect(drv, seconds, poll_s)
    return blocks


def cat(blocks: list[SampleBlock], field: str) -> np.ndarray:
    """One field of every block, joined in order."""
    return np.concatenate([getattr(b, field) for b in blocks])
