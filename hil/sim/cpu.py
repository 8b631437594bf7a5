"""CPU the simulators spend, so a bench run can tell the rig's own share from theirs.

Simulated devices run inside the rig's process: the hub's MCU and the Cyton board in
threads of their own (named ``sim-*``), a camera rendering its frame inside the driver's
``read``, the bridge's MCU inside the driver's transfers (or in a process of its own).
What runs in the rig's threads is charged here with the thread's own CPU clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class CpuMeter:
    """CPU seconds charged by any thread of this process."""

    def __init__(self) -> None:
        self._ns = 0
        self._lock = threading.Lock()

    @contextmanager
    def charge(self) -> Iterator[None]:
        t = time.thread_time_ns()
        try:
            yield
        finally:
            spent = time.thread_time_ns() - t
            with self._lock:
                self._ns += spent

    @property
    def seconds(self) -> float:
        return self._ns / 1e9


SIM_CPU = CpuMeter()  # one per process: every simulator in it charges here
