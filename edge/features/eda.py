"""EDA: tonic level (SCL), phasic part, skin-conductance responses (SCRs).

Fed at ~25 Hz (the pipeline averages 40 samples at 1 kHz). Tonic = 0.05-Hz low-pass,
phasic = signal - tonic (as NeuroKit2's "highpass" split, made causal). SCRs are scored
trough-to-peak on a 1-Hz low-passed copy: an onset is where its slope rises above
``slope_min_us_s`` (so a slow drift or an earlier response's tail starts nothing), the peak
where the slope turns <= 0; a response counts when it rises at least ``amp_min_us``. Peak
times are moved back by the low-pass group delay (onsets are kinks: they show at once).

Latency: an SCR is reported at its peak (rise time 0.5-5 s after the onset) plus ~0.3 s of
filter delay; ``scr_after(t, (1, 5))`` is final once the signal has passed t + 5 s and no
response that started in the window is still rising.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import (
    NO_DATA,
    OK,
    PENDING,
    WARMUP,
    Feature,
    OneSecondPieces,
    Ring,
    SosStream,
    butter,
    dc_group_delay_s,
    fill_nonfinite,
    reason_of,
    tick_window,
    union_bits,
)


@dataclass(frozen=True)
class Scr:
    onset_ns: int
    peak_ns: int
    amp_us: float
    clean: bool  # no bad sample between onset and peak


class EdaFeatures(OneSecondPieces):
    """``update(t_ns, x, bad)`` on EDA in uS. Per SCR: ``eda_scr_amp_us`` (t_ns: onset)
    and ``eda_scr_rise_s``. Every 1 s: ``eda_scl_us`` (tonic), ``eda_phasic_us``,
    ``eda_us`` (signal level)."""

    LATENCY_MS = 3000.0  # typical: rise time of the response plus filter delay

    def __init__(self, fs: float, amp_min_us: float = 0.02, slope_min_us_s: float = 0.01,
                 warmup_s: float = 5.0, history_s: float = 120.0) -> None:
        self.fs = fs
        self.amp_min = amp_min_us
        self.slope_min = slope_min_us_s
        self.tonic = SosStream(butter(2, 0.05, "lowpass", fs))
        sos = butter(2, 1.0, "lowpass", fs)
        self.smooth = SosStream(sos)
        self.delay_ns = int(dc_group_delay_s(sos, fs) * 1e9)
        self.ring = Ring(int(history_s * fs), 2)  # columns: signal, smoothed
        self.warm = int(warmup_s * fs)
        self.tick = round(fs)
        self._next_tick = self.tick
        self._last = np.zeros(1)
        self._y_last: float | None = None
        self._rising = False
        self._onset_row = 0
        self.scrs: list[Scr] = []
        self._hist_ns = int(history_s * 1e9)
        self._latest_ns = 0
        self._first_ns: int | None = None

    def _update(self, t_ns: np.ndarray, x: np.ndarray, bad: np.ndarray) -> list[Feature]:
        if x.shape[0] == 0:
            return []
        if self._first_ns is None:
            self._first_ns = int(t_ns[0])
        x, self._last = fill_nonfinite(x.astype(float), self._last)
        start = self.ring.total
        tonic = self.tonic.update(x)
        y = self.smooth.update(x)
        self.ring.push(t_ns, np.column_stack((x, y)), bad[:, None])
        self._latest_ns = int(t_ns[-1])
        # Rising with hysteresis: starts where the slope exceeds slope_min (a slow drift or
        # the tail of an earlier response does not start one), ends where it turns <= 0.
        prev = y[0] if self._y_last is None else self._y_last
        d = np.diff(np.concatenate(([prev], y))) * self.fs
        self._y_last = float(y[-1])
        side = np.where(d > self.slope_min, 1, np.where(d <= 0, -1, 0))
        pos = np.arange(d.size)
        last = np.maximum.accumulate(np.where(side != 0, pos, -1))
        rising = np.where(last >= 0, side[np.maximum(last, 0)] > 0, self._rising)
        was = np.concatenate(([self._rising], rising[:-1]))
        out: list[Feature] = []
        for i in np.flatnonzero(rising != was):
            row = start + int(i)
            if rising[i]:
                self._onset_row = row - 1
            else:
                out += self._peak(self._onset_row, row - 1)
        self._rising = bool(rising[-1])
        while self._next_tick <= self.ring.total:
            out += self._tick(self._next_tick, tonic, start)
            self._next_tick += self.tick
        return out

    def _peak(self, onset: int, peak: int) -> list[Feature]:
        t, y, b = self.ring.rows(onset, peak + 1)
        if t.size < 2 or onset < self.warm:
            return []
        amp = float(y[-1, 1] - y[0, 1])
        if amp < self.amp_min:
            return []
        clean = union_bits(b) == 0
        # A peak (a smooth maximum) comes out of the low-pass one group delay late; an onset
        # (a kink) shows in the slope at once, so it is not moved.
        scr = Scr(int(t[0]), int(t[-1]) - self.delay_ns, amp, clean)
        self.scrs.append(scr)
        cutoff = self._latest_ns - self._hist_ns
        self.scrs = [s for s in self.scrs if s.onset_ns >= cutoff]
        reason = OK if clean else reason_of(union_bits(b))
        now = self._latest_ns
        return [
            Feature.make("eda_scr_amp_us", amp, "uS", scr.onset_ns, now, reason),
            Feature.make("eda_scr_rise_s", (scr.peak_ns - scr.onset_ns) / 1e9, "s",
                         scr.onset_ns, now, reason),
        ]

    def _tick(self, k: int, tonic: np.ndarray, start: int) -> list[Feature]:
        window = tick_window(self.ring, k, self.tick)
        if window is None:
            return []
        t_end, x, reason = window
        if reason == OK and k <= self.warm:
            reason = WARMUP
        i = k - 1 - start  # tonic value of the tick row, if in this block
        scl = float(tonic[i]) if 0 <= i < tonic.size else np.nan
        now = self._latest_ns
        lvl = float(x[-1, 0])
        return [
            Feature.make("eda_us", lvl, "uS", t_end, now, reason),
            Feature.make("eda_scl_us", scl, "uS", t_end, now, reason),
            Feature.make("eda_phasic_us", lvl - scl, "uS", t_end, now, reason),
        ]

    def scr_after(self, event_t_ns: int, window_s: tuple[float, float] = (1.0, 5.0)
                  ) -> dict[str, Feature]:
        """The first SCR whose onset falls ``window_s`` after the event.

        ``eda_scr_latency_s`` (onset - event), ``eda_scr_amp_us`` (0.0 and valid when the
        window is clean and holds no response), ``eda_scr_rise_s``. Invalid with
        ``pending`` until the window has closed and any response in it has peaked; with
        the bad-data reason when the window holds bad samples."""
        t0 = int(event_t_ns + window_s[0] * 1e9)
        t1 = int(event_t_ns + window_s[1] * 1e9)
        now = self._latest_ns
        names = (("eda_scr_latency_s", "s"), ("eda_scr_amp_us", "uS"), ("eda_scr_rise_s", "s"))

        def all_(vals: tuple[float, float, float], reason: str, t: int) -> dict[str, Feature]:
            return {n: Feature.make(n, v, u, t, now, reason) for (n, u), v in zip(names, vals,
                                                                                  strict=True)}

        nan3 = (np.nan, np.nan, np.nan)
        if self._first_ns is None or t0 < self._first_ns + self.warm / self.fs * 1e9:
            return all_(nan3, NO_DATA, event_t_ns)  # the window is not (all) in our data
        hit = [s for s in self.scrs if t0 <= s.onset_ns < t1]
        if hit:
            s = hit[0]
            if not s.clean:
                return all_(nan3, "gap", s.onset_ns)
            return all_(((s.onset_ns - event_t_ns) / 1e9, s.amp_us,
                         (s.peak_ns - s.onset_ns) / 1e9), OK, s.onset_ns)
        rising_in = self._rising and t0 <= self._onset_time() < t1
        if now - self.delay_ns < t1 or rising_in:
            return all_(nan3, PENDING, event_t_ns)
        _, _, b = self.ring.between(t0 + self.delay_ns, t1 + self.delay_ns)
        reason = reason_of(union_bits(b)) if b.size else NO_DATA
        if reason != OK:
            return all_(nan3, reason, event_t_ns)
        out = all_(nan3, "no_scr", event_t_ns)
        out["eda_scr_amp_us"] = Feature.make("eda_scr_amp_us", 0.0, "uS", event_t_ns, now)
        return out

    def _onset_time(self) -> int:
        t, _, _ = self.ring.rows(self._onset_row, self._onset_row + 1)
        return int(t[0]) if t.size else -1

