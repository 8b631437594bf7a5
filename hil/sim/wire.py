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
from multiprocessing import shared_memory

import numpy as np

from sensors.blocks import Edge, monotonic_ns

SYNC = "sync"
MARKER = "marker"
MARKER_STROBE = "marker_strobe"


class Net:
    """One digital net (or an 8-bit bus treated as one value).

    Transitions live in a ring of ``capacity`` slots. The ring can sit in shared memory
    (:meth:`shared`, then :meth:`attach` in another process) so an emulator running in
    the EEG acquisition process samples the same wire the host drives: one writer
    process, any number of readers. Readers search the ring in place, without copying.
    """

    def __init__(self, name: str, initial: int = 0, capacity: int = 8192,
                 _shm: shared_memory.SharedMemory | None = None) -> None:
        self.name = name
        self._cap = capacity
        self._initial = int(initial)
        self._shm = _shm
        if _shm is None:
            buf = np.zeros(1 + 2 * capacity, dtype=np.int64)
        else:
            buf = np.ndarray((1 + 2 * capacity,), dtype=np.int64, buffer=_shm.buf)
        self._count = buf[0:1]  # total transitions ever driven
        self._t = buf[1: 1 + capacity]
        self._v = buf[1 + capacity:]
        self._cond = threading.Condition()

    @classmethod
    def shared(cls, name: str, initial: int = 0, capacity: int = 8192) -> Net:
        shm = shared_memory.SharedMemory(create=True, size=8 * (1 + 2 * capacity))
        net = cls(name, initial, capacity, _shm=shm)
        net._count[0] = 0
        return net

    def handle(self) -> tuple[str, int, int, str]:
        """What another process needs to :meth:`attach` (shared nets only)."""
        if self._shm is None:
            raise ValueError(f"net {self.name} is not in shared memory")
        return (self.name, self._initial, self._cap, self._shm.name)

    @classmethod
    def attach(cls, handle: tuple[str, int, int, str]) -> Net:
        name, initial, capacity, shm_name = handle
        return cls(name, initial, capacity, _shm=shared_memory.SharedMemory(name=shm_name))

    def close(self, unlink: bool = False) -> None:
        if self._shm is not None:
            self._count = self._t = self._v = np.zeros(0, dtype=np.int64)
            self._shm.close()
            if unlink:
                self._shm.unlink()
            self._shm = None

    @property
    def _n(self) -> int:
        return int(self._count[0])

    def drive(self, t_ns: int, value: int) -> None:
        """Append a transition at ``t_ns`` (must not precede the last one)."""
        with self._cond:
            n = self._n
            if n and t_ns < int(self._t[(n - 1) % self._cap]):
                raise ValueError(f"net {self.name}: transition at {t_ns} before the last one")
            i = n % self._cap
            self._t[i] = t_ns
            self._v[i] = int(value)
            self._count[0] = n + 1  # publish after the slot is written
            self._cond.notify_all()

    def schedule(self, times_ns: Sequence[int], values: Sequence[int]) -> None:
        """Drive a sorted run of future transitions (scenario markers)."""
        for t, v in zip(times_ns, values, strict=True):
            self.drive(int(t), int(v))

    def _segments(self) -> tuple[int, list[tuple[np.ndarray, np.ndarray]]]:
        """The ring as (older, newer) sorted views, oldest first, and the count."""
        n = self._n
        if n <= self._cap:
            return n, [(self._t[:n], self._v[:n])]
        p = n % self._cap
        return n, [(self._t[p:], self._v[p:]), (self._t[:p], self._v[:p])]

    def value_at(self, t_ns: np.ndarray | int) -> np.ndarray:
        """The net's value at each host time (vectorised, no copy of the history)."""
        t = np.asarray(t_ns, dtype=np.int64)
        out = np.full(t.shape, self._initial, dtype=np.int64)
        _, segments = self._segments()
        for times, values in segments:  # later segments overwrite earlier answers
            if times.size == 0:
                continue
            pos = np.searchsorted(times, t, side="right") - 1
            hit = pos >= 0
            out = np.where(hit, values[np.clip(pos, 0, None)], out)
        return out

    def value_one(self, t_ns: int) -> int:
        """:meth:`value_at` for one time, without numpy array set-up."""
        _, segments = self._segments()
        for times, values in reversed(segments):  # newest first
            if times.size and int(times[0]) <= t_ns:
                return int(values[int(np.searchsorted(times, t_ns, side="right")) - 1])
        return self._initial

    def transitions(self, after_ns: int, until_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """Transitions with after_ns < t <= until_ns, in order."""
        _, segments = self._segments()
        ts, vs = [], []
        for times, values in segments:
            lo = np.searchsorted(times, after_ns, side="right")
            hi = np.searchsorted(times, until_ns, side="right")
            ts.append(times[lo:hi].copy())
            vs.append(values[lo:hi].copy())
        return np.concatenate(ts), np.concatenate(vs)

    def next_transition_after(self, t_ns: int) -> int | None:
        _, segments = self._segments()
        for times, _ in segments:
            i = np.searchsorted(times, t_ns, side="right")
            if i < times.size:
                return int(times[i])
        return None

    def wait_change(self, timeout_s: float) -> None:
        """Sleep until someone in this process drives the net, or the timeout passes."""
        with self._cond:
            self._cond.wait(timeout_s)


class Wire:
    """The rig's trigger harness: named nets shared by the host and every emulator.

    With ``shared=True`` the nets live in shared memory, so emulators in another process
    (the EEG acquisition process) see the same wire: pass :meth:`handles` there and
    rebuild it with :meth:`attach`.
    """

    def __init__(self, shared: bool = False, nets: dict[str, Net] | None = None) -> None:
        make = Net.shared if shared else Net
        self.nets: dict[str, Net] = nets or {n: make(n) for n in (SYNC, MARKER, MARKER_STROBE)}
        self._owner = shared and nets is None

    def __getitem__(self, name: str) -> Net:
        return self.nets[name]

    def handles(self) -> dict[str, tuple[str, int, int, str]]:
        return {name: net.handle() for name, net in self.nets.items()}

    @classmethod
    def attach(cls, handles: dict[str, tuple[str, int, int, str]]) -> Wire:
        return cls(nets={name: Net.attach(h) for name, h in handles.items()})

    def close(self) -> None:
        for net in self.nets.values():
            net.close(unlink=self._owner)


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
