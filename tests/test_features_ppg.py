"""PPG features: beat times, heart rate and pulse amplitude agree with the truth and with
NeuroKit2; block size does not matter; bad input is invalid with a reason."""

from __future__ import annotations

import numpy as np
import pytest

from edge.features import Feature, PpgFeatures
from edge.features.base import Boxcar
from hil.benchmarks.features import T0_NS, synth_ppg

nk = pytest.importorskip("neurokit2")
FS = 1000.0


def run(x: np.ndarray, sizes: list[int], bad: np.ndarray | None = None) -> list[Feature]:
    """As the pipeline does: 1 kHz -> 200 Hz boxcar, then the step."""
    step, dec = PpgFeatures(200.0), Boxcar(5, 1)
    t = T0_NS + np.round(np.arange(x.size) * 1e6).astype(np.int64)
    bad = np.zeros(x.size, np.uint8) if bad is None else bad
    out, a, i = [], 0, 0
    while a < x.size:
        b = min(a + sizes[i % len(sizes)], x.size)
        tt, xx, bb = dec.update(t[a:b], x[a:b, None], bad[a:b, None])
        out += step.update(tt, xx[:, 0], bb[:, 0])
        a, i = b, i + 1
    return out


def _beats(feats: list[Feature]) -> tuple[np.ndarray, np.ndarray]:
    b = [f for f in feats if f.name == "ppg_peak"]
    return np.array([(f.t_ns - T0_NS) / 1e9 for f in b]), np.array([f.value for f in b])


@pytest.mark.parametrize("hr", [60.0, 95.0])
def test_beats_rate_and_amplitude_match_the_known_truth(hr: float) -> None:
    x, p, amp = synth_ppg(60.0, FS, hr, seed=4)
    feats = run(x, [40])
    ours, oamp = _beats(feats)
    # Beats in the last LATENCY_MS are not decided yet when the input ends.
    sel = (p > 2.5) & (p < 60.0 - PpgFeatures.LATENCY_MS / 1e3)
    d = np.abs(ours[:, None] - p[sel][None, :])
    near, j = d.min(axis=0), d.argmin(axis=0)
    hr_est = np.array([f.value for f in feats if f.name == "ppg_hr_bpm" and f.valid])
    hr_true = 60.0 / np.diff(p[p > 5]).mean()
    amp_err = np.abs(oamp[j] - amp[sel]) / amp[sel]
    print(f"\nAGREEMENT ppg truth hr={hr:.0f}: beat error max {near.max() * 1e3:.1f} ms; mean HR "
          f"{hr_est.mean():.2f} vs {hr_true:.2f} bpm; amplitude error median "
          f"{np.median(amp_err) * 100:.1f}%")
    assert near.max() <= 0.020
    assert abs(hr_est.mean() - hr_true) < 2.0
    assert np.median(amp_err) < 0.1


def test_beats_and_rate_match_neurokit2_on_its_simulated_ppg() -> None:
    x = nk.ppg_simulate(duration=90, sampling_rate=int(FS), heart_rate=72, random_state=11)
    feats = run(x, [33, 21])
    ours, _ = _beats(feats)
    sig, info = nk.ppg_process(x, sampling_rate=int(FS))
    ref = np.asarray(info["PPG_Peaks"]) / FS
    ref = ref[(ref > 2.5) & (ref < 89.0)]
    near = np.abs(ours[:, None] - ref[None, :]).min(axis=0)
    hr = [(f.t_ns, f.value) for f in feats if f.name == "ppg_hr_inst_bpm" and f.valid]
    idx = np.array([round((t - T0_NS) / 1e6) for t, _ in hr])
    d_hr = np.abs(np.array([v for _, v in hr]) - sig["PPG_Rate"].to_numpy()[idx])
    print(f"\nAGREEMENT ppg vs neurokit2: beat |diff| max {near.max() * 1e3:.1f} ms mean "
          f"{near.mean() * 1e3:.1f} ms over {near.size} beats; inst HR |diff| median "
          f"{np.median(d_hr):.2f} max {d_hr.max():.2f} bpm")
    assert near.max() <= 0.020
    assert np.median(d_hr) < 2.0


def test_block_size_does_not_change_the_features() -> None:
    x, _, _ = synth_ppg(30.0, FS, 70.0, seed=1)

    def key(fs: list[Feature]) -> list[tuple]:
        return sorted((f.name, f.t_ns, round(f.value, 9) if f.valid else None, f.reason)
                      for f in fs)

    ref = key(run(x, [x.size]))
    assert key(run(x, [3, 50, 17])) == ref
    assert key(run(x, [1000])) == ref


def test_nan_stretch_is_invalid_and_no_beat_is_made_up() -> None:
    x, _, _ = synth_ppg(30.0, FS, 70.0, seed=1)
    bad = np.zeros(x.size, np.uint8)
    x[12_000:18_000] = np.nan
    bad[12_000:18_000] = 4
    feats = run(x, [40], bad)
    inside = [f for f in feats if f.name in ("ppg_hr_bpm", "ppg_amp")
              and 13.0 <= (f.t_ns - T0_NS) / 1e9 <= 18.0]
    assert inside and all(not f.valid and f.reason == "nan" for f in inside)
    beats, _ = _beats(feats)
    assert not ((beats > 12.05) & (beats < 17.95)).any()
