"""ECG: streaming R-peak detection (Pan-Tompkins-like), heart rate, HRV, HR slope.

Detection signal: 5-15 Hz band-pass, derivative, square, 150-ms moving integration; a
candidate is a maximum of that within +-200 ms, decided by adaptive signal/noise levels
with search-back. The R peak is then placed at the maximum of the 0.5-Hz high-passed ECG
in the 250 ms before the candidate (the integrator peaks after the R wave), or at its
minimum on a lead whose QRS points down (learnt from the beats so far).

Quality: a 1-s tick is invalid with reason ``low_sqi`` when the beats of its rate window do
not look like one beat repeated (template correlation, :meth:`EcgFeatures._window_quality`):
electrode motion and muscle noise on a worn rig, which no quality bit of the hub flags.

Latency: an R peak is reported about 0.35-0.45 s after it happened (integrator and
band-pass delay ~0.1-0.2 s, plus the 200-ms neighbourhood). Tick features (every 1 s of
signal) are reported once every beat up to the tick is decided: about 0.6 s after the tick.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from .base import OK, Feature, SosStream, butter
from .beats import LOW_SQI, BeatStep, correlations
from .peaks import hrv_time, rate_slope

# Orphanidou et al.'s ECG thresholds (their ratio rule is BeatStep._intervals_agree), and
# one for a missed beat (twice the interval).
MIN_TEMPLATE_CORR = 0.66
MAX_RR_S = 3.0
MISSED_BEAT_RATIO = 1.7


class EcgFeatures(BeatStep):
    """``update(t_ns, x, bad)`` on one ECG channel. Features: ``ecg_peak`` (R amplitude,
    channel unit, per beat), ``ecg_rr_ms``, ``ecg_hr_inst_bpm`` (per beat); every 1 s:
    ``ecg_hr_bpm`` (mean over 5 s), ``ecg_rmssd_ms``, ``ecg_sdnn_ms`` (over
    ``hrv_window_s``), ``ecg_hr_slope_bpm_s`` (over ``slope_window_s``)."""

    prefix = "ecg"
    LATENCY_MS = 450.0

    def __init__(self, fs: float, unit: str = "mV", hrv_window_s: float = 30.0,
                 slope_window_s: float = 10.0, hr_window_s: float = 5.0) -> None:
        super().__init__(fs, unit, neighbourhood_s=0.2, refractory_s=0.2, pre_s=0.3,
                         lag_s=0.35, hr_window_s=hr_window_s)
        self.bp = SosStream(butter(2, (5.0, 15.0), "bandpass", fs))
        self.hp = SosStream(butter(2, 0.5, "highpass", fs))
        n = max(round(0.15 * fs), 1)
        self._mwi_b = np.full(n, 1.0 / n)
        self._mwi_zi = np.zeros(n - 1)
        self._d_last = np.zeros(2)
        self.search = round(0.25 * fs)
        self._polarity = 0.0  # running mean of (max + min) around beats: > 0 QRS points up
        self.hrv_window_ns = int(hrv_window_s * 1e9)
        self.slope_window_ns = int(slope_window_s * 1e9)

    def _columns(self, x: np.ndarray) -> np.ndarray:
        bp = self.bp.update(x)
        # Derivative over 2 samples (a 1-sample lag kept across blocks), then energy.
        z = np.concatenate((self._d_last, bp))
        self._d_last = z[-2:]
        e = (z[2:] - z[:-2]) ** 2 * (self.fs / 2.0) ** 2
        mwi, self._mwi_zi = signal.lfilter(self._mwi_b, 1.0, e, zi=self._mwi_zi)
        return np.column_stack((self.hp.update(x), mwi))

    def _value(self, pos: int) -> float:
        _, x, _ = self.ring.rows(pos, pos + 1)
        return float(x[0, 1])

    def _refine(self, pos: int) -> tuple[int, float] | None:
        a = pos - self.search
        _, x, _ = self.ring.rows(a, pos + 1)
        if x.shape[0] == 0:
            return None
        base = max(a, self.ring.total - self.ring.n)
        hi, lo = float(x[:, 0].max()), float(x[:, 0].min())
        # QRS polarity learnt over beats: leads whose QRS points down (QS complexes, aVR,
        # some chest leads) place the beat at the deepest point, not on a T wave.
        self._polarity = 0.9 * self._polarity + 0.1 * (hi + lo)
        i = int(np.argmax(x[:, 0])) if self._polarity >= 0 else int(np.argmin(x[:, 0]))
        return base + i, float(x[i, 0])

    def _window_quality(self, bt: np.ndarray, rr: np.ndarray) -> str:
        """Orphanidou et al. 2015 (IEEE JBHI 19:832), their rules for the ECG: no interval
        over 3 s, the longest within 2.2 times the shortest, and beats that correlate with
        their template by at least 0.66 (here the median beat and the median correlation, so
        one odd beat does not fail a window); plus intervals covering half the window, and
        none over 1.7 times the window's median (a beat the detector missed next to noise).
        Electrode motion and muscle noise make "beats" that fail one of these; a window of
        frequent ectopic beats can fail the ratio rule too (its rate is no sinus rate)."""
        ok = rr[np.isfinite(rr)]
        if not self._intervals_agree(ok) or (ok.size and (
                ok.max() > MAX_RR_S or ok.max() > MISSED_BEAT_RATIO * np.median(ok))):
            return LOW_SQI
        m = self._beat_shapes(bt, rr, 0)
        if m is None:
            return OK  # too few beats to judge: the NO_BEATS rule decides
        corr = correlations(m, np.median(m, axis=0))
        good = corr[np.isfinite(corr)]
        return OK if good.size and float(np.median(good)) >= MIN_TEMPLATE_CORR else LOW_SQI

    def _tick_features(self, t_ns: int, reason: str) -> list[Feature]:
        now = self._latest_ns
        _, rr = self.beats.trusted(t_ns - self.hrv_window_ns, t_ns + 1)
        ok = int(np.isfinite(rr).sum())
        rmssd, sdnn = hrv_time(rr)
        # Need most of the window covered by clean intervals, else HRV is not comparable.
        need = max(5, int(self.hrv_window_ns / 1e9 / 3))
        r_hrv = reason if reason != OK else ("no_beats" if ok < need else OK)
        bt, rr_s = self.beats.trusted(t_ns - self.slope_window_ns, t_ns + 1)
        slope = rate_slope(bt, 60.0 / rr_s)
        r_slope = reason if reason != OK else ("no_beats" if not np.isfinite(slope) else OK)
        return [
            Feature.make("ecg_rmssd_ms", rmssd, "ms", t_ns, now, r_hrv),
            Feature.make("ecg_sdnn_ms", sdnn, "ms", t_ns, now, r_hrv),
            Feature.make("ecg_hr_slope_bpm_s", slope, "bpm/s", t_ns, now, r_slope),
        ]
