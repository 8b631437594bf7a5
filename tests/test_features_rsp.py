"""Respiration features: breath onsets, rate, amplitude and inspiratory pause against
the known truth and NeuroKit2; block size does not matter; a flat belt is invalid."""

from __future__ import annotations

import numpy as np
import pytest

from edge.features import Feature, RspFeatures
from edge.features.base import Boxcar
from hil.benchmarks.features import T0_NS, synth_rsp

nk = pytest.importorskip("neurokit2")
FS = 1000.0


def run(x: np.ndarray, sizes: list[int], bad: np.ndarray | None = None) -> list[Feature]:
    """As the pipeline does: 1 kHz -> 25 Hz boxcar, then the step."""
    step, dec = RspFeatures(25.0), Boxcar(40, 1)
    t = T0_NS + np.round(np.arange(x.size) * 1e6).astype(np.int64)
    bad = np.zeros(x.size, np.uint8) if bad is None else bad
    out, a, i = [], 0, 0
    while a < x.size:
        b = min(a + sizes[i % len(sizes)], x.size)
        tt, xx, bb = dec.update(t[a:b], x[a:b, None], bad[a:b, None])
        out += step.update(tt, xx[:, 0], bb[:, 0])
        a, i = b, i + 1
    return out


def _per_breath(feats: list[Feature], name: str) -> tuple[np.ndarray, np.ndarray]:
    b = [f for f in feats if f.name == name]
    return np.array([(f.t_ns - T0_NS) / 1e9 for f in b]), np.array([f.value for f in b])


@pytest.mark.parametrize("rate", [8.0, 15.0, 24.0])
def test_rate_and_onsets_match_the_known_truth(rate: float) -> None:
    x, on = synth_rsp(120.0, FS, rate, seed=2)
    feats = run(x, [40])
    t_on, _ = _per_breath(feats, "rsp_breath_rate_bpm")
    true_on = on[(on > 12.0) & (on < 115.0)]
    near = np.abs(t_on[:, None] - true_on[None, :]).min(axis=0)
    est = np.array([f.value for f in feats if f.name == "rsp_rate_bpm" and f.valid])
    true = 60.0 / np.diff(on).mean()
    print(f"\nAGREEMENT rsp truth rate={rate:.0f}: rate {est.mean():.2f} vs {true:.2f} /min; "
          f"onset error median {np.median(near):.2f} s max {near.max():.2f} s")
    assert abs(est.mean() - true) < 1.0
    assert near.max() < 0.25  # every true breath found, near its onset


def test_rate_matches_neurokit2_on_its_simulated_breathing() -> None:
    x = nk.rsp_simulate(duration=120, sampling_rate=int(FS), respiratory_rate=14,
                        random_state=3)
    feats = run(x, [33])
    sig, _info = nk.rsp_process(x, sampling_rate=int(FS))
    ours = [(f.t_ns, f.value) for f in feats if f.name == "rsp_breath_rate_bpm" and f.valid]
    idx = np.array([round((t - T0_NS) / 1e6) for t, _ in ours])
    d = np.abs(np.array([v for _, v in ours]) - sig["RSP_Rate"].to_numpy()[idx])
    mean_ours = np.mean([f.value for f in feats if f.name == "rsp_rate_bpm" and f.valid])
    mean_nk = float(sig["RSP_Rate"].iloc[15_000:].mean())
    print(f"\nAGREEMENT rsp vs neurokit2: mean rate {mean_ours:.2f} vs {mean_nk:.2f} /min; "
          f"per-breath |diff| median {np.median(d):.2f} /min")
    assert abs(mean_ours - mean_nk) < 1.0
    assert np.median(d) < 1.0


def test_a_held_breath_shows_as_inspiratory_pause() -> None:
    x, on = synth_rsp(90.0, FS, 15.0, seed=1, pauses={8: 1.2, 14: 2.0})
    feats = run(x, [40])
    t_on, pause = _per_breath(feats, "rsp_insp_pause_s")
    k8 = int(np.abs(t_on - on[8]).argmin())
    k14 = int(np.abs(t_on - on[14]).argmin())
    normal = np.delete(pause, [k8, k14])
    print(f"\nAGREEMENT rsp pause: held 1.2 s -> {pause[k8]:.2f} s, 2.0 s -> {pause[k14]:.2f} s, "
          f"normal breaths median {np.median(normal):.2f} s")
    assert pause[k8] - np.median(normal) == pytest.approx(1.2, abs=0.3)
    assert pause[k14] - np.median(normal) == pytest.approx(2.0, abs=0.3)
    assert normal.max() < 0.6


def test_amplitude_follows_the_belt() -> None:
    x, _ = synth_rsp(60.0, FS, 15.0, seed=1)
    small = [f.value for f in run(0.5 * x, [40]) if f.name == "rsp_breath_amp"]
    big = [f.value for f in run(2.0 * x, [40]) if f.name == "rsp_breath_amp"]
    assert np.median(big) / np.median(small) == pytest.approx(4.0, rel=0.05)


def test_block_size_does_not_change_the_features() -> None:
    x, _ = synth_rsp(60.0, FS, 15.0, seed=5)

    def key(fs: list[Feature]) -> list[tuple]:
        return sorted((f.name, f.t_ns, round(f.value, 9) if f.valid else None, f.reason)
                      for f in fs)

    ref = key(run(x, [x.size]))
    assert key(run(x, [7, 400, 33])) == ref


def test_flat_belt_is_invalid_and_no_breaths_are_made_up() -> None:
    x, _ = synth_rsp(80.0, FS, 15.0, seed=5)
    bad = np.zeros(x.size, np.uint8)
    x[30_000:60_000] = x[30_000]
    bad[35_000:60_000] = 16  # the pipeline's Quality marks flat after 5 s
    feats = run(x, [40], bad)
    inside = [f for f in feats if f.name == "rsp_rate_bpm"
              and 36.0 <= (f.t_ns - T0_NS) / 1e9 <= 60.0]
    assert inside and all(not f.valid and f.reason == "flat" for f in inside)
    t_on, _ = _per_breath(feats, "rsp_breath_rate_bpm")
    assert not ((t_on > 31.0) & (t_on < 59.0)).any()
