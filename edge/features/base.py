"""Building blocks shared by the feature steps: the Feature value, signal-quality bits,
streaming filters with carried state, a boxcar decimator and bounded ring buffers.

Every step is a small stateful object with one ``update(...)`` (timeflux style). Nothing
here loops over samples in Python: per-block work is numpy/scipy, and the only Python
loops run over events (beats, breaths, windows), a handful per block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

# --- reasons a feature is invalid ------------------------------------------------------
OK = ""
WARMUP = "warmup"  # not enough data yet since start or since a gap
PENDING = "pending"  # the window the feature needs has not closed yet
NO_BEATS = "no_beats"
NO_DATA = "no_data"

# Per-sample quality bits; the order of REASON_BITS is the priority when several apply.
BAD_LEADOFF = np.uint8(1)
BAD_SAT = np.uint8(2)
BAD_NAN = np.uint8(4)
BAD_GAP = np.uint8(8)
BAD_FLAT = np.uint8(16)
REASON_BITS: tuple[tuple[int, str], ...] = (
    (int(BAD_LEADOFF), "lead_off"),
    (int(BAD_SAT), "saturated"),
    (int(BAD_NAN), "nan"),
    (int(BAD_GAP), "gap"),
    (int(BAD_FLAT), "flat"),
)


def reason_of(bits: int) -> str:
    """The highest-priority reason in a union of quality bits ('' when clean)."""
    for bit, name in REASON_BITS:
        if bits & bit:
            return name
    return OK


def union_bits(bad: np.ndarray) -> int:
    """OR of all quality bits in a window (0 for an empty window)."""
    return int(np.bitwise_or.reduce(bad, axis=None)) if bad.size else 0


@dataclass(frozen=True)
class Feature:
    """One feature value.

    ``t_ns`` is the host time (CLOCK_MONOTONIC ns) of the data the value refers to (an
    R peak, the end of a 1-s window, an SCR onset). ``latency_ms`` is how long after
    ``t_ns`` the value became available, measured in signal time: host time of the newest
    sample consumed when it was produced minus ``t_ns``. An invalid feature says why in
    ``reason`` and carries NaN, never a plausible number.
    """

    name: str
    value: float
    unit: str
    t_ns: int
    latency_ms: float
    valid: bool
    reason: str = OK

    @staticmethod
    def make(name: str, value: float, unit: str, t_ns: int, now_ns: int, reason: str = OK
             ) -> Feature:
        ok = reason == OK and bool(np.isfinite(value))
        if reason == OK and not ok:
            reason = "nan"
        return Feature(name, float(value) if ok else float("nan"), unit, int(t_ns),
                       (int(now_ns) - int(t_ns)) / 1e6, ok, reason)


ABSURD = 1e100  # no physical value in any unit comes near this

# --- streaming filters ------------------------------------------------------------------
class OneSecondPieces:
    """A streaming step whose bounded history must hold what its detectors still need:
    a block of any size is fed to ``_update`` in pieces of at most one second."""

    fs: float

    def update(self, t_ns: np.ndarray, x: np.ndarray, bad: np.ndarray) -> list[Feature]:
        step = max(int(self.fs), 1)
        out: list[Feature] = []
        for a in range(0, x.shape[0], step):
            out += self._update(t_ns[a:a + step], x[a:a + step], bad[a:a + step])
        return out

    def _update(self, t_ns: np.ndarray, x: np.ndarray, bad: np.ndarray) -> list[Feature]:
        raise NotImplementedError


class SosStream:
    """A causal IIR filter (second-order sections) whose state is carried across blocks,
    so filtering in blocks of any size gives the same output as one call on the whole."""

    def __init__(self, sos: np.ndarray, n_channels: int = 1) -> None:
        self.sos = np.asarray(sos, dtype=float)
        self._zi_unit = signal.sosfilt_zi(self.sos)  # (n_sections, 2) for a unit step
        self.zi: np.ndarray | None = None
        self.n_channels = n_channels

    def update(self, x: np.ndarray) -> np.ndarray:
        """Filter ``x`` (n,) or (n, n_channels) along axis 0."""
        if x.shape[0] == 0:
            return x.astype(float)
        if self.zi is not None and np.abs(self.zi).max() > ABSURD:
            # The state holds the transient of an absurd sample (e.g. 1e300): it would take
            # minutes to decay, so start afresh (a fixed bound: no physical signal is near
            # it, and the outcome cannot depend on how the input was cut into blocks).
            self.zi = None
        if self.zi is None:
            # Start in steady state at the first value so a DC offset gives no step response.
            self.zi = self._zi_unit[..., None] * x[0] if x.ndim == 2 else self._zi_unit * x[0]
        y, self.zi = signal.sosfilt(self.sos, x, axis=0, zi=self.zi)
        if not np.isfinite(self.zi).all():
            self.zi = None  # overflowed (a 1e300 sample): start afresh, not NaN for ever
        return y

    def reset(self) -> None:
        self.zi = None


def butter(order: int, cut: float | tuple[float, float], btype: str, fs: float) -> np.ndarray:
    return signal.butter(order, cut, btype=btype, fs=fs, output="sos")


def dc_group_delay_s(sos: np.ndarray, fs: float, f_hz: float = 0.1) -> float:
    """Group delay of a low-pass ``sos`` at a low frequency: what to subtract from event
    times found on a slow signal after that filter."""
    b, a = signal.sos2tf(sos)
    _, gd = signal.group_delay((b, a), w=[f_hz], fs=fs)
    return float(gd[0]) / fs


def fill_nonfinite(x: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Replace NaN/inf by the last finite value per channel (so one NaN cannot poison a
    filter state forever). Returns the filled copy and the updated ``last`` value."""
    bad = ~np.isfinite(x)
    if not bad.any():
        return x, x[-1].copy() if x.shape[0] else last
    x = x.copy()
    n = x.shape[0]
    idx = np.where(~bad, np.arange(n)[:, None] if x.ndim == 2 else np.arange(n), -1)
    idx = np.maximum.accumulate(idx, axis=0)
    prev = np.broadcast_to(last, x.shape[1:]) if x.ndim == 2 else last
    if x.ndim == 2:
        cols = np.broadcast_to(np.arange(x.shape[1]), x.shape)
        filled = np.where(idx >= 0, x[np.maximum(idx, 0), cols], prev)
    else:
        filled = np.where(idx >= 0, x[np.maximum(idx, 0)], prev)
    return filled, filled[-1].copy()


# --- per-sample quality ------------------------------------------------------------------
class Quality:
    """Per-sample quality bits for one or more channels of one stream.

    NaN/inf, saturation (outside ``[lo, hi]``, or clipped: a run of at least ``clip_n``
    identical values at the highest or lowest value the channel has ever had, which is
    what an amplifier or ADC at its rail gives whatever its unknown limits), flat line (a
    run of at least ``flat_n`` samples whose value does not change by more than
    ``flat_eps``), lead-off (a mask the caller decodes from status bits) and gaps (a jump
    in the device sample counter; the first sample after the jump carries the bit). Run
    lengths and extremes are carried across blocks so the verdict does not depend on
    block size.
    """

    def __init__(self, n_channels: int, lo: np.ndarray, hi: np.ndarray, flat_n: np.ndarray,
                 flat_eps: np.ndarray, clip_n: np.ndarray | None = None) -> None:
        self.lo, self.hi = np.asarray(lo, float), np.asarray(hi, float)
        self.flat_n = np.asarray(flat_n, np.int64)
        self.flat_eps = np.asarray(flat_eps, float)
        # 0: no clip detection on that channel (slow signals may hold a value at a new high).
        self.clip_n = np.zeros(n_channels, np.int64) if clip_n is None else \
            np.asarray(clip_n, np.int64)
        self._run = np.zeros(n_channels, np.int64)  # flat-run length ending at last sample
        self._same = np.zeros(n_channels, np.int64)  # identical-value run length
        self._exact = bool((self.flat_eps == 0).all())
        self._max = np.full(n_channels, -np.inf)
        self._min = np.full(n_channels, np.inf)
        self._last_x = np.full(n_channels, np.nan)
        self._last_index: int | None = None

    def update(self, index: np.ndarray, x: np.ndarray, lead_off: np.ndarray | None = None,
               saturated: np.ndarray | None = None) -> np.ndarray:
        """``x`` (n, n_channels) physical values -> (n, n_channels) uint8 quality bits."""
        n, c = x.shape
        bad = np.zeros((n, c), np.uint8)
        if n == 0:
            return bad
        finite = np.isfinite(x)
        bad[~finite] |= BAD_NAN
        bad[finite & ((x < self.lo) | (x > self.hi))] |= BAD_SAT
        for mask, bit in ((lead_off, BAD_LEADOFF), (saturated, BAD_SAT)):
            if mask is not None:
                m = np.asarray(mask, bool)
                bad[np.broadcast_to(m[:, None] if m.ndim == 1 else m, (n, c))] |= bit
        # Gap: a jump in the device counter, inside the block or from the last block.
        idx = np.asarray(index, np.int64)
        prev = np.concatenate(([idx[0] - 1 if self._last_index is None else self._last_index],
                               idx[:-1]))
        bad[idx != prev + 1] |= BAD_GAP
        self._last_index = int(idx[-1])
        # Flat runs: cumulative count of "unchanged" steps, reset where the value moves.
        xp = np.vstack((self._last_x[None, :], x))
        same = np.abs(np.diff(xp, axis=0)) <= self.flat_eps  # NaN compares False
        run = _run_lengths(same, self._run)
        self._run = run[-1]
        bad[run >= self.flat_n] |= BAD_FLAT
        cols = np.flatnonzero(self.clip_n)
        if cols.size:
            # Identical-value runs: the flat runs themselves where flat_eps is 0.
            if self._exact:
                ident = run[:, cols]
            else:
                ident = _run_lengths(np.diff(xp[:, cols], axis=0) == 0, self._same[cols])
                self._same[cols] = ident[-1]
            xc = x[:, cols]
            xf = np.where(finite[:, cols], xc, np.nan)
            hi = np.fmax.accumulate(np.vstack((self._max[None, cols], xf)), axis=0)[1:]
            lo = np.fmin.accumulate(np.vstack((self._min[None, cols], xf)), axis=0)[1:]
            self._max[cols], self._min[cols] = hi[-1], lo[-1]
            clip = (ident >= self.clip_n[cols]) & ((xc >= hi) | (xc <= lo))
            bad[:, cols] |= np.where(clip, BAD_SAT, np.uint8(0)).astype(np.uint8)
        self._last_x = x[-1].copy()
        return bad


def _run_lengths(same: np.ndarray, carry: np.ndarray) -> np.ndarray:
    """Length of the run of True ending at each row (per column), continuing ``carry``."""
    n = same.shape[0]
    pos = np.arange(1, n + 1)[:, None]
    # Position of the last False at or before each row (0 if none in this block).
    last_false = np.maximum.accumulate(np.where(~same, pos, 0), axis=0)
    run = pos - last_false
    no_break = last_false == 0
    return np.where(no_break, run + carry[None, :], run)


# --- decimation ----------------------------------------------------------------------------
class Boxcar:
    """Decimate by averaging groups of ``k`` consecutive samples (a boxcar: exactly linear
    phase, nulls at multiples of fs/k, so 50 Hz mains vanishes for fs/k = 25 Hz). The
    output time is the mean host time of the group, so it needs no delay correction.
    Leftover samples wait for the next block: output is independent of block size."""

    def __init__(self, k: int, n_channels: int) -> None:
        self.k = k
        self._t = np.zeros(0, np.int64)
        self._x = np.zeros((0, n_channels))
        self._bad = np.zeros((0, n_channels), np.uint8)

    def update(self, t_ns: np.ndarray, x: np.ndarray, bad: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = np.concatenate((self._t, t_ns))
        xx = np.vstack((self._x, x))
        bb = np.vstack((self._bad, bad))
        m = (t.shape[0] // self.k) * self.k
        self._t, self._x, self._bad = t[m:], xx[m:], bb[m:]
        g = m // self.k
        t0 = t[:m].reshape(g, self.k)
        # Mean host time without int64 overflow: offset from the group's first sample.
        tm = t0[:, 0] + np.round((t0 - t0[:, :1]).mean(axis=1)).astype(np.int64)
        c = xx.shape[1]
        xm = xx[:m].reshape(g, self.k, c).mean(axis=1)
        bm = np.bitwise_or.reduce(bb[:m].reshape(g, self.k, c), axis=1)
        return tm, xm, bm


class Ring:
    """A bounded history of (time, values, quality) rows for windowed features.

    Rows live contiguously in buffers twice the capacity: a push appends after the held
    rows and only when the buffers' end is reached are the newest rows moved back to the
    front, so a push costs its own rows plus, amortised, about one more copy of them
    (never the whole history). Reads return views of the held rows."""

    def __init__(self, capacity: int, n_channels: int) -> None:
        self.cap = capacity
        size = 2 * capacity
        self._t = np.zeros(size, np.int64)
        self._x = np.zeros((size, n_channels))
        self._bad = np.zeros((size, n_channels), np.uint8)
        self._s = 0  # buffer row of the oldest held row
        self.n = 0  # rows held
        self.total = 0  # rows ever pushed (global row number of the next row)

    @property
    def t(self) -> np.ndarray:
        return self._t[self._s:self._s + self.n]

    @property
    def x(self) -> np.ndarray:
        return self._x[self._s:self._s + self.n]

    @property
    def bad(self) -> np.ndarray:
        return self._bad[self._s:self._s + self.n]

    def push(self, t: np.ndarray, x: np.ndarray, bad: np.ndarray) -> None:
        k = t.shape[0]
        if k == 0:
            return
        if k >= self.cap:
            t, x, bad = t[-self.cap:], x[-self.cap:], bad[-self.cap:]
            self._t[:self.cap], self._x[:self.cap], self._bad[:self.cap] = t, x, bad
            self._s, self.n = 0, self.cap
        else:
            keep = min(self.n, self.cap - k)
            s = self._s + self.n - keep  # first buffer row still held after this push
            if s + keep + k > self._t.shape[0]:  # no room at the end: move the kept rows
                self._t[:keep] = self._t[s:s + keep]
                self._x[:keep] = self._x[s:s + keep]
                self._bad[:keep] = self._bad[s:s + keep]
                s = 0
            e = s + keep
            self._t[e:e + k], self._x[e:e + k], self._bad[e:e + k] = t, x, bad
            self._s, self.n = s, keep + k
        self.total += k

    def last(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = min(k, self.n)
        s = slice(self._s + self.n - k, self._s + self.n)
        return self._t[s], self._x[s], self._bad[s]

    def rows(self, first: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows by global row number [first, stop) (clipped to what is still held)."""
        base = self.total - self.n
        a, b = max(first - base, 0), max(min(stop - base, self.n), 0)
        a, b = self._s + a, self._s + max(a, b)
        return self._t[a:b], self._x[a:b], self._bad[a:b]

    def between(self, t0: int, t1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows with t0 <= t < t1 (times are increasing)."""
        tt = self._t[self._s:self._s + self.n]
        a, b = np.searchsorted(tt, [t0, t1])
        a, b = self._s + int(a), self._s + int(b)
        return self._t[a:b], self._x[a:b], self._bad[a:b]


def tick_window(ring: Ring, k: int, n: int) -> tuple[int, np.ndarray, str] | None:
    """The 1-s tick of ``n`` rows ending before row ``k``: (host ns of its last row, its
    values, the reason its quality bits give); None when none of its rows is held."""
    t, x, b = ring.rows(k - n, k)
    if t.size == 0:
        return None
    return int(t[-1]), x, reason_of(union_bits(b))


def window_ticks(total_before: int, total_after: int, every: int) -> np.ndarray:
    """Global sample counts (exclusive end of a window) that are multiples of ``every``
    and fall in (total_before, total_after]: windows aligned on the sample count, not on
    block boundaries."""
    first = (total_before // every + 1) * every
    return np.arange(first, total_after + 1, every, dtype=np.int64)
