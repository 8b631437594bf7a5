"""The aligned recent past: every stream on host time, in bounded rings.

Features, the spotter and fusion ask one question: "what did each stream see between
``t0_ns`` and ``t1_ns`` of host time?". :class:`Aligner` answers it. Samples and frames
are stored with their device time and the clock segment they belong to, mapped to host
ns through the stream's :class:`edge.clock.model.ClockModel` when they arrive, and mapped again
lazily (on the next read) whenever that model has moved, so a read always uses the
latest fit. Streams without a model keep the host times they came with.

Memory is fixed at construction: sample rings hold ``history_s`` of each stream at its
nominal rate (plus slack for rate error), frame rings ``frame_history_s`` of frames,
markers at most ``max_markers``. What falls off is counted, never silently lost.

The aligner also feeds each block's newest device time and host time to the model
(:meth:`ClockModel.note_arrival`), which gives the coarse model before any pulse and
catches device resets; a block in which device time goes backwards is split there.
Pulse pairs are fed by whoever decodes the trigger column (``match_pulses``).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from edge.clock.model import ClockModel
from sensors.blocks import Frame, Marker, SampleBlock, StreamInfo

RATE_SLACK = 1.05  # room for crystal error and bursty delivery in a ring sized by time


@dataclass
class AlignCounters:
    """Per-stream bookkeeping; never reset."""

    inserted: int = 0
    evicted: int = 0
    remaps: int = 0  # full remaps after the clock model moved
    resets_split: int = 0  # blocks split where device time went backwards


class _Ring:
    """Fixed-capacity ring of (device_t, segment, host t_ns, payload row)."""

    def __init__(self, capacity: int, n_channels: int) -> None:
        self.cap = int(capacity)
        self.device_t = np.zeros(self.cap, dtype=np.float64)
        self.segment = np.zeros(self.cap, dtype=np.int64)
        self.t_ns = np.zeros(self.cap, dtype=np.int64)
        self.values = np.zeros((self.cap, n_channels), dtype=np.float64)
        self.n = 0  # rows ever written

    @property
    def size(self) -> int:
        return min(self.n, self.cap)

    def order(self) -> np.ndarray:
        """Ring positions, oldest first."""
        return np.arange(self.n - self.size, self.n) % self.cap

    def write(self, device_t: np.ndarray, segment: int, t_ns: np.ndarray,
              values: np.ndarray) -> tuple[int, int]:
        """Append rows (only the newest ``cap`` of an oversized write); return the ring
        position of the first row written and how many rows were evicted (overwritten or
        never stored)."""
        m = device_t.shape[0]
        keep = min(m, self.cap)
        start = (self.n + m - keep) % self.cap
        evicted = max(0, self.n + m - self.cap) - max(0, self.n - self.cap)
        # At most two contiguous slices (the write wraps once): no index arrays.
        first = min(keep, self.cap - start)
        for dst, src in ((slice(start, start + first), slice(m - keep, m - keep + first)),
                         (slice(0, keep - first), slice(m - keep + first, m))):
            if dst.stop > dst.start:
                self.device_t[dst] = device_t[src]
                self.segment[dst] = segment
                self.t_ns[dst] = t_ns[src]
                self.values[dst] = values[src]
        self.n += m
        return start, evicted


class _Stream:
    def __init__(self, name: str, capacity: int, n_channels: int,
                 clock: ClockModel | None, feed_arrivals: bool) -> None:
        self.name = name
        self.ring = _Ring(capacity, n_channels)
        self.clock = clock
        self.feed_arrivals = feed_arrivals
        self.mapped_version = -1 if clock is None else clock.version
        self.stale = False
        self.frames: list[Frame | None] | None = None
        self.counters = AlignCounters()

    def note(self, device_t_last: float, host_ns_last: int) -> None:
        if self.clock is not None and self.feed_arrivals:
            self.clock.note_arrival(device_t_last, host_ns_last)

    def map_new(self, device_t: np.ndarray, host_t_ns: np.ndarray) -> tuple[np.ndarray, int]:
        """Host ns for rows being inserted, and their segment."""
        if self.clock is None:
            return np.asarray(host_t_ns, dtype=np.int64), 0
        if self.clock.version != self.mapped_version:
            self.stale = True  # older rows used an older fit: remap them on read
        return self.clock.to_host_ns(device_t), self.clock.segment

    def refresh(self) -> None:
        """Remap every stored row if the model moved since they were mapped."""
        clock = self.clock
        if clock is None or (not self.stale and clock.version == self.mapped_version):
            return
        r = self.ring
        pos = r.order()
        segs = r.segment[pos]
        for seg in np.unique(segs):  # one or two segments in practice
            sel = pos[segs == seg]
            r.t_ns[sel] = clock.to_host_ns(r.device_t[sel], segment=int(seg))
        self.mapped_version = clock.version
        self.stale = False
        self.counters.remaps += 1


class Aligner:
    """Per-stream bounded rings of host-time-mapped samples, frames and markers."""

    def __init__(self, history_s: float = 30.0, *, frame_history_s: float = 2.0,
                 max_markers: int = 1024) -> None:
        if history_s <= 0 or frame_history_s <= 0 or max_markers < 1:
            raise ValueError("Aligner: history_s, frame_history_s and max_markers must be > 0")
        self.history_s = float(history_s)
        self.frame_history_s = float(frame_history_s)
        self._streams: dict[str, _Stream] = {}
        self._markers: deque[Marker] = deque(maxlen=int(max_markers))
        self.markers_evicted = 0

    # ---------------------------------------------------------------- setup

    def add_stream(self, info: StreamInfo, clock: ClockModel | None = None, *,
                   feed_arrivals: bool = True) -> None:
        """A sampled stream; ``clock`` maps its ``device_t`` (None: trust ``host_t_ns``)."""
        cap = math.ceil(self.history_s * info.fs_hz * RATE_SLACK) + 1
        self._add(_Stream(info.name, cap, len(info.channels), clock, feed_arrivals))

    def add_camera(self, name: str, fps: float, clock: ClockModel | None = None, *,
                   feed_arrivals: bool = True) -> None:
        """A frame stream; ``clock`` maps ``Frame.t_ns`` (None: it is host time already)."""
        cap = math.ceil(self.frame_history_s * fps * RATE_SLACK) + 1
        s = _Stream(name, cap, 1, clock, feed_arrivals)
        s.frames = [None] * cap
        self._add(s)

    def _add(self, s: _Stream) -> None:
        if s.name in self._streams:
            raise ValueError(f"Aligner: stream {s.name!r} added twice")
        self._streams[s.name] = s

    def _get(self, stream: str) -> _Stream:
        try:
            return self._streams[stream]
        except KeyError:
            raise KeyError(f"Aligner: unknown stream {stream!r}") from None

    # ---------------------------------------------------------------- input

    def add_block(self, stream: str, block: SampleBlock) -> None:
        s = self._get(stream)
        if s.frames is not None:
            raise ValueError(f"Aligner: {stream!r} is a camera; use add_frame")
        if len(block) == 0:
            return
        dev = np.asarray(block.device_t, dtype=np.float64)
        host = np.asarray(block.host_t_ns, dtype=np.int64)
        # Device time going backwards inside a block is a reset: each side its own segment.
        cuts = np.flatnonzero(np.diff(dev) < 0) + 1
        s.counters.resets_split += int(cuts.size)
        spans = ((0, dev.size),) if not cuts.size else zip(
            [0, *cuts.tolist()], [*cuts.tolist(), dev.size], strict=True)
        for lo, hi in spans:
            s.note(float(dev[hi - 1]), int(host[hi - 1]))
            t_ns, seg = s.map_new(dev[lo:hi], host[lo:hi])
            _, ev = s.ring.write(dev[lo:hi], seg, t_ns, block.values[lo:hi])
            s.counters.inserted += hi - lo
            s.counters.evicted += ev

    def add_frame(self, stream: str, frame: Frame, arrival_ns: int | None = None) -> None:
        """One frame; ``arrival_ns`` (host time it was read) feeds the coarse model."""
        s = self._get(stream)
        if s.frames is None:
            raise ValueError(f"Aligner: {stream!r} is not a camera; use add_block")
        dev = np.array([float(frame.t_ns)])
        if arrival_ns is not None:
            s.note(float(frame.t_ns), int(arrival_ns))
        t_ns, seg = s.map_new(dev, np.array([frame.t_ns], dtype=np.int64))
        pos, ev = s.ring.write(dev, seg, t_ns, np.array([[float(frame.seq)]]))
        s.frames[pos] = frame
        s.counters.inserted += 1
        s.counters.evicted += ev

    def add_marker(self, marker: Marker) -> None:
        """A marker (host time already, from the marker input)."""
        if len(self._markers) == self._markers.maxlen:
            self.markers_evicted += 1
        self._markers.append(marker)

    # ---------------------------------------------------------------- reads

    def window(self, stream: str, t0_ns: int, t1_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """Samples with ``t0_ns <= t_ns < t1_ns``, in device order: ``(t_ns, values)``."""
        s = self._get(stream)
        pos = self._select(s, t0_ns, t1_ns)
        return s.ring.t_ns[pos].copy(), s.ring.values[pos].copy()

    def frames(self, stream: str, t0_ns: int, t1_ns: int) -> tuple[np.ndarray, list[Frame]]:
        """Frames whose mapped time is in ``[t0_ns, t1_ns)``: ``(t_ns, frames)``."""
        s = self._get(stream)
        if s.frames is None:
            raise ValueError(f"Aligner: {stream!r} is not a camera")
        pos = self._select(s, t0_ns, t1_ns)
        frames = [f for f in (s.frames[int(p)] for p in pos) if f is not None]
        return s.ring.t_ns[pos].copy(), frames

    def markers(self, t0_ns: int, t1_ns: int) -> list[Marker]:
        """Markers with ``t0_ns <= t_ns < t1_ns``, oldest first."""
        return [m for m in self._markers if t0_ns <= m.t_ns < t1_ns]

    def latest_ns(self, stream: str) -> int | None:
        """Mapped host time of the newest row of a stream (None when empty)."""
        s = self._get(stream)
        if s.ring.size == 0:
            return None
        s.refresh()
        return int(s.ring.t_ns[(s.ring.n - 1) % s.ring.cap])

    @property
    def counters(self) -> dict[str, dict[str, int]]:
        out = {name: dict(vars(s.counters), stored=s.ring.size, capacity=s.ring.cap)
               for name, s in self._streams.items()}
        out["markers"] = {"stored": len(self._markers), "evicted": self.markers_evicted}
        return out

    def _select(self, s: _Stream, t0_ns: int, t1_ns: int) -> np.ndarray:
        s.refresh()
        pos = s.ring.order()
        t = s.ring.t_ns[pos]
        return pos[(t >= t0_ns) & (t < t1_ns)]
