"""EEG: streaming band-pass and mains notch, per-channel band power and differential
entropy over 1-s windows, artifact flags (blinks, eye movements, saturation, lead-off:
the pipeline reads it from the status word with ``sensors.status.channel_faults``).

Filter: 0.5-Hz high-pass (order 2), 47-Hz low-pass (order 4) and a notch at the mains
frequency (Q 30), one causal cascade with state carried across blocks.

Band power: Hann-windowed periodogram of the mean-removed window, one-sided PSD summed
over lo <= f < hi times df, in uV^2 (a sine of amplitude A in the band gives A^2/2).
Differential entropy: for a band-limited Gaussian signal of variance P,
DE = 0.5 * ln(2*pi*e*P) (nats), the form used in the SEED literature.

Artifacts: frontal channels low-passed at 6 Hz; the vertical EOG proxy is their mean, the
horizontal one the most lateral left-right pair difference (Fp1-Fp2, AF7-AF8 or F7-F8).
A blink is a vertical peak-to-peak above ``blink_uv`` that exceeds the horizontal one; an
eye movement the other way round. Band features of frontal channels in such a window are
invalid with reason "blink" or "eye_move"; the other channels stay valid.

Latency: a window's features are reported when its last sample arrives (0 ms plus the
block wait); the filter's group delay (~10 ms in alpha) is not corrected.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from .base import (
    OK,
    WARMUP,
    Feature,
    OneSecondPieces,
    Ring,
    SosStream,
    butter,
    fill_nonfinite,
    reason_of,
)

BANDS: dict[str, tuple[float, float]] = {
    "delta": (1.0, 4.0), "theta": (4.0, 8.0), "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0), "gamma": (30.0, 47.0),
}
_LATERAL_PAIRS = (("F7", "F8"), ("AF7", "AF8"), ("Fp1", "Fp2"))


def band_powers(x: np.ndarray, fs: float, bands: dict[str, tuple[float, float]] = BANDS
                ) -> np.ndarray:
    """(n, c) window -> (n_bands, c) band power in x's unit squared."""
    n = x.shape[0]
    w = signal.get_window("hann", n)  # periodic Hann, as scipy's periodogram/welch use
    xf = np.fft.rfft((x - x.mean(axis=0)) * w[:, None], axis=0)
    psd = (np.abs(xf) ** 2) / (fs * np.sum(w**2))
    psd[1:-1 if n % 2 == 0 else None] *= 2.0
    f = np.fft.rfftfreq(n, 1.0 / fs)
    df = fs / n
    return np.stack([psd[(f >= lo) & (f < hi)].sum(axis=0) * df for lo, hi in bands.values()])


def differential_entropy(power: np.ndarray) -> np.ndarray:
    """DE (nats) of a Gaussian with variance ``power``; -inf/NaN never pass as valid."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return 0.5 * np.log(2.0 * np.pi * np.e * power)


def _is_frontal(name: str) -> bool:
    u = name.upper()
    return u.startswith(("FP", "AF")) or u in ("F7", "F8", "F3", "F4", "FZ")


class EegFeatures(OneSecondPieces):
    """``update(t_ns, x, bad)`` on (n, c) EEG in uV. Every 1 s: per channel and band
    ``eeg_{ch}_{band}_pow`` (uV^2) and ``eeg_{ch}_{band}_de`` (nat); ``eeg_blink`` and
    ``eeg_eye_move`` (1.0/0.0). ``epoch(t0, t1)`` gives the same for any held span."""

    LATENCY_MS = 0.0

    def __init__(self, fs: float, channels: tuple[str, ...], mains_hz: float = 50.0,
                 frontal: tuple[str, ...] | None = None, blink_uv: float = 70.0,
                 eye_uv: float = 70.0, history_s: float = 30.0, warmup_s: float = 2.0) -> None:
        self.fs, self.channels = fs, tuple(channels)
        c = len(channels)
        sos = [butter(2, 0.5, "highpass", fs), butter(4, 47.0, "lowpass", fs)]
        if mains_hz and mains_hz < fs / 2:
            b, a = signal.iirnotch(mains_hz, 30.0, fs)
            sos.append(signal.tf2sos(b, a))
        self.filt = SosStream(np.vstack(sos))
        frontal = tuple(frontal) if frontal is not None else tuple(
            ch for ch in channels if _is_frontal(ch))
        self.frontal = np.array([channels.index(ch) for ch in frontal], int)
        self.pair = next(((channels.index(a), channels.index(b)) for a, b in _LATERAL_PAIRS
                          if a in channels and b in channels), None)
        self.eog = SosStream(butter(2, 6.0, "lowpass", fs))
        self.blink_uv, self.eye_uv = blink_uv, eye_uv
        self.ring = Ring(int(history_s * fs), c + 2)  # filtered channels, vEOG, hEOG
        self.tick = round(fs)
        self.warm = int(warmup_s * fs)
        self._next_tick = self.tick
        self._last = np.zeros(c)
        self._latest_ns = 0
        self.last_window: dict[str, Feature] = {}

    def _update(self, t_ns: np.ndarray, x: np.ndarray, bad: np.ndarray) -> list[Feature]:
        if x.shape[0] == 0:
            return []
        x, self._last = fill_nonfinite(x.astype(float), self._last)
        y = self.filt.update(x)
        e = self.eog.update(y)
        v = e[:, self.frontal].mean(axis=1) if self.frontal.size else np.zeros(len(e))
        h = e[:, self.pair[0]] - e[:, self.pair[1]] if self.pair else np.zeros(len(e))
        bad_all = np.column_stack((bad, np.bitwise_or.reduce(bad, axis=1), np.zeros(len(e),
                                                                                     np.uint8)))
        self.ring.push(t_ns, np.column_stack((y, v, h)), bad_all)
        self._latest_ns = int(t_ns[-1])
        out: list[Feature] = []
        while self._next_tick <= self.ring.total:
            k = self._next_tick
            t, xx, bb = self.ring.rows(k - self.tick, k)
            feats = self._window(t, xx, bb, warm=k <= self.warm)
            self.last_window = {f.name: f for f in feats}
            out += feats
            self._next_tick += self.tick
        return out

    def epoch(self, t0_ns: int, t1_ns: int) -> list[Feature]:
        """Features over held samples t0 <= t < t1 (e.g. 1 s around an apex)."""
        t, xx, bb = self.ring.between(t0_ns, t1_ns)
        expect = (t1_ns - t0_ns) / 1e9 * self.fs
        if t.size < 0.9 * expect or t.size < 16:
            return self._all_invalid(t1_ns, "pending" if t1_ns > self._latest_ns else "no_data")
        return self._window(t, xx, bb, warm=False)

    def _all_invalid(self, t_ns: int, reason: str) -> list[Feature]:
        out = [Feature.make(n, np.nan, u, t_ns, self._latest_ns, reason)
               for n, u in self.names_units()]
        return out

    def names_units(self) -> list[tuple[str, str]]:
        out = [(f"eeg_{ch}_{b}_{k}", "uV^2" if k == "pow" else "nat")
               for ch in self.channels for b in BANDS for k in ("pow", "de")]
        return [*out, ("eeg_blink", "flag"), ("eeg_eye_move", "flag")]

    def _window(self, t: np.ndarray, xx: np.ndarray, bb: np.ndarray, warm: bool
                ) -> list[Feature]:
        c = len(self.channels)
        now, t_end = self._latest_ns, int(t[-1])
        p = band_powers(xx[:, :c], self.fs)
        de = differential_entropy(p)
        chan_bits = np.bitwise_or.reduce(bb[:, :c], axis=0)
        vp, hp = np.ptp(xx[:, c]), np.ptp(xx[:, c + 1])
        blink = vp > self.blink_uv and vp >= hp
        eye = hp > self.eye_uv and hp > vp
        front_bits = int(np.bitwise_or.reduce(chan_bits[self.frontal])) if self.frontal.size \
            else 0
        art_reason = WARMUP if warm else reason_of(front_bits)
        if not self.frontal.size:
            art_reason = "no_frontal_channels"
        out: list[Feature] = []
        for j, ch in enumerate(self.channels):
            r = WARMUP if warm else reason_of(int(chan_bits[j]))
            if r == OK and j in self.frontal and (blink or eye):
                r = "blink" if blink else "eye_move"
            for i, b in enumerate(BANDS):
                out.append(Feature.make(f"eeg_{ch}_{b}_pow", p[i, j], "uV^2", t_end, now, r))
                out.append(Feature.make(f"eeg_{ch}_{b}_de", de[i, j], "nat", t_end, now, r))
        out.append(Feature.make("eeg_blink", float(blink), "flag", t_end, now, art_reason))
        out.append(Feature.make("eeg_eye_move", float(eye), "flag", t_end, now, art_reason))
        return out
