"""Skin temperature: level (mean of the last 1 s) and slope (least squares over the last
``slope_window_s``). Fed at ~10 Hz. Latency: the level refers to the end of its 1-s
window and is reported then (0 ms plus the block wait); the slope likewise.
"""

from __future__ import annotations

import numpy as np

from .base import (
    OK,
    WARMUP,
    Feature,
    OneSecondPieces,
    Ring,
    fill_nonfinite,
    reason_of,
    tick_window,
    union_bits,
)


class SktFeatures(OneSecondPieces):
    """``update(t_ns, x, bad)`` in degC. Every 1 s: ``skt_c``, ``skt_slope_c_per_min``."""

    LATENCY_MS = 0.0

    def __init__(self, fs: float, slope_window_s: float = 10.0) -> None:
        self.fs = fs
        self.slope_n = round(slope_window_s * fs)
        self.ring = Ring(max(self.slope_n, int(60 * fs)) + int(2 * fs), 1)  # 60 s: event windows
        self.tick = round(fs)
        self._next_tick = self.tick
        self._last = np.zeros(1)
        self._latest_ns = 0

    @property
    def latest_ns(self) -> int:
        """Host ns of the newest sample this step has seen (its stream's "now")."""
        return self._latest_ns

    def _update(self, t_ns: np.ndarray, x: np.ndarray, bad: np.ndarray) -> list[Feature]:
        if x.shape[0] == 0:
            return []
        x, self._last = fill_nonfinite(x.astype(float), self._last)
        self.ring.push(t_ns, x[:, None], bad[:, None])
        self._latest_ns = int(t_ns[-1])
        out: list[Feature] = []
        while self._next_tick <= self.ring.total:
            out += self._tick(self._next_tick)
            self._next_tick += self.tick
        return out

    def _tick(self, k: int) -> list[Feature]:
        window = tick_window(self.ring, k, self.tick)
        if window is None:
            return []
        t_end, x, reason = window
        now = self._latest_ns
        level = Feature.make("skt_c", float(x.mean()), "degC", t_end, now, reason)
        ts, xs, bs = self.ring.rows(k - self.slope_n, k)
        r2 = reason_of(union_bits(bs))
        if r2 == OK and k < self.slope_n:
            r2 = WARMUP
        tt = (ts - ts[0]) / 1e9
        slope = float(np.polyfit(tt, xs[:, 0], 1)[0]) * 60.0 if np.ptp(tt) > 0 else np.nan
        return [level, Feature.make("skt_slope_c_per_min", slope, "degC/min", t_end, now, r2)]
