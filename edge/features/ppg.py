"""PPG: streaming systolic-peak (beat) detection, heart rate, pulse amplitude.

Detection signal: 0.5-8 Hz band-pass; a candidate is a maximum within +-250 ms and is
scored by its rise from the preceding 400-ms minimum (so a dicrotic wave, which rises
little, is rejected by the adaptive threshold). The beat is then placed at the maximum of
the unfiltered pulse within +-100 ms of the candidate moved back by the band-pass group
delay at 1.2 Hz (a causal filter delays the wave).

Latency: a beat is reported about 0.3-0.45 s after its systolic peak (band-pass delay plus
the 250-ms neighbourhood); tick features about 0.8 s after the tick.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from .base import OK, Feature, SosStream, butter
from .beats import BeatStep


class PpgFeatures(BeatStep):
    """``update(t_ns, x, bad)`` on one PPG channel (any fs >= 50 Hz; the pipeline feeds
    200 Hz). Features: ``ppg_peak`` (pulse amplitude, foot to peak, channel unit, per
    beat), ``ppg_rr_ms``, ``ppg_hr_inst_bpm`` (per beat); every 1 s: ``ppg_hr_bpm`` (mean
    over 5 s) and ``ppg_amp`` (mean pulse amplitude over 5 s)."""

    prefix = "ppg"
    LATENCY_MS = 450.0

    def __init__(self, fs: float, unit: str = "au", hr_window_s: float = 5.0) -> None:
        super().__init__(fs, unit, neighbourhood_s=0.25, refractory_s=0.3, pre_s=0.5,
                         lag_s=0.5, hr_window_s=hr_window_s, frac=0.3)
        sos = butter(2, (0.5, 8.0), "bandpass", fs)
        self.bp = SosStream(sos)
        b, a = signal.sos2tf(sos)
        _, gd = signal.group_delay((b, a), w=[1.2], fs=fs)
        self.delay = round(float(gd[0]))
        self.foot = round(0.4 * fs)
        self.search = round(0.1 * fs)

    def _columns(self, x: np.ndarray) -> np.ndarray:
        return np.column_stack((x, self.bp.update(x)))

    def _value(self, pos: int) -> float:
        _, x, _ = self.ring.rows(pos - self.foot, pos + 1)
        return float(x[-1, 1] - x[:, 1].min())

    def _refine(self, pos: int) -> tuple[int, float]:
        c = pos - self.delay
        a = c - self.search
        _, x, _ = self.ring.rows(a, c + self.search + 1)
        base = max(a, self.ring.total - self.ring.n)
        i = int(np.argmax(x[:, 0]))
        _, xf, _ = self.ring.rows(base + i - self.foot, base + i + 1)
        return base + i, float(x[i, 0] - xf[:, 0].min())

    def _tick_features(self, t_ns: int, reason: str) -> list[Feature]:
        a, b = np.searchsorted(self.beats.t, [t_ns - self.hr_window_ns, t_ns + 1])
        amp = self.amp[a:b]  # aligned with beats.t (appended and trimmed together)
        r = reason if reason != OK else ("no_beats" if amp.size == 0 else OK)
        return [Feature.make("ppg_amp", float(np.mean(amp)) if amp.size else np.nan, self.unit,
                             t_ns, self._latest_ns, r)]
