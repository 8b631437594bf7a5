"""FeaturePipeline on SampleBlocks: vitals and event windows agree with what the signals
hold; bad input (flat, NaN, saturation, lead-off, gaps, odd blocks) never raises and gives
invalid features with the reason; block size does not change any value."""

from __future__ import annotations

import numpy as np
import pytest

from edge.features import Feature, FeatureConfig, FeaturePipeline
from hil.benchmarks.features import (
    EEG_CHANNELS,
    T0_NS,
    bateman_unit,
    beats_from_rate,
    eeg_info,
    hub_info,
    make_blocks,
    synth_ecg,
    synth_eeg,
    synth_ppg,
    synth_rsp,
)

FS = 1000.0
DUR = 50.0
EVENT_S = 30.0


def rig(dur: float = DUR, seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """EEG and hub signals with one event at EVENT_S: HR falls 8 bpm over 1-5 s after it,
    an SCR of 0.4 uS starts 2 s after it, a 1.5-s inspiratory hold, fingers cool."""
    t = np.arange(int(dur * FS)) / FS
    tau = t - EVENT_S
    dip = np.clip((tau - 0.5) / 5.0, 0, 1)
    hr = 70.0 - 8.0 * np.sin(np.pi * dip) ** 2 * (tau > 0.5)
    r = beats_from_rate(dur, hr, FS)
    ecg, _ = synth_ecg(dur, FS, seed=seed, r=r)
    ppg, _, _ = synth_ppg(dur, FS, seed=seed, r=r)
    rsp, on = synth_rsp(dur, FS, 15.0, seed=seed)
    k = int(np.searchsorted(on, EVENT_S))
    rsp, on = synth_rsp(dur, FS, 15.0, seed=seed, pauses={k: 1.5})
    eda = 5.0 + 0.4 * bateman_unit(tau - 2.0) + 0.002 * np.random.default_rng(seed)\
        .standard_normal(t.size)
    skt = 33.5 - 0.05 * np.clip(tau / 5.0, 0, 1) + 0.001 * np.random.default_rng(seed + 1)\
        .standard_normal(t.size)
    hub = np.column_stack((ecg, ppg, rsp, eda, skt))
    eeg = synth_eeg(dur, FS, 8, seed=seed, mains_uv=5.0)
    truth = {"rr_bpm": 60.0 / np.diff(on).mean()}
    if dur > EVENT_S + 6.0:
        base = 60.0 / np.diff(r[(r > EVENT_S - 3) & (r < EVENT_S)])
        after_s = FeatureConfig().event_after_s
        after = 60.0 / np.diff(r[(r >= EVENT_S - 1) & (r < EVENT_S + after_s)])
        truth.update(hr_base=base.mean(), hr_drop=after.min() - base.mean())
    return eeg, hub, truth


def stream(eeg: np.ndarray, hub: np.ndarray, sizes: list[int], until_s: float | None = None,
           eeg_status: np.ndarray | None = None, pipe: FeaturePipeline | None = None,
           eeg_index: np.ndarray | None = None, hub_index: np.ndarray | None = None
           ) -> tuple[FeaturePipeline, list[Feature]]:
    pipe = pipe or FeaturePipeline(eeg_info(), hub_info(), FeatureConfig(mains_hz=50.0))
    n = eeg.shape[0] if until_s is None else int(until_s * FS)
    eb = make_blocks(eeg_info(), eeg[:n], sizes, status=None if eeg_status is None
                     else eeg_status[:n])
    if eeg_index is not None:
        eb = [type(b)(b.stream, eeg_index[b.index], b.device_t, b.host_t_ns, b.raw, b.values,
                      b.trigger, b.status) for b in eb]
    hb = make_blocks(hub_info(), hub[:n], sizes)
    if hub_index is not None:
        hb = [type(b)(b.stream, hub_index[b.index], b.device_t, b.host_t_ns, b.raw, b.values,
                      b.trigger, b.status) for b in hb]
    out: list[Feature] = []
    for e, h in zip(eb, hb, strict=True):
        out += pipe.update(e)
        out += pipe.update(h)
    return pipe, out


@pytest.fixture(scope="module")
def full() -> tuple[FeaturePipeline, list[Feature], dict]:
    eeg, hub, truth = rig()
    pipe, feats = stream(eeg, hub, [20, 50, 33])
    return pipe, feats, truth


def test_summary_gives_the_vitals_of_the_signals(full) -> None:
    pipe, _, truth = full
    s = pipe.summary()
    print("\nSUMMARY " + ", ".join(f"{k}={f.value:.3g}{'' if f.valid else '!' + f.reason}"
                                   for k, f in s.items()))
    assert all(f.valid for f in s.values()), {k: f.reason for k, f in s.items() if not f.valid}
    assert s["hr_bpm"].value == pytest.approx(70.0, abs=2.0)
    assert s["rr_bpm"].value == pytest.approx(truth["rr_bpm"], abs=1.0)
    assert s["eda_us"].value == pytest.approx(5.0, abs=0.1)
    assert s["skt_c"].value == pytest.approx(33.45, abs=0.02)
    assert s["eeg_alpha_pow"].value > 5 * s["eeg_beta_pow"].value  # the 10-Hz rhythm
    assert s["hr_bpm"].unit == "bpm" and s["eda_us"].unit == "uS"


def test_event_window_has_a_fixed_layout_and_sees_the_responses(full) -> None:
    pipe, _, truth = full
    ev = pipe.event_window(int(T0_NS + EVENT_S * 1e9))
    assert ev.names == pipe.event_names()
    assert len(ev.names) == 11 + 8 * 5 * 2 + 2
    assert ev.ready
    f = ev.features
    bad = {n: g.reason for n, g in f.items() if not g.valid}
    assert not bad, bad
    print(f"\nEVENT hr_base {f['hr_base_bpm'].value:.1f} (true {truth['hr_base']:.1f}), "
          f"hr_min_delta {f['hr_min_delta_bpm'].value:.1f} (true {truth['hr_drop']:.1f}), "
          f"scr {f['eda_scr_latency_s'].value:.2f} s {f['eda_scr_amp_us'].value:.3f} uS, "
          f"pause {f['rsp_insp_pause_max_s'].value:.2f} s, skt_delta "
          f"{f['skt_delta_c'].value:.3f}")
    assert f["hr_base_bpm"].value == pytest.approx(truth["hr_base"], abs=2.0)
    assert f["hr_min_delta_bpm"].value == pytest.approx(truth["hr_drop"], abs=2.0)
    assert f["hr_delta_bpm"].value < -2.0
    assert f["eda_scr_latency_s"].value == pytest.approx(2.0, abs=0.5)
    assert f["eda_scr_amp_us"].value == pytest.approx(0.4, rel=0.1)
    assert f["rsp_insp_pause_max_s"].value == pytest.approx(1.5 + 0.15, abs=0.35)
    assert f["rsp_rate_bpm"].value == pytest.approx(truth["rr_bpm"], abs=3.0)
    # Fingers cool 0.05 degC over 5 s; the window sees the part before it closes.
    after_s = FeatureConfig().event_after_s
    assert f["skt_delta_c"].value == pytest.approx(-0.05 * min(after_s, 5.0) / 5.0, abs=0.01)
    assert f["eeg_O1_alpha_pow"].value > f["eeg_O1_beta_pow"].value
    values, valid = ev.vector()
    assert values.shape == (len(ev.names),) and valid.all() and np.isfinite(values).all()


def test_event_window_is_pending_until_its_windows_close() -> None:
    eeg, hub, _ = rig(40.0)
    pipe, _ = stream(eeg, hub, [40], until_s=EVENT_S + 2.0)
    ev = pipe.event_window(int(T0_NS + EVENT_S * 1e9))
    assert not ev.ready
    assert ev.features["hr_delta_bpm"].reason == "pending"
    assert ev.features["eda_scr_amp_us"].reason == "pending"
    values, valid = ev.vector()
    assert np.isnan(values[~valid]).all()


def test_block_size_does_not_change_any_value() -> None:
    eeg, hub, _ = rig(25.0, seed=3)
    _, a = stream(eeg, hub, [20])
    _, b = stream(eeg, hub, [50, 23, 37])

    def key(fs: list[Feature]) -> list[tuple]:
        # The last seconds may still wait in a chunk, depending on where blocks end.
        end = T0_NS + 20_000_000_000
        return sorted((f.name, f.t_ns, round(f.value, 9) if f.valid else None, f.reason)
                      for f in fs if f.t_ns < end)

    assert key(a) == key(b)
    assert len(key(a)) > 1000


def _latest(feats: list[Feature], name: str, t0: float, t1: float) -> list[Feature]:
    return [f for f in feats if f.name == name and t0 <= (f.t_ns - T0_NS) / 1e9 <= t1]


def test_a_flat_hub_gives_flat_reasons_not_numbers() -> None:
    eeg, hub, _ = rig(40.0)
    hub[15_000:32_000] = hub[15_000]  # every hub channel stuck for 17 s
    pipe, feats = stream(eeg, hub, [40], until_s=31.0)
    for name in ("ecg_hr_bpm", "ppg_hr_bpm", "rsp_rate_bpm", "eda_us"):
        inside = _latest(feats, name, 26.0, 30.0)
        assert inside and all(not f.valid and f.reason == "flat" for f in inside), name
    s = pipe.summary()
    assert not s["hr_bpm"].valid and s["hr_bpm"].reason == "flat"
    assert not s["rr_bpm"].valid and not s["eda_us"].valid


def test_nan_and_out_of_range_values_are_invalid_with_their_reason() -> None:
    eeg, hub, _ = rig(30.0)
    hub[10_000:14_000, 0] = np.nan  # ECG NaN
    hub[10_000:14_000, 3] = -1.0  # EDA negative: impossible, a rail or a fault
    eeg[10_000:14_000, 4] = np.nan  # C3
    _, feats = stream(eeg, hub, [40])
    assert all(f.reason == "nan" for f in _latest(feats, "ecg_hr_bpm", 11.0, 14.0))
    assert all(f.reason == "saturated" for f in _latest(feats, "eda_us", 11.0, 14.0))
    c3 = _latest(feats, "eeg_C3_alpha_pow", 11.0, 14.0)
    assert c3 and all(f.reason == "nan" and np.isnan(f.value) for f in c3)
    assert all(f.valid for f in _latest(feats, "eeg_C4_alpha_pow", 11.0, 14.0))


def test_eeg_rail_lead_off_bits_and_sample_gaps() -> None:
    eeg, hub, _ = rig(20.0)
    eeg[8_000:9_000, 5] = 0x7FFFFF * 4.5 / (2**23 - 1) / 24 * 1e6  # C4 at the positive rail
    status = np.full(eeg.shape[0], 0xC00000, np.uint32)
    status[12_000:13_500] |= 1 << (12 + 6)  # O1 P-side lead off
    index = np.arange(eeg.shape[0], dtype=np.int64)
    index[16_500:] += 250  # 250 samples lost before 16.5 s
    _, feats = stream(eeg, hub, [40], eeg_status=status, eeg_index=index)
    assert all(f.reason == "saturated" for f in _latest(feats, "eeg_C4_beta_de", 8.5, 9.0))
    o1 = _latest(feats, "eeg_O1_theta_pow", 12.5, 13.5)
    assert o1 and all(f.reason == "lead_off" for f in o1)
    gap = _latest(feats, "eeg_Fp1_alpha_pow", 16.9, 17.1)
    assert gap and all(f.reason == "gap" for f in gap)
    assert all(f.valid for f in _latest(feats, "eeg_O2_alpha_pow", 17.5, 19.0))


def test_odd_blocks_never_raise() -> None:
    pipe = FeaturePipeline(eeg_info(), hub_info())
    empty = make_blocks(hub_info(), np.zeros((0, 5)), 10)
    assert empty == [] and pipe.summary()["hr_bpm"].reason == "no_data"
    other = make_blocks(eeg_info(), np.zeros((10, 8)), 10)[0]
    assert pipe.update(type(other)("camera", *[getattr(other, f) for f in (
        "index", "device_t", "host_t_ns", "raw", "values", "trigger", "status")])) == []
    nan_hub = make_blocks(hub_info(), np.full((3000, 5), np.nan), 40)
    out = [f for b in nan_hub for f in pipe.update(b)]
    assert out and not any(f.valid for f in out)
    one = make_blocks(eeg_info(), synth_eeg(3.0, FS)[:, :8], 1)
    assert all(isinstance(pipe.update(b), list) for b in one[:50])


def test_only_the_channels_the_hub_declares_are_used() -> None:
    from sensors.blocks import StreamInfo

    info = StreamInfo("hub", FS, ("eda", "temp_ambient"), ("uS", "degC"), (1e-5, 1e-4),
                      (0.0, 0.0), "us")
    pipe = FeaturePipeline(None, info)
    assert set(pipe.hub) == {"eda"}
    ev = pipe.event_window(T0_NS)
    assert ev.features["hr_delta_bpm"].reason == "no_channel"
    assert EEG_CHANNELS[0] not in "".join(ev.names)


def test_agrees_with_the_hil_physio_model_truth() -> None:
    """On the hub simulator's own physiological model (if present): R peaks, pulse peaks,
    breath onsets and SCR onsets against its ground truth."""
    physio = pytest.importorskip("hil.sim.physio")
    from hil.sim.scenario import generate

    model = physio.PhysioModel(generate(90.0, 6, seed=5))
    hub = model.chunk(np.arange(90_000) / FS)
    truth = model.truth()
    pipe = FeaturePipeline(None, hub_info())
    feats = [f for b in make_blocks(hub_info(), hub, [40]) for f in pipe.update(b)]
    figures = []
    for name, ref, tol in (("ecg_peak", truth.r_peaks_s, 0.02),
                           ("ppg_peak", truth.ppg_peaks_s, 0.02),
                           ("rsp_breath_rate_bpm", truth.breath_onsets_s, 0.25),
                           ("eda_scr_amp_us", truth.scr_onsets_s[truth.scr_amps_us > 0.05], 0.5)):
        ours = np.array([(f.t_ns - T0_NS) / 1e9 for f in feats if f.name == name])
        ref = ref[(ref > 12.0) & (ref < 85.0)]
        near = np.abs(ours[:, None] - ref[None, :]).min(axis=0)
        figures.append(f"{name} max {near.max() * 1e3:.0f} ms over {ref.size}")
        assert near.max() <= tol, name
    print("\nAGREEMENT hil.sim.physio truth: " + "; ".join(figures))


def test_a_hub_sample_gap_is_invalid_and_no_interval_spans_it() -> None:
    eeg, hub, _ = rig(30.0)
    index = np.arange(hub.shape[0], dtype=np.int64)
    index[15_000:] += 400  # the hub lost 400 samples just before 15 s
    _, feats = stream(eeg, hub, [40], hub_index=index)
    for name in ("ecg_hr_bpm", "ppg_hr_bpm", "eda_us", "skt_c"):
        at = _latest(feats, name, 15.0, 16.01)  # the 1-s window holding the gap
        assert at and all(f.reason == "gap" for f in at), name
    rr = [f for f in feats if f.name == "ecg_rr_ms" and f.valid]
    assert rr and all(600 < f.value < 1100 for f in rr)  # none across the gap
    assert all(f.valid for f in _latest(feats, "ecg_hr_bpm", 22.0, 29.0))
