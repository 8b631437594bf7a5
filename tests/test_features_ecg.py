"""ECG features: R peaks, heart rate and HRV agree with the truth and with NeuroKit2's
offline processing; streaming is independent of block size; bad input gives invalid
features with a reason, never an exception."""

from __future__ import annotations

import numpy as np
import pytest

from edge.features import EcgFeatures, Feature
from edge.features.peaks import hrv_time
from hil.benchmarks.features import T0_NS, feed, synth_ecg

nk = pytest.importorskip("neurokit2")
FS = 1000.0


def _peaks_s(feats: list[Feature]) -> np.ndarray:
    return np.array([(f.t_ns - T0_NS) / 1e9 for f in feats if f.name == "ecg_peak"])


def _match(ours: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, int]:
    """Per reference event the nearest of ours (s), and how many refs were missed."""
    d = np.abs(ours[:, None] - ref[None, :])
    near = d.min(axis=0)
    return near, int((near > 0.1).sum())


@pytest.mark.parametrize("hr", [55.0, 75.0, 110.0])
def test_r_peaks_and_rate_match_the_known_truth(hr: float) -> None:
    x, r = synth_ecg(60.0, FS, hr, seed=3)
    feats = feed(EcgFeatures(FS), x, FS, 40)
    near, missed = _match(_peaks_s(feats), r[r > 2.5])  # the first 2 s learn the levels
    hr_est = np.array([f.value for f in feats if f.name == "ecg_hr_bpm" and f.valid])
    hr_true = 60.0 / np.diff(r[r > 5]).mean()
    print(f"\nAGREEMENT ecg truth hr={hr:.0f}: R-peak error max {near.max() * 1e3:.1f} ms, "
          f"missed {missed}/{near.size}; mean HR {hr_est.mean():.2f} vs {hr_true:.2f} bpm")
    assert missed == 0
    assert near.max() <= 0.020
    assert abs(hr_est.mean() - hr_true) < 2.0


def test_r_peaks_hr_and_hrv_match_neurokit2_on_its_simulated_ecg() -> None:
    x = nk.ecg_simulate(duration=90, sampling_rate=int(FS), heart_rate=70, heart_rate_std=3,
                        random_state=7, noise=0.05)
    feats = feed(EcgFeatures(FS, hrv_window_s=60.0), x, FS, 33)
    ours = _peaks_s(feats)
    sig, info = nk.ecg_process(x, sampling_rate=int(FS))
    ref = np.asarray(info["ECG_R_Peaks"]) / FS
    ref = ref[(ref > 2.5) & (ref < 89.0)]
    near, missed = _match(ours, ref)
    # Heart rate at each of our beats vs NeuroKit2's rate signal at the same sample.
    hr = [(f.t_ns, f.value) for f in feats if f.name == "ecg_hr_inst_bpm" and f.valid]
    idx = np.array([round((t - T0_NS) / 1e9 * FS) for t, _ in hr])
    d_hr = np.abs(np.array([v for _, v in hr]) - sig["ECG_Rate"].to_numpy()[idx])
    # HRV: ours (streaming, last 60 s) vs nk.hrv_time on NeuroKit2's peaks of that span.
    last = [f for f in feats if f.name == "ecg_rmssd_ms" and f.valid][-1]
    sdnn = [f for f in feats if f.name == "ecg_sdnn_ms" and f.valid][-1]
    t_end = (last.t_ns - T0_NS) / 1e9
    span = ref[(ref >= t_end - 60.0) & (ref <= t_end)]
    h = nk.hrv_time(np.round(span * FS).astype(int), sampling_rate=int(FS))
    rm_nk, sd_nk = float(h["HRV_RMSSD"].iloc[0]), float(h["HRV_SDNN"].iloc[0])
    print(f"\nAGREEMENT ecg vs neurokit2: R-peak |diff| max {near.max() * 1e3:.1f} ms "
          f"mean {near.mean() * 1e3:.2f} ms, missed {missed}/{near.size}; inst HR |diff| max "
          f"{d_hr.max():.2f} bpm; RMSSD {last.value:.2f} vs {rm_nk:.2f} ms, "
          f"SDNN {sdnn.value:.2f} vs {sd_nk:.2f} ms")
    assert missed == 0 and near.max() <= 0.020
    assert d_hr.max() < 2.0
    assert abs(last.value - rm_nk) < 0.1 * rm_nk + 1.0
    assert abs(sdnn.value - sd_nk) < 0.1 * sd_nk + 1.0


def test_hrv_time_equals_neurokit2_on_the_same_intervals() -> None:
    rng = np.random.default_rng(0)
    peaks = np.cumsum(rng.integers(700, 1000, 80))
    h = nk.hrv_time(peaks, sampling_rate=1000)
    rmssd, sdnn = hrv_time(np.diff(peaks) / 1000.0)
    assert rmssd == pytest.approx(float(h["HRV_RMSSD"].iloc[0]), rel=1e-9)
    assert sdnn == pytest.approx(float(h["HRV_SDNN"].iloc[0]), rel=1e-9)


def test_a_break_in_the_intervals_is_not_bridged_by_rmssd() -> None:
    rr = np.array([0.8, 0.9, np.nan, 0.6, 0.7])
    rmssd, _ = hrv_time(rr)
    assert rmssd == pytest.approx(100.0)  # only 0.8->0.9 and 0.6->0.7


def _key(feats: list[Feature]) -> list[tuple]:
    """What must not depend on block size (latency does: it includes the block wait)."""
    return sorted((f.name, f.t_ns, round(f.value, 9) if f.valid else None, f.valid, f.reason)
                  for f in feats)


def test_block_size_does_not_change_the_features() -> None:
    x, _ = synth_ecg(40.0, FS, 80.0, seed=5)
    one = feed(EcgFeatures(FS), x, FS, x.size)
    for sizes in ([1, 7, 250], [20, 50, 33], [1000]):
        assert _key(feed(EcgFeatures(FS), x, FS, sizes)) == _key(one)
    assert sum(f.name == "ecg_peak" for f in one) >= 50


def test_heart_rate_slope_sees_an_acceleration() -> None:
    fs, dur = FS, 60.0
    rr = 60.0 / np.linspace(60.0, 90.0, 80)  # +30 bpm over ~55 s
    r = 0.5 + np.concatenate(([0.0], np.cumsum(rr)))
    r = r[r < dur - 1]
    t = np.arange(int(dur * fs)) / fs
    x = sum(np.exp(-0.5 * ((t - rt) / 0.01) ** 2) for rt in r)
    feats = feed(EcgFeatures(fs), x, fs, 40)
    slope = [f.value for f in feats if f.name == "ecg_hr_slope_bpm_s" and f.valid]
    true = 30.0 / (r[-1] - r[0])
    print(f"\nAGREEMENT ecg HR slope: {np.median(slope):.3f} vs {true:.3f} bpm/s")
    assert np.median(slope) == pytest.approx(true, rel=0.25)


def _bad_case(kind: str) -> tuple[np.ndarray, np.ndarray, str]:
    x, _ = synth_ecg(30.0, FS, 70.0, seed=2)
    bad = np.zeros(x.size, np.uint8)
    s = slice(15_000, 22_000)
    if kind == "flat":
        x[s] = 0.0
        bad[s.start + 1000:s.stop] = 16  # what Quality marks after 1 s of no change
        return x, bad, "flat"
    if kind == "nan":
        x[s] = np.nan
        bad[s] = 4
        return x, bad, "nan"
    if kind == "lead_off":
        x[s] = np.random.default_rng(0).standard_normal(s.stop - s.start) * 3.0
        bad[s] = 1
        return x, bad, "lead_off"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["flat", "nan", "lead_off"])
def test_bad_stretches_give_invalid_features_with_the_reason(kind: str) -> None:
    x, bad, reason = _bad_case(kind)
    feats = feed(EcgFeatures(FS), x, FS, 25, bad=bad)
    inside = [f for f in feats if f.name == "ecg_hr_bpm"
              and 17.0 <= (f.t_ns - T0_NS) / 1e9 <= 22.0]
    assert inside and all(not f.valid and f.reason == reason for f in inside)
    assert all(np.isnan(f.value) for f in inside)
    # No beat is reported inside the bad stretch, and no interval spans it.
    beats = [(f.t_ns - T0_NS) / 1e9 for f in feats if f.name == "ecg_peak"]
    assert not [b for b in beats if 15.05 < b < 21.95]
    rr = [f for f in feats if f.name == "ecg_rr_ms" and f.valid]
    assert all(f.value < 1500 for f in rr)
    # It recovers: valid heart rate again a few seconds later.
    late = [f for f in feats if f.name == "ecg_hr_bpm" and (f.t_ns - T0_NS) / 1e9 > 28.0]
    assert late and all(f.valid for f in late)
