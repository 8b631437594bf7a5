"""Streaming peak detection shared by ECG and PPG: candidates are local maxima of a
detection signal within +-``w`` samples (so a candidate is decided ``w`` samples after
it happened, whatever the block size), then Pan-Tompkins-style adaptive thresholds
(running signal and noise levels, search-back for a missed beat) pick the beats.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import maximum_filter1d

from .base import Ring


def local_max_candidates(ring: Ring, col: int, done: int, w: int) -> tuple[np.ndarray, int]:
    """Global row numbers in [done, total - w) that are the maximum of their +-w
    neighbourhood (first sample of a plateau), and the new ``done``."""
    stop = ring.total - w
    if stop <= done:
        return np.zeros(0, np.int64), done
    base = ring.total - ring.n
    a = max(done - w, base)
    _, x, _ = ring.rows(a, ring.total)
    y = x[:, col]
    mf = maximum_filter1d(y, 2 * w + 1, mode="nearest")
    prev = np.concatenate(([np.inf], y[:-1]))
    is_max = (y == mf) & (y > prev)
    pos = np.flatnonzero(is_max) + a
    pos = pos[(pos >= done) & (pos < stop)]
    return pos.astype(np.int64), stop


class AdaptivePeaks:
    """Pan-Tompkins decision rule on candidate values (one Python step per candidate).

    threshold = noise + ``frac`` * (signal - noise); a candidate above it and at least
    ``refractory`` samples after the last beat is a beat and moves the signal level, any
    other moves the noise level. When the interval since the last beat exceeds 1.66x the
    mean interval, the largest candidate in between above half the threshold is taken
    (search-back). Levels start from the first ``warmup`` samples of candidates.
    """

    def __init__(self, refractory: int, frac: float = 0.25) -> None:
        self.refractory = refractory
        self.frac = frac
        self.spk: float | None = None
        self.npk = 0.0
        self.last: int | None = None  # global row of the last beat
        self.rr_mean: float | None = None  # mean interval in rows (over ~8 beats)
        self._noise: list[tuple[int, float]] = []  # candidates since the last beat

    def start(self, values: np.ndarray) -> None:
        """Initial levels from warm-up candidate values."""
        v = values[np.isfinite(values)]
        if v.size:
            self.spk = 0.6 * float(np.max(v))
            self.npk = 0.5 * float(np.median(v))

    def reset(self) -> None:
        """After bad data: forget the last beat (no interval spans the break)."""
        self.last = None
        self._noise.clear()

    @property
    def threshold(self) -> float:
        assert self.spk is not None
        return self.npk + self.frac * (self.spk - self.npk)

    def step(self, pos: int, value: float) -> list[int]:
        """Decide one candidate; returns the beats it produced (0, 1 or 2 with search-back)."""
        if self.spk is None:
            return []
        thr = self.threshold
        beats: list[int] = []
        if value > thr and (self.last is None or pos - self.last >= self.refractory):
            if self.last is not None and self.rr_mean is not None and \
                    pos - self.last > 1.66 * self.rr_mean:
                # Search-back: a beat the threshold missed, between the last and this one.
                cands = [(v, p) for p, v in self._noise
                         if v > 0.5 * thr and p - self.last >= self.refractory
                         and pos - p >= self.refractory]
                if cands:
                    v, p = max(cands)
                    self.spk = 0.25 * v + 0.75 * self.spk
                    beats.append(p)
                    self._interval(p)
            self.spk = 0.125 * value + 0.875 * self.spk
            beats.append(pos)
            self._interval(pos)
        else:
            self.npk = 0.125 * value + 0.875 * self.npk
            self._noise.append((pos, value))
            if len(self._noise) > 64:  # bounded: a long pause keeps the newest
                del self._noise[0]
        return beats

    def _interval(self, pos: int) -> None:
        if self.last is not None:
            rr = pos - self.last
            self.rr_mean = rr if self.rr_mean is None else 0.875 * self.rr_mean + 0.125 * rr
        self.last = pos
        self._noise.clear()


class BeatSeries:
    """Bounded history of beat times; an interval is valid only between two beats with
    clean data between them and a physiological length (no interval spans a break)."""

    def __init__(self, capacity: int = 512, rr_min_s: float = 0.25, rr_max_s: float = 2.5
                 ) -> None:
        self.cap = capacity
        self.t = np.zeros(0, np.int64)  # beat times
        self.rr = np.zeros(0)  # interval ending at each beat, s (NaN: none or invalid)
        self.suspect = np.zeros(0, bool)  # its interval failed a window's quality rules
        self.rr_min_s, self.rr_max_s = rr_min_s, rr_max_s
        self._connected = False

    def break_(self) -> None:
        """Bad data: the next beat starts a new run."""
        self._connected = False

    def add(self, t_ns: int) -> float:
        """Append a beat; returns its interval in s (NaN if none or invalid)."""
        rr = float("nan")
        if self._connected and self.t.size:
            rr = (t_ns - int(self.t[-1])) / 1e9
            if not (self.rr_min_s <= rr <= self.rr_max_s):
                rr = float("nan")
        self.t = np.append(self.t, np.int64(t_ns))[-self.cap:]
        self.rr = np.append(self.rr, rr)[-self.cap:]
        self.suspect = np.append(self.suspect, False)[-self.cap:]
        self._connected = True
        return rr

    def distrust(self, t0: int, t1: int) -> None:
        """The intervals ending at beats with t0 <= t < t1 failed a quality rule: the
        windows of :meth:`trusted` (HRV, rate slope) leave them out for as long as they look
        back; :meth:`window` still gives them, for the rules that judge each new window."""
        a, b = np.searchsorted(self.t, [t0, t1])
        self.suspect[a:b] = True

    def trusted(self, t0: int, t1: int) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`window`, with distrusted intervals NaN (a break in the run)."""
        a, b = np.searchsorted(self.t, [t0, t1])
        return self.t[a:b], np.where(self.suspect[a:b], np.nan, self.rr[a:b])

    def window(self, t0: int, t1: int) -> tuple[np.ndarray, np.ndarray]:
        """Beat times and intervals (s, NaN where invalid) for beats with t0 <= t < t1."""
        a, b = np.searchsorted(self.t, [t0, t1])
        return self.t[a:b], self.rr[a:b]


def hrv_time(rr_s: np.ndarray) -> tuple[float, float]:
    """RMSSD and SDNN (ms) of a run of intervals; NaN marks a break, and a successive
    difference is taken only between two adjacent valid intervals."""
    ok = np.isfinite(rr_s)
    sdnn = float(np.std(rr_s[ok] * 1e3, ddof=1)) if ok.sum() >= 2 else float("nan")
    d = np.diff(rr_s * 1e3)
    d = d[np.isfinite(d)]
    rmssd = float(np.sqrt(np.mean(d**2))) if d.size else float("nan")
    return rmssd, sdnn


def rate_slope(t_ns: np.ndarray, rate: np.ndarray) -> float:
    """Least-squares slope (per s) of a rate against time; NaN with fewer than 3 points."""
    ok = np.isfinite(rate)
    if ok.sum() < 3:
        return float("nan")
    ts = (t_ns[ok] - t_ns[ok][0]) / 1e9
    if np.ptp(ts) <= 0:
        return float("nan")
    return float(np.polyfit(ts, rate[ok], 1)[0])
