"""Respiration (belt): breath detection, rate, amplitude, inspiratory pause.

The belt signal (fed at ~25 Hz) is band-passed 0.05-1 Hz. A breath phase flips with
hysteresis at +-25% of the running amplitude (sqrt(2)*RMS through a 0.05-Hz low-pass),
so noise around zero makes no extra breaths. Breath k: its inspiration onset is the
minimum in the negative phase before the up-crossing, its end of inspiration the maximum
in the positive phase, both taken on the belt low-passed at 1 Hz (no high-pass, so the
shape is kept); it is complete at the next down-crossing. Times are moved back by that
low-pass's group delay.

Inspiratory pause: around end of inspiration, the time during which airflow (the
derivative of the belt signal) stays below 10% of that breath's peak inspiratory flow.
A 4-s sine breath scores about 0.13 s; a held breath adds its hold.

Latency: a breath is reported at its down-crossing, about a quarter cycle (1-1.5 s) after
its end of inspiration; tick features are reported at the tick (they use completed breaths).
"""

from __future__ import annotations

import numpy as np

from .base import (
    OK,
    WARMUP,
    Feature,
    OneSecondPieces,
    Ring,
    SosStream,
    butter,
    dc_group_delay_s,
    fill_nonfinite,
    tick_window,
    union_bits,
)


class RspFeatures(OneSecondPieces):
    """``update(t_ns, x, bad)``. Per breath: ``rsp_breath_rate_bpm``, ``rsp_breath_amp``
    (channel unit), ``rsp_insp_s``, ``rsp_insp_pause_s`` (t_ns: inspiration onset). Every
    1 s: ``rsp_rate_bpm`` and ``rsp_amp`` (mean over breaths of the last ``window_s``),
    ``rsp_insp_pause_s`` (last breath)."""

    LATENCY_MS = 1500.0

    def __init__(self, fs: float, unit: str = "au", window_s: float = 20.0,
                 warmup_s: float = 10.0) -> None:
        self.fs, self.unit = fs, unit
        lp = butter(2, 1.0, "lowpass", fs)
        self.bp = SosStream(np.vstack((butter(2, 0.05, "highpass", fs), lp)))
        self.lp = SosStream(lp)
        self.env = SosStream(butter(1, 0.05, "lowpass", fs))
        self.delay_ns = int(dc_group_delay_s(lp, fs) * 1e9)
        self.ring = Ring(int(60 * fs), 3)  # columns: band-passed, low-passed, flow
        self.window_ns = int(window_s * 1e9)
        self.warm = int(warmup_s * fs)
        self.tick = round(fs)
        self._next_tick = self.tick
        self._state = 0  # hysteresis phase: +1 inspiration side, -1 expiration, 0 unknown
        self._last = np.zeros(1)
        self._s_last: float | None = None
        self._ups: list[int] = []  # up-crossing rows (global)
        self._downs: list[int] = []
        self._trough: int | None = None  # onset row of the breath in progress
        self._prev_onset: int | None = None
        self.breaths: list[tuple[int, float, float, float, float]] = []  # t, rate, amp, insp, pause
        self._latest_ns = 0

    @property
    def latest_ns(self) -> int:
        """Host ns of the newest sample this step has seen (its stream's "now")."""
        return self._latest_ns

    def _update(self, t_ns: np.ndarray, x: np.ndarray, bad: np.ndarray) -> list[Feature]:
        if x.shape[0] == 0:
            return []
        x, self._last = fill_nonfinite(x.astype(float), self._last)
        start = self.ring.total
        s = self.bp.update(x)
        y = self.lp.update(x)
        # Flow from the low-passed belt (no high-pass: a held breath stays flat).
        flow = np.diff(np.concatenate(([y[0] if self._s_last is None else self._s_last], y)))
        flow *= self.fs
        self._s_last = float(y[-1])
        h = 0.25 * np.sqrt(2.0 * np.maximum(self.env.update(s * s), 0.0))
        self.ring.push(t_ns, np.column_stack((s, y, flow)), bad[:, None])
        self._latest_ns = int(t_ns[-1])
        # Hysteresis phase per sample, vectorised: last decided side wins.
        side = np.where(s > h, 1, np.where(s < -h, -1, 0))
        pos = np.arange(s.size)
        last = np.maximum.accumulate(np.where(side != 0, pos, -1))
        st = np.where(last >= 0, side[np.maximum(last, 0)], self._state)
        prev = np.concatenate(([self._state], st[:-1]))
        flips = np.flatnonzero((st != prev) & (prev != 0))
        self._state = int(st[-1])
        out: list[Feature] = []
        for f in flips:
            row = start + int(f)
            out += self._ticks_until(row)  # ticks see only breaths decided before them
            out += self._up(row) if st[f] == 1 else self._down(row)
        return out + self._ticks_until(self.ring.total)

    def _ticks_until(self, row: int) -> list[Feature]:
        out: list[Feature] = []
        while self._next_tick <= row:
            out += self._tick(self._next_tick)
            self._next_tick += self.tick
        return out

    def _up(self, row: int) -> list[Feature]:
        # Inspiration onset: the minimum since the last down-crossing.
        a = self._downs[-1] if self._downs else row - int(6 * self.fs)
        _, y, _ = self.ring.rows(a, row + 1)
        base = max(a, self.ring.total - self.ring.n)
        onset = base + int(np.argmin(y[:, 1])) if y.size else row
        self._ups.append(row)
        self._ups = self._ups[-4:]
        self._prev_onset, self._trough = self._trough, onset
        return []

    def _down(self, row: int) -> list[Feature]:
        self._downs.append(row)
        self._downs = self._downs[-4:]
        if self._trough is None or not self._ups:
            return []
        onset, _up = self._trough, self._ups[-1]
        tt, y, b = self.ring.rows(onset, row + 1)
        if tt.size < 3 or union_bits(b) or onset < self.warm:
            return []
        s, flow = y[:, 1], y[:, 2]
        ip = int(np.argmax(s))  # end of inspiration, relative to onset
        amp = float(s[ip] - s[0])
        # Inspiratory pause: the low-flow run around the peak.
        fmax = float(flow[: ip + 1].max()) if ip > 0 else 0.0
        low = np.abs(flow) < 0.1 * fmax
        lo = ip - (np.flatnonzero(~low[: ip + 1][::-1])[:1].tolist() or [ip + 1])[0] + 1
        hi_idx = np.flatnonzero(~low[ip:])
        hi = ip + (int(hi_idx[0]) if hi_idx.size else low.size - ip)
        pause = max(hi - lo, 0) / self.fs
        t_on = int(tt[0]) - self.delay_ns
        rate = np.nan
        if self._prev_onset is not None:
            tp, _, bp = self.ring.rows(self._prev_onset, onset)
            if tp.size and not union_bits(bp):
                period = (int(tt[0]) - int(tp[0])) / 1e9
                rate = 60.0 / period if 1.0 <= period <= 30.0 else np.nan
        insp = ip / self.fs
        self.breaths.append((t_on, rate, amp, insp, pause))
        self.breaths = self.breaths[-64:]
        now = self._latest_ns
        r = OK if np.isfinite(rate) else WARMUP
        return [
            Feature.make("rsp_breath_rate_bpm", rate, "1/min", t_on, now, r),
            Feature.make("rsp_breath_amp", amp, self.unit, t_on, now),
            Feature.make("rsp_insp_s", insp, "s", t_on, now),
            Feature.make("rsp_insp_pause_s", pause, "s", t_on, now),
        ]

    def _tick(self, k: int) -> list[Feature]:
        window = tick_window(self.ring, k, self.tick)
        if window is None:
            return []
        t_end, _, reason = window
        if reason == OK and k <= self.warm:
            reason = WARMUP
        recent = [br for br in self.breaths if br[0] >= t_end - self.window_ns]
        rates = np.array([br[1] for br in recent], float)
        rates = rates[np.isfinite(rates)]
        if reason == OK and rates.size < 1:
            reason = "no_breaths"
        now = self._latest_ns
        amp = float(np.mean([br[2] for br in recent])) if recent else np.nan
        pause = recent[-1][4] if recent else np.nan
        return [
            Feature.make("rsp_rate_bpm", float(np.mean(rates)) if rates.size else np.nan,
                         "1/min", t_end, now, reason),
            Feature.make("rsp_amp", amp, self.unit, t_end, now, reason),
            Feature.make("rsp_pause_s", pause, "s", t_end, now, reason),
        ]
