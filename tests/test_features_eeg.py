"""EEG features: band power and differential entropy are right on signals with known
content, mains is notched, blinks and eye movements are flagged on frontal channels,
lead-off comes from the ADS1299 status word, and block size does not matter."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from edge.features import BANDS, EegFeatures, Feature, band_powers, differential_entropy
from hil.benchmarks.features import EEG_CHANNELS, T0_NS, synth_eeg

FS = 1000.0


def _feed(step: EegFeatures, x: np.ndarray, sizes: list[int], bad: np.ndarray | None = None
          ) -> list[Feature]:
    t = T0_NS + np.round(np.arange(x.shape[0]) * 1e6).astype(np.int64)
    bad = np.zeros(x.shape, np.uint8) if bad is None else bad
    out, a, i = [], 0, 0
    while a < x.shape[0]:
        b = min(a + sizes[i % len(sizes)], x.shape[0])
        out += step.update(t[a:b], x[a:b], bad[a:b])
        a, i = b, i + 1
    return out


def test_a_sine_puts_its_power_in_its_band() -> None:
    t = np.arange(1000) / FS
    for f0, band in ((2.0, "delta"), (6.0, "theta"), (10.0, "alpha"), (20.0, "beta"),
                     (40.0, "gamma")):
        x = (8.0 * np.sin(2 * np.pi * f0 * t))[:, None]
        p = band_powers(x, FS)[:, 0]
        i = list(BANDS).index(band)
        assert p[i] == pytest.approx(32.0, rel=0.05)  # A^2 / 2
        assert p[i] > 0.95 * p.sum()


def test_band_power_equals_scipy_periodogram_and_de_matches_filtered_variance() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 3)) * 10.0
    f, pxx = signal.periodogram(x, FS, window="hann", detrend="constant", axis=0)
    ours = band_powers(x, FS)
    for i, (lo, hi) in enumerate(BANDS.values()):
        ref = pxx[(f >= lo) & (f < hi)].sum(axis=0) * (f[1] - f[0])
        np.testing.assert_allclose(ours[i], ref, rtol=1e-9)
    # DE of a band vs the Gaussian DE of the zero-phase band-filtered signal (long record).
    y = rng.standard_normal(60_000) * 10.0
    sos = signal.butter(8, (8.0, 13.0), "bandpass", fs=FS, output="sos")
    de_ref = 0.5 * np.log(2 * np.pi * np.e * np.var(signal.sosfiltfilt(sos, y)))
    wins = y[: 60_000].reshape(60, 1000).T
    de = differential_entropy(band_powers(wins, FS)[2]).mean()
    print(f"\nAGREEMENT eeg DE alpha: {de:.3f} vs {de_ref:.3f} nat (filtered variance)")
    assert de == pytest.approx(de_ref, abs=0.15)


@pytest.mark.parametrize("mains", [50.0, 60.0])
def test_mains_is_notched_and_alpha_survives(mains: float) -> None:
    clean = synth_eeg(20.0, FS, 8, seed=1, mains_uv=0.0)
    dirty = synth_eeg(20.0, FS, 8, seed=1, mains_uv=50.0, mains_hz=mains)

    def mean_pow(x: np.ndarray, name: str) -> float:
        f = _feed(EegFeatures(FS, EEG_CHANNELS, mains_hz=mains), x, [40])
        return float(np.mean([g.value for g in f if g.name == name and g.valid]))

    g_clean, g_dirty = mean_pow(clean, "eeg_O1_gamma_pow"), mean_pow(dirty, "eeg_O1_gamma_pow")
    a_clean = mean_pow(clean, "eeg_O1_alpha_pow")
    print(f"\nAGREEMENT eeg notch {mains:.0f} Hz: gamma {g_dirty:.3f} with 50 uV mains vs "
          f"{g_clean:.3f} uV^2 without; alpha {a_clean:.1f} uV^2 (10-uV sine: ~50)")
    assert g_dirty < 1.5 * g_clean + 0.05
    assert a_clean == pytest.approx(50.0, rel=0.25)


def test_blinks_and_eye_movements_are_flagged_on_frontal_channels() -> None:
    x = synth_eeg(12.0, FS, 8, seed=2, mains_uv=0.0, blinks_s=(4.5,))
    t = np.arange(x.shape[0]) / FS
    step_ = 120.0 / (1 + np.exp(-(t - 8.5) / 0.02)) - 120.0 * (t > 9.2) / (
        1 + np.exp(-(t - 9.2) / 0.02))  # a saccade out and back
    x[:, 2] += step_  # F7
    x[:, 3] -= step_  # F8
    feats = _feed(EegFeatures(FS, EEG_CHANNELS), x, [40])

    def at(name: str, sec: int) -> Feature:
        return next(f for f in feats if f.name == name
                    and round((f.t_ns - T0_NS) / 1e9) == sec)

    assert at("eeg_blink", 5).value == 1.0 and at("eeg_blink", 5).valid
    assert at("eeg_eye_move", 5).value == 0.0
    assert at("eeg_eye_move", 9).value == 1.0 or at("eeg_eye_move", 10).value == 1.0
    assert at("eeg_blink", 3).value == 0.0 and at("eeg_eye_move", 3).value == 0.0
    # In the blink window frontal features are invalid ("blink"), occipital ones are valid.
    assert at("eeg_Fp1_delta_pow", 5).reason == "blink"
    assert at("eeg_O1_delta_pow", 5).valid


def test_bad_channel_is_invalid_alone_and_blocks_do_not_matter() -> None:
    x = synth_eeg(8.0, FS, 8, seed=3, mains_uv=10.0)
    bad = np.zeros(x.shape, np.uint8)
    bad[3000:5000, 6] = 1  # O1 lead-off for 2 s
    one = _feed(EegFeatures(FS, EEG_CHANNELS), x, [x.shape[0]], bad)
    many = _feed(EegFeatures(FS, EEG_CHANNELS), x, [17, 40, 333], bad)

    def key(fs: list[Feature]) -> list[tuple]:
        return sorted((f.name, f.t_ns, round(f.value, 9) if f.valid else None, f.reason)
                      for f in fs)

    assert key(one) == key(many)
    o1 = [f for f in one if f.name == "eeg_O1_alpha_de" and 4.0 <= (f.t_ns - T0_NS) / 1e9 <= 5.5]
    assert o1 and all(not f.valid and f.reason == "lead_off" for f in o1)
    o2 = [f for f in one if f.name == "eeg_O2_alpha_de" and 4.0 <= (f.t_ns - T0_NS) / 1e9 <= 5.5]
    assert o2 and all(f.valid for f in o2)
    first = [f for f in one if (f.t_ns - T0_NS) / 1e9 < 1.5]
    assert first and all(f.reason == "warmup" for f in first)


def test_epoch_around_an_apex_and_pending_when_not_yet_seen() -> None:
    x = synth_eeg(10.0, FS, 8, seed=4, mains_uv=0.0)
    step = EegFeatures(FS, EEG_CHANNELS)
    _feed(step, x, [40])
    ep = {f.name: f for f in step.epoch(T0_NS + 6_000_000_000, T0_NS + 7_000_000_000)}
    assert len(ep) == 8 * 5 * 2 + 2
    assert ep["eeg_C3_alpha_pow"].valid and ep["eeg_C3_alpha_pow"].value == pytest.approx(
        50.0, rel=0.3)
    later = step.epoch(T0_NS + 9_800_000_000, T0_NS + 10_800_000_000)
    assert all(f.reason == "pending" for f in later)
