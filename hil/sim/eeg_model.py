"""Synthetic scalp EEG, generated in consecutive vectorised chunks.

Per channel: 1/f ("pink") background of ``background_rms_uv`` (Kellet's 3-pole pink
filter on white noise, part of it common to all channels as volume conduction gives), an
alpha rhythm near 10 Hz with a slowly wandering envelope that is strongest over occipital
and parietal sites, and eye blinks at the scenario's blink times: a raised-cosine
deflection of ``blink_uv`` on frontopolar sites, falling off towards the back. Filter
states carry over between calls, so chunks join seamlessly and a given seed gives the
same signal whatever the chunk size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.signal import lfilter

from hil.sim.scenario import Scenario

# Kellet's pink-noise filter (-3 dB/octave over the band that matters here).
_PINK_B = np.array([0.049922035, -0.095993537, 0.050612699, -0.004408786])
_PINK_A = np.array([1.0, -2.494956002, 2.017265875, -0.522189400])
_PINK_GAIN = float(np.sqrt(np.sum(lfilter(_PINK_B, _PINK_A, np.r_[1.0, np.zeros(1 << 16)]) ** 2)))

# Region weights by the 10-20 name's leading letters: (alpha, blink).
_REGIONS = (("fp", 0.25, 1.0), ("af", 0.3, 0.7), ("f", 0.3, 0.45), ("c", 0.5, 0.15),
            ("t", 0.4, 0.1), ("po", 0.9, 0.04), ("p", 0.75, 0.05), ("o", 1.0, 0.02))


def region_weights(name: str) -> tuple[float, float]:
    """(alpha weight, blink weight) for a channel name such as "Fp1" or "O2"."""
    low = name.lower()
    for prefix, alpha, blink in _REGIONS:
        if low.startswith(prefix):
            return alpha, blink
    return 0.5, 0.1


class EegModel:
    """Consecutive EEG samples in microvolts, ``(n, n_channels)`` per call to :meth:`next`."""

    def __init__(
        self,
        channels: Sequence[str],
        fs_hz: float,
        seed: int = 0,
        scenario: Scenario | None = None,
        background_rms_uv: float = 12.0,
        alpha_uv: float | None = None,
        alpha_hz: float = 10.0,
        blink_uv: float = 150.0,
    ) -> None:
        self.channels = tuple(channels)
        self.fs_hz = float(fs_hz)
        self._rng = np.random.default_rng(seed)
        n = len(self.channels)
        self._bg = background_rms_uv
        w = np.array([region_weights(c) for c in self.channels])
        self._w_alpha, self._w_blink = w[:, 0], w[:, 1]
        subj_alpha = scenario.subject.eeg_alpha_uv if scenario is not None else 10.0
        self._alpha_uv = subj_alpha if alpha_uv is None else alpha_uv
        self._alpha_hz = alpha_hz + float(self._rng.uniform(-0.5, 0.5))
        self._blinks = scenario.blinks if scenario is not None else ()
        self._blink_uv = blink_uv
        self._zi_pink = np.zeros((3, n + 1))
        # Envelope and phase wander: first-order low-pass (about 0.5 Hz) of white noise.
        self._lp_a = float(np.exp(-2 * np.pi * 0.5 / self.fs_hz))
        self._lp_norm = float(np.sqrt((1 + self._lp_a) / (1 - self._lp_a)))
        self._zi_lp = np.zeros((1, 2))
        self._phase = self._rng.uniform(0, 2 * np.pi, n) * 0.2  # small inter-site lags
        self._k = 0

    def next(self, n: int, t_s: np.ndarray | None = None) -> np.ndarray:
        """The next ``n`` samples; ``t_s`` (scenario seconds of each sample) places blinks."""
        k = self._k + np.arange(n)
        self._k += n
        white = self._rng.standard_normal((n, len(self.channels) + 1))
        pink, self._zi_pink = lfilter(_PINK_B, _PINK_A, white, axis=0, zi=self._zi_pink)
        pink *= self._bg / _PINK_GAIN
        # 30 % of the background variance is common to all sites.
        out = np.sqrt(0.7) * pink[:, :-1] + np.sqrt(0.3) * pink[:, -1:]
        lp, self._zi_lp = lfilter([1 - self._lp_a], [1, -self._lp_a],
                                  self._rng.standard_normal((n, 2)), axis=0, zi=self._zi_lp)
        lp *= self._lp_norm
        env = self._alpha_uv * np.sqrt(2) * np.clip(1.0 + 0.4 * lp[:, 0], 0.0, None)
        phase = 2 * np.pi * self._alpha_hz * k / self.fs_hz + 0.8 * lp[:, 1]
        out += (env * np.sin(phase))[:, None] * self._w_alpha * np.cos(self._phase)
        if t_s is not None and self._blinks:
            out += self._blink_wave(np.asarray(t_s, dtype=np.float64))[:, None] * self._w_blink
        return out

    def _blink_wave(self, t_s: np.ndarray) -> np.ndarray:
        wave = np.zeros(t_s.shape)
        lo, hi = float(t_s[0]), float(t_s[-1])
        for b in self._blinks:
            if b.t_s > hi or b.t_s + b.duration_s < lo:
                continue
            x = (t_s - b.t_s) / b.duration_s
            inside = (x >= 0) & (x <= 1)
            wave += np.where(inside, 0.5 * (1 - np.cos(2 * np.pi * x)), 0.0) * self._blink_uv
        return wave
