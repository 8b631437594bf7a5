"""EDA features: SCR onsets and amplitudes against the known truth and NeuroKit2;
``scr_after`` gives latency and amplitude of the response to an event, "pending" until
its window closed, amplitude 0 when there is none, and the reason when data were bad."""

from __future__ import annotations

import numpy as np
import pytest

from edge.features import EdaFeatures, Feature
from edge.features.base import Boxcar
from hil.benchmarks.features import T0_NS, synth_eda

nk = pytest.importorskip("neurokit2")
FS = 1000.0
ONSETS = np.array([8.0, 19.5, 31.0, 45.2, 60.0, 71.3])
AMPS = np.array([0.3, 0.1, 0.5, 0.05, 0.2, 0.8])


def run(x: np.ndarray, sizes: list[int], bad: np.ndarray | None = None,
        step: EdaFeatures | None = None) -> tuple[EdaFeatures, list[Feature]]:
    """As the pipeline does: 1 kHz -> 25 Hz boxcar, then the step."""
    step, dec = step or EdaFeatures(25.0), Boxcar(40, 1)
    t = T0_NS + np.round(np.arange(x.size) * 1e6).astype(np.int64)
    bad = np.zeros(x.size, np.uint8) if bad is None else bad
    out, a, i = [], 0, 0
    while a < x.size:
        b = min(a + sizes[i % len(sizes)], x.size)
        tt, xx, bb = dec.update(t[a:b], x[a:b, None], bad[a:b, None])
        out += step.update(tt, xx[:, 0], bb[:, 0])
        a, i = b, i + 1
    return step, out


def _scrs(feats: list[Feature]) -> tuple[np.ndarray, np.ndarray]:
    f = [g for g in feats if g.name == "eda_scr_amp_us" and g.valid]
    return np.array([(g.t_ns - T0_NS) / 1e9 for g in f]), np.array([g.value for g in f])


def _at(t_s: float) -> int:
    return int(T0_NS + t_s * 1e9)


def test_scr_onsets_and_amplitudes_match_the_known_truth() -> None:
    x = synth_eda(90.0, FS, ONSETS, AMPS, seed=1)
    _, feats = run(x, [40])
    on, amp = _scrs(feats)
    assert on.size == ONSETS.size  # each response once, nothing made up from the drift
    err = np.abs(on - ONSETS)
    amp_err = np.abs(amp - AMPS) / AMPS
    print(f"\nAGREEMENT eda truth: SCR onset error max {err.max():.3f} s; amplitude error max "
          f"{amp_err.max() * 100:.1f}%")
    assert err.max() < 0.5
    assert amp_err.max() < 0.1


def test_scr_onsets_match_neurokit2() -> None:
    x = synth_eda(90.0, FS, ONSETS, AMPS, seed=1)
    _, feats = run(x, [33])
    on, _ = _scrs(feats)
    _, info = nk.eda_process(x, sampling_rate=int(FS))
    ref = np.asarray(info["SCR_Onsets"]) / FS
    d = np.abs(on[:, None] - ref[None, :]).min(axis=1)
    # And on NeuroKit2's own simulated EDA (SCRs it places evenly).
    y = nk.eda_simulate(duration=90, sampling_rate=int(FS), scr_number=6, drift=-0.01,
                        noise=0.01, random_state=4)
    _, feats2 = run(y, [33])
    on2, _ = _scrs(feats2)
    _, info2 = nk.eda_process(y, sampling_rate=int(FS))
    ref2 = np.asarray(info2["SCR_Onsets"]) / FS
    ref2 = ref2[ref2 > 6.0]
    d2 = np.abs(on2[:, None] - ref2[None, :]).min(axis=0)
    print(f"\nAGREEMENT eda vs neurokit2: onset |diff| max {d.max():.3f} s ({d.size} SCRs, "
          f"our signal); {d2.max():.3f} s ({d2.size} SCRs, nk.eda_simulate)")
    assert d.max() < 0.5 and d2.max() < 0.5


def test_scr_after_an_event_gives_latency_amplitude_and_rise() -> None:
    x = synth_eda(90.0, FS, ONSETS, AMPS, seed=1)
    step, _ = run(x, [40])
    r = step.scr_after(_at(ONSETS[2] - 2.0), (1.0, 5.0))
    assert all(f.valid for f in r.values())
    assert r["eda_scr_latency_s"].value == pytest.approx(2.0, abs=0.5)
    assert r["eda_scr_amp_us"].value == pytest.approx(0.5, rel=0.1)
    assert 0.5 < r["eda_scr_rise_s"].value < 3.0
    # No response 1-5 s after t = 50 s: amplitude 0 (valid), latency invalid "no_scr".
    none = step.scr_after(_at(50.0))
    assert none["eda_scr_amp_us"].valid and none["eda_scr_amp_us"].value == 0.0
    assert not none["eda_scr_latency_s"].valid and none["eda_scr_latency_s"].reason == "no_scr"
    # A response that started before the window does not count.
    early = step.scr_after(_at(ONSETS[4] - 0.5))
    assert early["eda_scr_amp_us"].value == 0.0


def test_scr_after_is_pending_until_the_window_has_closed() -> None:
    x = synth_eda(90.0, FS, ONSETS, AMPS, seed=1)
    step = EdaFeatures(25.0)
    dec = Boxcar(40, 1)
    t = T0_NS + np.round(np.arange(x.size) * 1e6).astype(np.int64)
    bad = np.zeros((x.size, 1), np.uint8)

    def upto(t_s: float, since_s: float) -> None:
        a, b = int(since_s * FS), int(t_s * FS)
        tt, xx, bb = dec.update(t[a:b], x[a:b, None], bad[a:b])
        step.update(tt, xx[:, 0], bb[:, 0])

    upto(31.6, 0.0)  # the SCR that starts at 31 s is still rising
    assert all(f.reason == "pending" for f in step.scr_after(_at(29.0)).values())
    upto(40.0, 31.6)  # it has peaked: final
    r = step.scr_after(_at(29.0))
    assert r["eda_scr_latency_s"].valid
    assert r["eda_scr_latency_s"].value == pytest.approx(2.0, abs=0.5)
    # A quiet window is pending until it has passed, then "no response".
    assert all(f.reason == "pending" for f in step.scr_after(_at(36.0)).values())
    upto(42.0, 40.0)
    assert step.scr_after(_at(36.0))["eda_scr_amp_us"].value == 0.0


def test_scr_after_reports_bad_data_in_the_window() -> None:
    x = synth_eda(60.0, FS, ONSETS[:3], AMPS[:3], seed=1)
    bad = np.zeros(x.size, np.uint8)
    x[40_000:46_000] = np.nan
    bad[40_000:46_000] = 4
    step, feats = run(x, [40], bad)
    r = step.scr_after(_at(38.0))  # window 39-43 s: holds the NaN stretch
    assert all(not f.valid and f.reason == "nan" for f in r.values())
    ticks = [f for f in feats if f.name == "eda_us" and 41.0 <= (f.t_ns - T0_NS) / 1e9 <= 46.0]
    assert ticks and all(not f.valid and f.reason == "nan" for f in ticks)


def test_tonic_level_tracks_the_signal_and_blocks_do_not_matter() -> None:
    x = synth_eda(60.0, FS, ONSETS[:3], AMPS[:3], seed=2)
    _, one = run(x, [x.size])
    _, many = run(x, [7, 500, 31])

    def key(fs: list[Feature]) -> list[tuple]:
        return sorted((f.name, f.t_ns, round(f.value, 9) if f.valid else None, f.reason)
                      for f in fs)

    assert key(one) == key(many)
    scl = np.array([f.value for f in one if f.name == "eda_scl_us" and f.valid])
    assert np.all((scl > 4.7) & (scl < 5.6))
