"""The int8 fusion model on the device path: load, spec check, quantization, outputs.

Runs in the main venv (no TensorFlow): the shipped model, its stored CI inputs and the
wrong-model fixture are produced by ``python -m models.train``.
"""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from edge import fusion
from edge.fusion import (
    BANDS,
    COMPOSITES,
    EEG_CHANNELS,
    EMOTIONS,
    MODALITIES,
    PERIPH_NAMES,
    FusionModel,
    ModelSpecError,
    eeg_vector,
    periph_vector,
)

MODELS = Path(__file__).resolve().parent.parent / "models"
SHIPPED = MODELS / "mmme_fusion_int8.tflite"


@pytest.fixture(scope="module")
def model() -> FusionModel:
    return FusionModel.load()


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(MODELS / "test_inputs.npz") as z:
        return {k: z[k] for k in z.files}


def test_shipped_model_is_small_and_loads_through_the_default_path(model):
    assert model.path == SHIPPED
    assert SHIPPED.stat().st_size < 200 * 1024
    assert model.backend in ("ai-edge-litert", "tflite-runtime")


def test_stored_inputs_quantize_to_the_stored_int8_inputs(model, ref):
    for m in MODALITIES:
        q = np.stack([model.quantize(m, x) for x in ref[m]])
        assert np.array_equal(q, ref[f"{m}_q"]), m


def test_shipped_model_reproduces_stored_int8_outputs(model, ref):
    """LiteRT, which produced the stored outputs, reproduces them bit for bit. The last
    tflite-runtime (2.14, numpy 1.x) rounds some int8 kernels differently: measured
    within 2 LSB, and the same class for every stored input."""
    exact = model.backend == "ai-edge-litert"
    for j in range(len(ref["eeg"])):
        c, e = model.invoke_int8(ref["visual_q"][j], ref["eeg_q"][j], ref["periph_q"][j])
        for got, want in ((c, ref["composite_q"][j]), (e, ref["emotion_q"][j])):
            if exact:
                assert np.array_equal(got, want), j
            else:
                assert np.abs(got.astype(int) - want).max() <= 2, j
                assert np.argmax(got) == np.argmax(want), j


def test_int8_predictions_agree_with_the_float_network_on_stored_inputs(model, ref):
    pred = [int(np.argmax(model.probabilities(ref["visual"][j], ref["eeg"][j],
                                               ref["periph"][j])[0]))
            for j in range(len(ref["eeg"]))]
    agree = np.mean(np.array(pred) == ref["float_composite"].argmax(1))
    assert agree >= 0.95


def test_wrong_model_file_names_what_differs():
    with pytest.raises(ModelSpecError) as exc:
        FusionModel.load(MODELS / "testdata" / "wrong_model.tflite")
    msg = str(exc.value)
    assert "not the fusion model" in msg
    assert "1 inputs" in msg and "'visual'" in msg and "'emotion'" in msg
    assert "composite" in msg and "shape (1, 3)" not in msg  # the shared output matches


def test_truncated_and_foreign_files_give_a_clear_error(tmp_path):
    data = SHIPPED.read_bytes()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelSpecError, match=r"cut\.tflite"):
        FusionModel.load(cut)
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"PK\x03\x04 this is a zip file, not a model")
    with pytest.raises(ModelSpecError, match="not a TFLite flatbuffer"):
        FusionModel.load(junk)
    with pytest.raises(ModelSpecError, match="no such model file"):
        FusionModel.load(tmp_path / "missing.tflite")


def test_input_quantization_round_trips(model):
    rng = np.random.default_rng(3)
    for m, (shape, _) in fusion.INPUT_SPEC.items():
        scale, zp = model.input_quantization()[m]
        lo, hi = (-128 - zp) * scale, (127 - zp) * scale
        x = rng.uniform(lo, hi, shape[1:]).astype(np.float32)
        back = model.dequantize_input(m, model.quantize(m, x))
        assert np.max(np.abs(back - x)) <= scale / 2 + 1e-6, m
        q = rng.integers(-128, 128, shape[1:]).astype(np.int8)
        assert np.array_equal(model.quantize(m, model.dequantize_input(m, q)), q), m
        # Out of range saturates instead of wrapping around.
        assert model.quantize(m, np.full(shape[1:], hi * 10, np.float32)).min() == 127


def test_predict_gives_probabilities_and_contributions_that_sum_sensibly(model, ref):
    r = model.predict(ref["visual"][0], ref["eeg"][0], ref["periph"][0])
    assert tuple(r.composite) == COMPOSITES and tuple(r.emotion) == EMOTIONS
    assert abs(sum(r.composite.values()) - 1) < 0.02
    assert abs(sum(r.emotion.values()) - 1) < 0.03
    assert r.predicted == max(r.composite, key=r.composite.get)
    assert set(r.contributions) == set(MODALITIES)
    assert all(v >= 0 for v in r.contributions.values())
    assert abs(sum(r.contributions.values()) - 1) < 1e-6
    assert r.latency_us > 0


def test_contributions_are_zero_when_no_modality_carries_anything(model):
    r = model.predict(np.zeros((28, 28, 3), np.float32), np.zeros(80, np.float32),
                      np.zeros(9, np.float32))
    assert sum(r.contributions.values()) == 0.0


def test_contributions_follow_the_only_informative_modality(model, ref):
    """With EEG and peripheral inputs absent, only the visual input can matter."""
    j = int(np.argmax(np.abs(ref["visual"]).sum(axis=(1, 2, 3))))
    r = model.predict(ref["visual"][j], np.zeros(80, np.float32), np.zeros(9, np.float32))
    if sum(r.contributions.values()) > 0:
        assert r.contributions["visual"] == 1.0


def test_predict_rejects_wrong_input_shapes(model):
    with pytest.raises(ValueError, match="eeg"):
        model.predict(np.zeros((28, 28, 3)), np.zeros(40), np.zeros(9))


def test_falls_back_to_tflite_runtime_with_identical_results(monkeypatch, ref):
    """The fallback path, with LiteRT standing in for tflite-runtime's identical API
    (the real tflite-runtime runs this whole file in `make test-tflite`)."""
    Interpreter = pytest.importorskip("ai_edge_litert.interpreter").Interpreter

    fake = types.ModuleType("tflite_runtime.interpreter")
    fake.Interpreter = Interpreter  # the same API; stands in for the real package
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", types.ModuleType("tflite_runtime"))
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", fake)
    m = FusionModel.load()
    assert m.backend == "tflite-runtime"
    c, e = m.invoke_int8(ref["visual_q"][0], ref["eeg_q"][0], ref["periph_q"][0])
    assert np.array_equal(c, ref["composite_q"][0]) and np.array_equal(e, ref["emotion_q"][0])


def test_no_interpreter_installed_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    with pytest.raises(ImportError, match="ai-edge-litert"):
        FusionModel.load()


def test_device_path_never_imports_tensorflow():
    code = ("import sys, numpy as np; from edge.fusion import FusionModel; "
            "m = FusionModel.load(); m.predict(np.zeros((28,28,3)), np.zeros(80), np.zeros(9)); "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.split() == ["False", "False"]


# ---------------------------------------------------------------- feature layout
def _eeg_values(pow_uv2: float = 20.0) -> dict[str, float]:
    vals = {}
    for c in EEG_CHANNELS:
        for i, b in enumerate(BANDS):
            p = pow_uv2 / (i + 1)
            vals[f"eeg_{c}_{b}_pow"] = p
            vals[f"eeg_{c}_{b}_de"] = 0.5 * np.log(2 * np.pi * np.e * p)
    return vals


def test_eeg_vector_layout_is_de_then_log_relative_power_channel_major():
    vals = _eeg_values()
    vals["eeg_O2_gamma_de"] = fusion.DE_CENTER_NAT + 2 * fusion.DE_SCALE_NAT
    x = eeg_vector(vals)
    assert x.shape == (80,) and x.dtype == np.float32
    assert x[7 * 5 + 4] == pytest.approx(2.0)  # DE of O2 gamma: last of the first 40
    rel = (np.log(1 / np.arange(1, 6) / np.sum(1 / np.arange(1, 6))) - fusion.LOGREL_CENTER) \
        / fusion.LOGREL_SCALE
    assert np.allclose(x[40:45], rel, atol=1e-6)  # Fp1's relative powers
    # Relative power does not depend on the overall amplitude (electrode gain).
    assert np.allclose(eeg_vector(_eeg_values(200.0))[40:], x[40:], atol=1e-6)


def test_eeg_vector_zeroes_a_channel_with_an_invalid_band():
    vals = _eeg_values()
    vals["eeg_Fp1_alpha_pow"] = float("nan")  # a blink on Fp1
    x = eeg_vector(vals).reshape(2, 8, 5)
    assert np.all(x[:, 0] == 0) and np.all(x[:, 1] != 0)
    assert np.all(eeg_vector({}) == 0)


def test_periph_vector_scales_and_marks_an_absent_scr():
    vals = {"hr_delta_bpm": -5.0, "hr_min_delta_bpm": -10.0, "eda_scr_amp_us": 0.5,
            "eda_scr_latency_s": 1.5, "eda_scr_rise_s": 1.2, "rsp_rate_bpm": 12.0,
            "rsp_insp_pause_max_s": 1.0, "skt_delta_c": -0.1}
    x = periph_vector(vals, {"rsp_rate_bpm": 15.0})
    want = dict(zip(PERIPH_NAMES, x, strict=True))
    assert want["hr_delta_bpm"] == pytest.approx(-1.0)
    assert want["eda_scr_present"] == 1.0 and want["eda_scr_latency_s"] == pytest.approx(0.5)
    assert want["rsp_rate_change_bpm"] == pytest.approx(-1.0)
    assert want["skt_delta_c"] == pytest.approx(-1.0)
    none = dict(zip(PERIPH_NAMES, periph_vector({**vals, "eda_scr_amp_us": 0.0,
                                                  "eda_scr_latency_s": float("nan")}),
                    strict=True))
    assert none["eda_scr_present"] == 0.0 and none["eda_scr_latency_s"] == 0.0
    assert none["rsp_rate_change_bpm"] == 0.0  # no baseline window: unknown, not a change
    assert np.all(np.isfinite(periph_vector({})))
