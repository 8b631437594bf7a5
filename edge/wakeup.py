"""The host's wake floor: can a user-space reader serve an ADS1299 directly at ``fs_hz``?

The ADS1299 holds one frame: in direct mode (``eeg.backend = "spi"``) a reader that wakes
later than the next DRDY has lost a sample, whatever it does after waking. This module
measures that floor for the host alone: a process at the EEG reader's priority
(SCHED_FIFO where allowed) sleeps to each tick of an ``fs_hz`` grid and does nothing
else, and each tick is scored with the driver's own rule (:mod:`sensors.ads1299`): ticks
passed while asleep are "overwritten", a wake later than ``LATE_READ_PERIODS`` periods
after the newest tick is a "late read".

Used by ``mmme-edge selftest`` (the verdict, written to a small cache), ``mmme-edge run``
(a warning at start: the cached verdict of this boot, or a short measurement) and
``mmme-hil bench wakeup`` (idle and beside the rig).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sensors.ads1299 import LATE_READ_PERIODS

# The reader must beat every DRDY itself ("sim" only with sim.eeg_link = "spi": the bridge's
# FIFO takes that deadline; edge.selftest.direct_mode decides).
DIRECT_BACKENDS = ("spi", "spidev", "sim")
CACHE_NAME = "wake-floor.json"


def set_realtime(priority: int | None) -> str:
    """SCHED_FIFO at ``priority`` for this process where allowed; says what it got."""
    if not priority:
        return "normal"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return f"SCHED_FIFO {priority}"
    except (PermissionError, OSError, AttributeError) as exc:
        return f"normal (real-time refused: {exc})"


def serve(now_ns: int, t0_ns: int, period_ns: int, k: int, n: int) -> tuple[int, int, bool]:
    """Score one wake at ``now_ns`` that was due for tick ``k`` (of ``n``) as the driver
    would: (newest tick, ticks overwritten before it, whether its read is late)."""
    newest = min(max((now_ns - t0_ns) // period_ns, k), n - 1)
    lag = now_ns - (t0_ns + newest * period_ns)
    return newest, newest - k, lag > LATE_READ_PERIODS * period_ns


def wake_loop(fs_hz: float, seconds: float, rt_priority: int | None) -> dict[str, Any]:
    """Sleep to every tick of an ``fs_hz`` grid for ``seconds``; score each as the driver."""
    sched = set_realtime(rt_priority)
    period = round(1e9 / fs_hz)
    n = max(int(seconds * fs_hz), 1)
    late = np.empty(n, dtype=np.int64)  # wake - the tick it slept for
    got = overwritten = late_reads = 0
    t0 = time.monotonic_ns() + 10 * period
    k = 0  # next tick to serve
    while k < n:
        tick = t0 + k * period
        now = time.monotonic_ns()
        if tick > now:
            time.sleep((tick - now) / 1e9)
            now = time.monotonic_ns()
        newest, lost, is_late = serve(now, t0, period, k, n)
        overwritten += lost
        late_reads += is_late
        late[got] = now - tick
        got += 1
        k = newest + 1
    lat_us = late[:got] / 1e3
    return {
        "scheduling": sched, "ticks": n, "overwritten": overwritten, "late_read": late_reads,
        "loss_fraction": round((overwritten + late_reads) / n, 6),
        "lateness_us": {q: round(float(np.percentile(lat_us, p)), 1)
                        for q, p in (("p50", 50), ("p99", 99), ("p999", 99.9))}
        | {"max": round(float(lat_us.max()), 1)},
    }


def measure(fs_hz: float, seconds: float, rt_priority: int | None) -> dict[str, Any]:
    """:func:`wake_loop` in its own process, as the EEG reader: this process's threads
    and GIL stay out of it."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(wake_loop, (fs_hz, seconds, rt_priority))


class Measurement:
    """:func:`measure` in the background (beside the rig): ``start()``, ``ready()``,
    ``result()``. The process is spawned (and its imports done) at construction, so
    what runs beside the rig after ``start()`` is the wake loop alone."""

    def __init__(self, fs_hz: float, seconds: float, rt_priority: int | None) -> None:
        self.fs_hz, self.seconds, self._rt = float(fs_hz), float(seconds), rt_priority
        self._pool = mp.get_context("spawn").Pool(1)
        self._pool.apply(boot_id)  # the worker is up and has imported this module
        self._res: Any = None

    def start(self) -> None:
        self._res = self._pool.apply_async(wake_loop, (self.fs_hz, self.seconds, self._rt))

    def ready(self) -> bool:
        return self._res is not None and self._res.ready()

    def result(self, timeout_s: float = 60.0) -> dict[str, Any]:
        try:
            return self._res.get(timeout=self.seconds + timeout_s)
        finally:
            self.close()

    def close(self) -> None:
        """End the worker (again: no-op)."""
        self._pool.terminate()
        self._pool.join()


@dataclass(frozen=True)
class WakeFloor:
    """One measurement's verdict: can direct mode hold ``fs_hz`` on this host?"""

    fs_hz: float
    seconds: float
    ticks: int
    lost: int  # overwritten + late reads of the do-nothing loop
    p999_us: float
    scheduling: str
    boot_id: str
    measured_at_s: float  # wall-clock seconds (time.time), for the reader of the cache
    conditions: str = "idle host"

    @classmethod
    def from_result(cls, fs_hz: float, seconds: float, r: dict[str, Any],
                    conditions: str = "idle host") -> WakeFloor:
        return cls(fs_hz=float(fs_hz), seconds=float(seconds), ticks=int(r["ticks"]),
                   lost=int(r["overwritten"]) + int(r["late_read"]),
                   p999_us=float(r["lateness_us"]["p999"]), scheduling=str(r["scheduling"]),
                   boot_id=boot_id(), measured_at_s=time.time(), conditions=conditions)

    def plus(self, other: WakeFloor) -> WakeFloor:
        """Both measurements as one verdict (idle and beside the rig, as ``bench wakeup``)."""
        return WakeFloor(fs_hz=self.fs_hz, seconds=self.seconds + other.seconds,
                         ticks=self.ticks + other.ticks, lost=self.lost + other.lost,
                         p999_us=max(self.p999_us, other.p999_us), scheduling=self.scheduling,
                         boot_id=self.boot_id, measured_at_s=other.measured_at_s,
                         conditions=f"{self.conditions} {self.seconds:g} s + "
                                    f"{other.conditions} {other.seconds:g} s")

    @property
    def holds(self) -> bool:
        """The EEG must lose nothing: one missed deadline of the empty loop is a no."""
        return self.lost == 0

    def sentence(self) -> str:
        """The verdict in one plain line."""
        lost = (f"a do-nothing reader missed {self.lost} of {self.ticks} deadlines "
                f"({100 * self.lost / max(self.ticks, 1):.2f} %)" if self.lost else
                f"a do-nothing reader met all {self.ticks} deadlines")
        head = (f"direct mode can hold {self.fs_hz:g} Hz here" if self.holds else
                f"direct mode CANNOT hold {self.fs_hz:g} Hz here: EEG samples will be lost")
        return (f"{head} ({lost} in {self.seconds:g} s, {self.conditions}, at {self.scheduling}; "
                f"wake p99.9 {self.p999_us:.0f} us late)")


def check(fs_hz: float, seconds: float, rt_priority: int | None) -> WakeFloor:
    """Measure the floor for ``seconds`` and judge it."""
    return WakeFloor.from_result(fs_hz, seconds, measure(fs_hz, seconds, rt_priority))


def boot_id() -> str:
    """This boot's id (a verdict from another boot, or another kernel, says nothing)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mmme-edge" / CACHE_NAME


def save(floor: WakeFloor, path: Path | None = None) -> None:
    """Keep the verdict for ``mmme-edge run`` (a failed write only loses the cache)."""
    p = path or cache_path()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(asdict(floor)))
    except OSError:
        pass


def load(fs_hz: float, path: Path | None = None) -> WakeFloor | None:
    """The cached verdict for ``fs_hz`` from this boot, or None."""
    try:
        doc = json.loads((path or cache_path()).read_text())
        floor = WakeFloor(**doc)
    except (OSError, ValueError, TypeError):
        return None
    if floor.boot_id != boot_id() or floor.fs_hz != float(fs_hz):
        return None
    return floor
