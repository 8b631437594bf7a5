"""The simulated trigger wiring: digital nets that every emulator samples on host time.

A :class:`Net` is a piecewise-constant value over host CLOCK_MONOTONIC ns. The host's
sync output drives the ``sync`` net through a :class:`SimOutputLine`; the scenario
schedules stimulus markers on ``marker`` (8-bit code) and ``marker_strobe`` ahead of
time. Emulators sample a net at their own sample instants, vectorised, exactly as a
device samples its trigger input pin. Transitions are kept in a bounded ring.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np

from sensors.blocks import Edge, monotonic_ns

SYNC = "sync"
MARKER = "marker"
MARKER_STROBE = "marker_strobe"


class Net:
    """One digital net (or an 8-bit bus treated as one value)."""

    def __init__(self, name: str, initial: int = 0, capacity: int = 8192) -> None:
        self.name = name
        self._cap = capacity
        self._t = np.full(capacity, np.iinfo(np.int64).min, dtype=np.int64)
        self._v = np.zeros(capacity, dtype=np.int64)
        self._n = 0  # total transitions ever driven
        self._initial = int(initial)
        self._cond = threading.Condition()

    def drive(self, t_ns: int, value: int) -> None:
        """Append a transition at ``t_ns`` (must not precede the last one)."""
        with self._cond:
            if self._n and t_ns < self._last_t():
                raise ValueError(f"net {self.name}: transition at {t_ns} before the last one")
            i = self._n % self._cap
            self._t[i] = t_ns
            self._v[i] = int(value)
            self._n += 1
            self._cond.notify_all()

    def schedule(self, times_ns: Sequence[int], values: Sequence[int]) -> None:
        """Drive a sorted run of future transitions (scenario markers)."""
        for t, v in zip(times_ns, values, strict=True):
            self.drive(int(t), int(v))

    def _last_t(self) -> int:
        return int(self._t[(self._n - 1) % self._cap])

    def _snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        with self._cond:
            n = min(self._n, self._cap)
            start = self._n - n
            idx = (np.arange(start, self._n) % self._cap) if n else np.zeros(0, dtype=np.int64)
            return self._t[idx].copy(), self._v[idx].copy()

    def value_at(self, t_ns: np.ndarray | int) -> np.ndarray:
        """The net's value at each host time (vectorised)."""
        times, values = self._snapshot()
        t = np.asarray(t_ns, dtype=np.int64)
        if times.size == 0:
            return np.full(t.shape, self._initial, dtype=np.int64)
        pos = np.searchsorted(times, t, side="right") - 1
        out = np.where(pos >= 0, values[np.clip(pos, 0, None)], self._initial)
        return out.astype(np.int64)

    def transitions(self, after_ns: int, until_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """Transitions with after_ns < t <= until_ns, in order."""
        times, values = self._snapshot()
        lo = np.searchsorted(times, after_ns, side="right")
        hi = np.searchsorted(times, until_ns, side="right")
        return times[lo:hi], values[lo:hi]

    def next_transition_after(self, t_ns: int) -> int | None:
        times, _ = self._snapshot()
        i = np.searchsorted(times, t_ns, side="right")
        return int(times[i]) if i < times.size else None

    def wait_change(self, timeout_s: float) -> None:
        """Sleep until someone drives the net or the timeout passes."""
        with self._cond:
            self._cond.wait(timeout_s)


class Wire:
    """The rig's trigger harness: named nets shared by the host and every emulator."""

    def __init__(self) -> None:
        self.nets: dict[str, Net] = {
            SYNC: Net(SYNC),
            MARKER: Net(MARKER),
            MARKER_STROBE: Net(MARKER_STROBE),
        }

    def __getitem__(self, name: str) -> Net:
        return self.nets[name]


class SimOutputLine:
    """The host's GPIO output, driving a net (implements ``sensors.seams.OutputLine``)."""

    def __init__(self, net: Net) -> None:
        self._net = net

    def set(self, value: int) -> int:
        t = monotonic_ns()
        self._net.drive(t, value)
        return t

    def close(self) -> None:
        pass


class SimEdgeInput:
    """A host GPIO input watching a net (implements ``sensors.seams.EdgeInput``).

    Edges carry the exact transition time, as a kernel timestamp would, and a running
    sequence number. Scheduled future transitions are reported only once they are due.
    """

    def __init__(self, net: Net, jitter_ns: int = 0, seed: int = 0) -> None:
        self._net = net
        self._seen_ns = monotonic_ns()
        self._seq = 0
        self._jitter_ns = jitter_ns
        self._rng = np.random.default_rng(seed)

    def read_edges(self, timeout_s: float) -> list[Edge]:
        deadline = time.monotonic() + max(timeout_s, 0.0)
        while True:
            now = monotonic_ns()
            times, values = self._net.transitions(self._seen_ns, now)
            if times.size:
                self._seen_ns = int(times[-1])
                prev = self._net.value_at(times - 1)
                edges = []
                for t, v, p in zip(times.tolist(), values.tolist(), prev.tolist(), strict=True):
                    if v == p:
                        continue
                    self._seq += 1
                    jitter = (
                        int(self._rng.integers(0, self._jitter_ns + 1)) if self._jitter_ns else 0
                    )
                    edges.append(Edge(t_ns=t + jitter, rising=v > p, seq=self._seq))
                if edges:
                    return edges
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            nxt = self._net.next_transition_after(now)
            wait = remaining if nxt is None else min(remaining, max((nxt - now) / 1e9, 0.0))
            if wait > 0:
                self._net.wait_change(wait)

    def value(self) -> int:
        return int(self._net.value_at(monotonic_ns()))

    def close(self) -> None:
        pass


class SimInputBus:
    """The marker data lines, read as one integer (implements ``sensors.seams.InputBus``)."""

    def __init__(self, net: Net) -> None:
        self._net = net

    def read(self) -> int:
        return int(self._net.value_at(monotonic_ns()))

    def close(self) -> None:
        pass
