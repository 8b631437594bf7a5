"""No feature step and not the spotter raises on any input (Hypothesis).

Inputs: blocks of 1 to 5000 samples in random sizes; NaN and inf; flat lines; saturation
(values at a rail, and values far beyond any physical range); spikes; steps; gaps (time
jumps, with the gap bit on the first sample after); random quality bits; sample rates
across each step's supported range. Every output is a Feature whose value is finite when
valid and NaN with a reason when not. At least 500 examples per step.

The signals are built by numpy from a drawn recipe (segment kinds, lengths, a seed), not
element by element, so 500 examples of up to ~12 000 samples stay fast.
"""
# Overflow on 1e300 inputs is expected inside numpy; what matters is the features' verdict.

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.features import Feature
from edge.features.base import BAD_GAP, Boxcar, Quality
from edge.features.ecg import EcgFeatures
from edge.features.eda import EdaFeatures
from edge.features.eeg import EegFeatures
from edge.features.pipeline import FeatureConfig, FeaturePipeline
from edge.features.ppg import PpgFeatures
from edge.features.rsp import RspFeatures
from edge.features.skt import SktFeatures
from sensors.blocks import Frame, SampleBlock, StreamInfo

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
EXAMPLES = settings(max_examples=500, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
T0 = 1_000_000_000_000
SEG_S = 6.0  # longest segment, s (4 segments at most)
KINDS = ("sine", "pulses", "noise", "flat", "rail", "huge", "tiny", "spikes", "step", "nan",
         "inf", "zero")


def _segment(kind: str, n: int, fs: float, rng: np.random.Generator, scale: float) -> np.ndarray:
    t = np.arange(n) / fs
    if kind == "sine":
        return scale * np.sin(2 * np.pi * rng.uniform(0.05, 0.45 * fs) * t)
    if kind == "pulses":  # a beat-like train at 30-220 per min
        ph = (t * rng.uniform(0.5, 3.7)) % 1.0
        return scale * np.exp(-((ph - 0.2) / 0.03) ** 2) + 0.1 * scale * rng.normal(size=n)
    if kind == "noise":
        return scale * rng.normal(size=n)
    if kind == "flat":
        return np.full(n, scale * rng.uniform(-1, 1))
    if kind == "rail":
        return np.full(n, scale * (1.0 if rng.random() < 0.5 else -1.0))
    if kind == "huge":
        return rng.choice([1e300, -1e300, 1e30, -1e30], size=n)
    if kind == "tiny":
        return 1e-300 * rng.normal(size=n)
    if kind == "spikes":
        x = 0.01 * scale * rng.normal(size=n)
        idx = rng.integers(0, n, size=max(1, n // 50))
        x[idx] = scale * rng.choice([-1e3, 1e3], size=idx.size)
        return x
    if kind == "step":
        return np.where(t < t[-1] / 2, 0.0, scale * rng.uniform(-100, 100))
    if kind == "nan":
        x = scale * rng.normal(size=n)
        x[rng.random(n) < 0.5] = np.nan
        return x
    if kind == "inf":
        return np.full(n, np.inf if rng.random() < 0.5 else -np.inf)
    return np.zeros(n)


@st.composite
def streams(draw, fs_lo: float, fs_hi: float, channels: int = 1, max_seg: int = 3000):
    """(fs, t_ns, x (n, channels), bad (n, channels), index, block sizes)."""
    fs = draw(st.one_of(st.sampled_from([fs_lo, fs_hi]), st.floats(fs_lo, fs_hi)))
    seed = draw(st.integers(0, 2**32 - 1))
    segs = draw(st.lists(st.tuples(st.sampled_from(KINDS), st.integers(1, max_seg),
                                   st.integers(0, 3)), min_size=1, max_size=4))
    scale = draw(st.sampled_from([1e-6, 1e-3, 1.0, 50.0, 1e4, 1e8]))
    sizes = draw(st.lists(st.integers(1, 5000), min_size=1, max_size=6))
    rng = np.random.default_rng(seed)
    xs, ts, idx, bads = [], [], [], []
    t_next, i_next = T0, 0
    for kind, n_draw, gap in segs:
        n = max(1, min(n_draw, int(SEG_S * fs)))  # bounded in time too: fast at low rates
        x = np.column_stack([_segment(kind, n, fs, rng, scale) for _ in range(channels)])
        b = np.zeros((n, channels), np.uint8)
        if gap:  # a gap before this segment: samples lost, time jumps
            lost = int(rng.integers(1, int(10 * fs) + 2))
            i_next += lost
            t_next += int(lost * 1e9 / fs)
            b[0] |= BAD_GAP
        if gap == 3:  # random quality bits as well
            b |= rng.integers(0, 32, size=b.shape).astype(np.uint8)
        ts.append(t_next + np.round(np.arange(n) * 1e9 / fs).astype(np.int64))
        idx.append(i_next + np.arange(n, dtype=np.int64))
        t_next = int(ts[-1][-1]) + int(1e9 / fs)
        i_next += n
        xs.append(x)
        bads.append(b)
    return (fs, np.concatenate(ts), np.vstack(xs), np.vstack(bads), np.concatenate(idx), sizes)


def _blocks(n: int, sizes: list[int], max_blocks: int = 24):
    """Blocks in the drawn sizes, in turn; after ``max_blocks`` the rest in one (a cap on
    per-call overhead, so tiny sizes do not make an example slow)."""
    a, i = 0, 0
    while a < n:
        b = min(a + sizes[i % len(sizes)], n) if i < max_blocks - 1 else n
        yield a, b
        a, i = b, i + 1


def _check(feats: list[Feature]) -> None:
    for f in feats:
        assert isinstance(f, Feature)
        if f.valid:
            assert np.isfinite(f.value) and f.reason == "", f
        else:
            assert np.isnan(f.value) and f.reason, f


def _run_step(step, case, multi: bool = False) -> None:
    _fs, t, x, bad, _idx, sizes = case
    for a, b in _blocks(t.size, sizes):
        if multi:
            _check(step.update(t[a:b], x[a:b], bad[a:b]))
        else:
            _check(step.update(t[a:b], x[a:b, 0], bad[a:b, 0]))


# --- one test per step (supported rates: the steps' docstrings) ---------------------------------
@EXAMPLES
@given(streams(100.0, 1000.0))
def test_ecg_never_raises(case) -> None:
    _run_step(EcgFeatures(case[0]), case)


@EXAMPLES
@given(streams(25.0, 1000.0), st.booleans())
def test_ppg_never_raises(case, inverted: bool) -> None:
    _run_step(PpgFeatures(case[0], inverted=inverted), case)


@EXAMPLES
@given(streams(10.0, 100.0))
def test_rsp_never_raises(case) -> None:
    _run_step(RspFeatures(case[0]), case)


@EXAMPLES
@given(streams(10.0, 100.0), st.lists(st.floats(-200.0, 400.0), max_size=4))
def test_eda_and_its_event_window_never_raise(case, events_s: list[float]) -> None:
    step = EdaFeatures(case[0])
    _run_step(step, case)
    for e in events_s:
        feats = step.scr_after(T0 + int(e * 1e9))
        _check(list(feats.values()))


@EXAMPLES
@given(streams(1.0, 100.0))
def test_skt_never_raises(case) -> None:
    _run_step(SktFeatures(case[0]), case)


@EXAMPLES
@given(streams(100.0, 1000.0, channels=3, max_seg=1500),
       st.lists(st.floats(-10.0, 60.0), max_size=3))
def test_eeg_and_its_epochs_never_raise(case, epochs_s: list[float]) -> None:
    step = EegFeatures(case[0], ("Fp1", "Fp2", "O1"))
    _run_step(step, case, multi=True)
    for e in epochs_s:
        t0 = T0 + int(e * 1e9)
        _check(step.epoch(t0, t0 + 1_000_000_000))


@EXAMPLES
@given(streams(1.0, 1000.0, channels=2))
def test_quality_and_boxcar_never_raise_and_keep_shapes(case) -> None:
    _fs, t, x, _bad, idx, sizes = case
    q = Quality(2, np.array([-10.0, 0.0]), np.array([10.0, 100.0]), np.array([5, 50]),
                np.zeros(2), np.array([3, 0]))
    box = Boxcar(4, 2)
    for a, b in _blocks(t.size, sizes):
        bits = q.update(idx[a:b], x[a:b])
        assert bits.shape == (b - a, 2) and bits.dtype == np.uint8
        tt, xx, bb = box.update(t[a:b], x[a:b], bits)
        assert tt.shape[0] == xx.shape[0] == bb.shape[0]


HUB = ("ECG", "PPG", "RSP", "EDA", "SKT")


@EXAMPLES
@given(streams(100.0, 1000.0, channels=5, max_seg=800), st.booleans())
def test_the_feature_pipeline_never_raises(case, with_raw: bool) -> None:
    fs, t, x, _bad, idx, sizes = case
    info = StreamInfo("hub", fs, HUB, ("mV", "au", "au", "uS", "degC"), (1.0,) * 5,
                      (0.0,) * 5, "us")
    pipe = FeaturePipeline(None, info, FeatureConfig(hub_adc_bits=16 if with_raw else None))
    for a, b in _blocks(t.size, sizes):
        m = b - a
        raw = np.clip(np.nan_to_num(x[a:b]), -(2**15), 2**15 - 1).astype(np.int32)
        blk = SampleBlock("hub", idx[a:b], idx[a:b], t[a:b], raw, x[a:b],
                          np.zeros(m, np.uint8), np.zeros(m, np.uint32))
        _check(pipe.update(blk))
    _check(list(pipe.summary().values()))
    _check(list(pipe.event_window(int(t[t.size // 2])).features.values()))


# --- the spotter ---------------------------------------------------------------------------------
FRAME_KINDS = ("face", "face", "face", "shift", "black", "white", "noise", "small", "half")


@pytest.fixture(scope="module")
def faces() -> list[np.ndarray]:
    from hil.sim.camera import SimCamera
    from hil.sim.scenario import ExpressionEvent, Scenario

    me = ExpressionEvent(0.1, 0.2, 0.35, ("AU6", "AU12"), "happy", intensity=0.9)
    cam = SimCamera(Scenario(duration_s=0.5, expressions=(me,)), fps=60.0)
    return [fr.luma for fr in cam.offline(0.0, 0.5)]


@settings(max_examples=500, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(FRAME_KINDS), st.integers(0, 29), st.integers(-3, 40),
                          st.integers(-5_000_000, 200_000_000)), min_size=1, max_size=10),
       st.integers(0, 2**32 - 1))
def test_the_spotter_never_raises(faces, frames, seed: int) -> None:
    from edge.spotting import Spotter

    rng = np.random.default_rng(seed)
    sp = Spotter(60.0)
    seq, t = 0, T0
    for kind, k, dseq, dt in frames:
        img = faces[k % len(faces)]
        if kind == "shift":
            img = np.roll(img, int(rng.integers(-20, 20)), axis=int(rng.integers(0, 2)))
        elif kind == "black":
            img = np.zeros_like(img)
        elif kind == "white":
            img = np.full_like(img, 255)
        elif kind == "noise":
            img = rng.integers(0, 256, img.shape, dtype=np.uint8)
        elif kind == "small":
            img = np.ascontiguousarray(img[::4, ::4])
        elif kind == "half":
            img = np.ascontiguousarray(img[: img.shape[0] // 2])
        seq, t = seq + dseq, t + dt  # drops, repeats and clock steps backwards
        for iv in sp.update(Frame(seq, t, img)):
            assert iv.kind in ("micro", "macro")


@pytest.mark.parametrize("make", [lambda: EcgFeatures(250.0), lambda: PpgFeatures(250.0)],
                         ids=["ecg", "ppg"])
def test_a_beat_step_recovers_after_values_that_overflow(make) -> None:
    """1e300 for a second overflows the filters; the step must not stay NaN for ever."""
    fs = 250.0
    rng = np.random.default_rng(1)
    t = np.arange(int(40 * fs)) / fs
    x = np.exp(-(((t * 1.2) % 1.0 - 0.2) / 0.03) ** 2) + 0.01 * rng.normal(size=t.size)
    x[int(15 * fs):int(16 * fs)] = 1e300
    step = make()
    tt = T0 + np.round(t * 1e9).astype(np.int64)
    feats = []
    for a, b in _blocks(t.size, [50], max_blocks=10**6):
        feats += step.update(tt[a:b], x[a:b], np.zeros(b - a, np.uint8))
    _check(feats)
    late = [f for f in feats if f.name.endswith("_hr_bpm") and f.t_ns > T0 + 30e9]
    assert late and all(f.valid for f in late)
    assert all(abs(f.value - 72.0) < 2.0 for f in late)
