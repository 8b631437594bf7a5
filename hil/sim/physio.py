"""A vectorised physiological model for the hub emulator, with ground truth.

Five channels (``CHANNELS``, units ``UNITS``) from a :class:`hil.sim.scenario.Subject`'s
baselines and each :class:`hil.sim.scenario.ExpressionEvent`'s ``response``:

- heart: instantaneous rate = baseline + respiratory sinus arrhythmia + a 0.1 Hz wave +
  per event a raised-cosine change of ``hr_delta_bpm`` from +0.5 s to +5.5 s (a few
  beats). R peaks are where the integrated heart phase crosses an integer.
- ECG: sum of Gaussians (P, Q, R, S, T) per beat, widths scaled by sqrt(RR), in mV.
- PPG: skewed systolic peak ``ptt_s`` (0.23 s) after each R plus a dicrotic wave, au.
- RSP: breathing phase integrated from the rate; inspiration is the first 40 % of the
  cycle, expiration the rest; per event an inspiratory pause of ``resp_pause_s`` at the
  first end of inspiration after the onset (the phase stops, the belt holds full).
- EDA: tonic level + slow drift + Bateman SCRs (tau rise 0.75 s, decay 2 s, onset to
  peak 1.18 s) at onset + ``scr_latency_s`` with ``scr_amp_us``, plus spontaneous SCRs.
- SKT: slow level + per event cooling of ``skt_delta_c`` reached about 17 s after onset.

Responses are used as given (``hil.sim.scenario.response_for`` already folds in the
subject's responsiveness). Noise-free values at any times come from :meth:`values`;
:meth:`noise` draws sensor noise sequentially, so chunking never changes the output.
Everything is deterministic from the seed; times are seconds from the scenario start.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hil.sim.scenario import Scenario

CHANNELS = ("ECG", "PPG", "RSP", "EDA", "SKT")
UNITS = ("mV", "au", "au", "uS", "degC")
NOISE_SD = np.array([0.008, 0.004, 0.004, 0.001, 0.002])  # per channel, in its unit

GRID_S = 0.005  # rate integration step
T_START_S = -3.0  # the model starts before 0 so beats and breaths exist at t = 0
INSP_FRACTION = 0.4  # inspiration share of a breath cycle (I:E = 1:1.5)
BLOCK_S = 60.0  # spontaneous SCRs are drawn per block: independent of the horizon

# ECG components: amplitude mV, centre s (relative to R), width s; scaled by sqrt(RR).
_ECG = np.array(
    [
        [0.15, -0.16, 0.025],  # P
        [-0.12, -0.025, 0.008],  # Q
        [1.10, 0.0, 0.009],  # R
        [-0.25, 0.028, 0.009],  # S
        [0.30, 0.28, 0.05],  # T
    ]
)
_TAU_RISE_S, _TAU_DECAY_S = 0.75, 2.0
_BATEMAN_PEAK_S = np.log(_TAU_DECAY_S / _TAU_RISE_S) * _TAU_RISE_S * _TAU_DECAY_S / (
    _TAU_DECAY_S - _TAU_RISE_S
)
_BATEMAN_MAX = np.exp(-_BATEMAN_PEAK_S / _TAU_DECAY_S) - np.exp(-_BATEMAN_PEAK_S / _TAU_RISE_S)
_SKT_DELAY_S, _SKT_FALL_S, _SKT_RECOVER_S = 2.0, 6.0, 90.0
_SKT_PEAK_X = _SKT_FALL_S * np.log(1 + _SKT_RECOVER_S / _SKT_FALL_S)
_SKT_MAX = (1 - np.exp(-_SKT_PEAK_X / _SKT_FALL_S)) * np.exp(-_SKT_PEAK_X / _SKT_RECOVER_S)


@dataclass(frozen=True)
class PhysioTruth:
    """Ground truth events, seconds from the scenario start, up to the model's horizon."""

    r_peaks_s: np.ndarray
    ppg_peaks_s: np.ndarray  # centre of each beat's systolic wave (R + ptt)
    breath_onsets_s: np.ndarray  # inspiration starts
    pauses_s: np.ndarray  # (k, 2) start and end of each stimulus-locked inspiratory pause
    scr_onsets_s: np.ndarray
    scr_amps_us: np.ndarray  # rise of that SCR component from its onset to its peak
    scr_event: np.ndarray  # index into scenario.expressions, -1 for a spontaneous SCR


def bateman(tau_s: np.ndarray) -> np.ndarray:
    """SCR shape with unit peak at ``_BATEMAN_PEAK_S``; zero before the onset."""
    t = np.maximum(tau_s, 0.0)
    return (np.exp(-t / _TAU_DECAY_S) - np.exp(-t / _TAU_RISE_S)) / _BATEMAN_MAX


def _window(tau_s: np.ndarray, start_s: float, end_s: float) -> np.ndarray:
    """Raised cosine: 0 outside [start, end], 1 in the middle."""
    x = np.clip((tau_s - start_s) / (end_s - start_s), 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(2 * np.pi * x)


class PhysioModel:
    """Five physiological channels with ground truth, deterministic from ``seed``."""

    channels = CHANNELS
    units = UNITS

    def __init__(
        self,
        scenario: Scenario,
        seed: int | None = None,
        ptt_s: float = 0.23,
        nsscr_per_min: float = 1.0,
        noise: bool = True,
    ) -> None:
        self.scenario = scenario
        self.subject = scenario.subject
        self.seed = scenario.seed if seed is None else seed
        self.ptt_s = ptt_s
        self.nsscr_per_min = nsscr_per_min
        self.noise_sd = NOISE_SD if noise else np.zeros(5)
        self._noise_rng = np.random.default_rng([self.seed, 1])
        rng = np.random.default_rng([self.seed, 0])
        self._phase0 = rng.uniform(0, 1, 2)  # heart, breath
        self._lf = rng.uniform(0, 2 * np.pi, 4)  # phases of the slow waves
        self._events = scenario.expressions
        self._build(max(scenario.duration_s, 1.0) + 30.0)

    # ------------------------------------------------------------ construction
    def _build(self, horizon_s: float) -> None:
        self.horizon_s = horizon_s
        t = np.arange(T_START_S, horizon_s + 3.0, GRID_S)
        self._t = t
        s = self.subject
        br = s.rr_bpm * (1 + 0.05 * np.sin(2 * np.pi * t / 97.0 + self._lf[0]))
        pauses = []
        for ev in self._events:  # per event, not per sample: a pause shifts later breaths
            pause = ev.response.resp_pause_s
            if pause <= 0:
                continue
            ph = self._integrate(br, self._phase0[1])
            i_ev = np.searchsorted(t, ev.onset_s)
            target = np.floor(ph[i_ev] - INSP_FRACTION) + 1 + INSP_FRACTION
            i0 = int(np.searchsorted(ph, target))
            i1 = i0 + round(pause / GRID_S)
            br[i0:i1] = 0.0
            pauses.append((t[min(i0, t.size - 1)], t[min(i1, t.size - 1)]))
        self._br = br
        self._bph = self._integrate(br, self._phase0[1])
        hr = s.hr_bpm + 0.03 * s.hr_bpm * np.sin(2 * np.pi * self._bph)  # RSA
        hr += 1.5 * np.sin(2 * np.pi * 0.1 * t + self._lf[1])
        for ev in self._events:
            hr += ev.response.hr_delta_bpm * _window(t - ev.onset_s, 0.5, 5.5)
        self._hr = hr
        hph = self._integrate(hr, self._phase0[0])
        self._r = self._crossings(hph)
        self._breaths = self._crossings(self._bph)
        self._pauses = np.asarray(pauses, dtype=np.float64).reshape(-1, 2)
        self._build_scr(horizon_s)

    def _integrate(self, rate_bpm: np.ndarray, phase0: float) -> np.ndarray:
        ph = np.empty_like(rate_bpm)
        ph[0] = phase0
        np.cumsum(rate_bpm[:-1] * (GRID_S / 60.0), out=ph[1:])
        ph[1:] += phase0
        return ph

    def _crossings(self, phase: np.ndarray) -> np.ndarray:
        """Times where the phase passes an integer (it is flat only mid-cycle, in pauses)."""
        k = np.arange(np.ceil(phase[0]), np.floor(phase[-1]) + 1)
        return np.interp(k, phase, self._t)

    def _build_scr(self, horizon_s: float) -> None:
        on, amp, idx = [], [], []
        for i, ev in enumerate(self._events):
            if ev.response.scr_amp_us > 0:
                on.append(ev.onset_s + ev.response.scr_latency_s)
                amp.append(ev.response.scr_amp_us)
                idx.append(i)
        for b in range(int(np.ceil(horizon_s / BLOCK_S))):
            rng = np.random.default_rng([self.seed, 2, b])
            n = rng.poisson(self.nsscr_per_min * BLOCK_S / 60.0)
            on.extend((b * BLOCK_S + rng.uniform(0, BLOCK_S, n)).tolist())
            amp.extend(rng.uniform(0.03, 0.12, n).tolist())
            idx.extend([-1] * n)
        order = np.argsort(on, kind="stable")
        self._scr_on = np.asarray(on, dtype=np.float64)[order]
        self._scr_amp = np.asarray(amp, dtype=np.float64)[order]
        self._scr_idx = np.asarray(idx, dtype=np.int64)[order]
        self._ev_on = np.array([e.onset_s for e in self._events], dtype=np.float64)
        self._ev_skt = np.array([e.response.skt_delta_c for e in self._events], dtype=np.float64)

    def _ensure(self, t_max: float) -> None:
        """Grow the horizon (rebuilding gives the same prefix: cumsum is sequential)."""
        if t_max > self.horizon_s:
            self._build(max(t_max + 60.0, 2 * self.horizon_s))

    # ------------------------------------------------------------ signals
    def values(self, t_s: np.ndarray) -> np.ndarray:
        """Noise-free (n, 5) values at sorted times t_s >= -2 (seconds), ``UNITS``."""
        t = np.asarray(t_s, dtype=np.float64)
        out = np.empty((t.size, 5))
        if t.size == 0:
            return out
        self._ensure(float(t[-1]))
        r = self._r
        i = np.clip(np.searchsorted(r, t, side="right") - 1, 1, r.size - 2)
        out[:, 0] = self._ecg(t - r[i], r[i + 1] - r[i]) + self._ecg(t - r[i + 1], r[i + 1] - r[i])
        out[:, 1] = self._ppg(t - r[i], r[i + 1] - r[i]) + self._ppg(t - r[i - 1], r[i] - r[i - 1])
        f = np.interp(t, self._t, self._bph) % 1.0
        insp = f < INSP_FRACTION
        rsp = np.where(
            insp,
            0.5 - 0.5 * np.cos(np.pi * f / INSP_FRACTION),
            0.5 + 0.5 * np.cos(np.pi * (f - INSP_FRACTION) / (1 - INSP_FRACTION)),
        )
        out[:, 2] = rsp
        out[:, 1] += 0.05 * rsp  # respiratory baseline wander of the PPG
        out[:, 3] = self._eda(t)
        out[:, 4] = self._skt(t)
        return out

    @staticmethod
    def _ecg(tau: np.ndarray, rr: np.ndarray) -> np.ndarray:
        k = np.sqrt(rr)[:, None]
        a, mu, sd = _ECG[:, 0], _ECG[:, 1] * k, _ECG[:, 2] * k
        return (a * np.exp(-0.5 * ((tau[:, None] - mu) / sd) ** 2)).sum(axis=1)

    def _ppg(self, tau: np.ndarray, rr: np.ndarray) -> np.ndarray:
        k = np.sqrt(rr)
        x = tau - self.ptt_s
        sd = np.where(x < 0, 0.05, 0.1) * k  # fast upstroke, slow runoff
        y = np.exp(-0.5 * (x / sd) ** 2)
        return y + 0.35 * np.exp(-0.5 * ((x - 0.3 * k) / (0.08 * k)) ** 2)

    def _eda(self, t: np.ndarray) -> np.ndarray:
        s = self.subject
        tonic = s.scl_us + 0.15 * np.sin(2 * np.pi * t / 180.0 + self._lf[2])
        lo = np.searchsorted(self._scr_on, t[0] - 40.0)
        hi = np.searchsorted(self._scr_on, t[-1])
        if hi > lo:  # only SCRs that can still matter in this chunk
            tau = t[:, None] - self._scr_on[lo:hi]
            tonic = tonic + bateman(tau) @ self._scr_amp[lo:hi]
        return tonic

    def _skt(self, t: np.ndarray) -> np.ndarray:
        y = self.subject.skt_c + 0.05 * np.sin(2 * np.pi * t / 300.0 + self._lf[3])
        if self._ev_on.size:
            x = np.maximum(t[:, None] - self._ev_on - _SKT_DELAY_S, 0.0)
            g = (1 - np.exp(-x / _SKT_FALL_S)) * np.exp(-x / _SKT_RECOVER_S) / _SKT_MAX
            y = y + g @ self._ev_skt
        return y

    def noise(self, n: int) -> np.ndarray:
        """Sensor noise for the next n samples (sequential: chunking does not change it)."""
        return self._noise_rng.standard_normal((n, 5)) * self.noise_sd

    def chunk(self, t_s: np.ndarray) -> np.ndarray:
        """Values plus the next draws of noise at times ``t_s`` (what a sensor reads)."""
        return self.values(t_s) + self.noise(np.asarray(t_s).size)

    # ------------------------------------------------------------ truth
    def hr_bpm(self, t_s: np.ndarray) -> np.ndarray:
        """Instantaneous heart rate (beats per minute) at times t_s."""
        self._ensure(float(np.max(t_s)))
        return np.interp(t_s, self._t, self._hr)

    def br_bpm(self, t_s: np.ndarray) -> np.ndarray:
        """Instantaneous breathing rate (breaths per minute; 0 inside an inspiratory pause)."""
        self._ensure(float(np.max(t_s)))
        return np.interp(t_s, self._t, self._br)

    def truth(self, until_s: float | None = None) -> PhysioTruth:
        """Events from t = 0 to ``until_s`` (default: the scenario's duration)."""
        end = self.scenario.duration_s if until_s is None else until_s
        self._ensure(end)

        def within(x: np.ndarray) -> np.ndarray:
            return x[(x >= 0) & (x <= end)]

        scr = (self._scr_on >= 0) & (self._scr_on <= end)
        return PhysioTruth(
            r_peaks_s=within(self._r),
            ppg_peaks_s=within(self._r + self.ptt_s),
            breath_onsets_s=within(self._breaths),
            pauses_s=self._pauses[self._pauses[:, 0] <= end],
            scr_onsets_s=self._scr_on[scr],
            scr_amps_us=self._scr_amp[scr],
            scr_event=self._scr_idx[scr],
        )
