"""Int8 multimodal fusion model on the device: load, check, quantize, invoke, explain.

The model (``models/mmme_fusion_int8.tflite``, built by ``python -m models.train``) takes
three inputs per spotted event and gives two probability heads:

* ``visual`` (1, 28, 28, 3): onset-to-apex flow u, v and optical strain, exactly
  :func:`edge.spotting.visual.visual_features` ``.stst`` (already scaled to [-1, 1]/[0, 1]);
* ``eeg`` (1, 80): per channel (``EEG_CHANNELS`` order) and band (delta..gamma) the
  differential entropy (40 values), then the log relative band power (40 values), both
  from ``FeaturePipeline.event_window(apex_ns)`` (1-s epoch around the apex), scaled by
  fixed constants (:func:`eeg_vector`);
* ``periph`` (1, 9): ``PERIPH_NAMES`` from the same event window plus a window 10 s
  earlier (breathing-rate baseline), scaled by ``PERIPH_SCALE`` (:func:`periph_vector`).

Scaling is fixed and documented here (never fitted per sample), so every feature is of
order 1 before the per-tensor int8 quantization: one shared scale would otherwise crush
the small-range features (a 0.1 degC temperature change next to a 10 bpm heart rate).
Missing or invalid features become 0 (the "no information" value of each scaled feature).

No TensorFlow here: the interpreter is ai-edge-litert, else tflite-runtime.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COMPOSITES = ("negative", "positive", "surprise")
EMOTIONS = ("angry", "disgust", "fear", "sad", "happy", "surprise", "tense")
MODALITIES = ("visual", "eeg", "periph")
EEG_CHANNELS = ("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2")
BANDS = ("delta", "theta", "alpha", "beta", "gamma")
EEG_DIM = 2 * len(EEG_CHANNELS) * len(BANDS)
VISUAL_SHAPE = (28, 28, 3)
PERIPH_NAMES = (
    "hr_delta_bpm", "hr_min_delta_bpm", "eda_scr_amp_us", "eda_scr_latency_s",
    "eda_scr_rise_s", "eda_scr_present", "rsp_rate_change_bpm", "rsp_insp_pause_max_s",
    "skt_delta_c",
)
# Divide by these so a typical response is about 1 (see the module doc).
PERIPH_SCALE = np.array([5.0, 5.0, 0.5, 3.0, 3.0, 1.0, 3.0, 1.0, 0.1], np.float32)
DE_CENTER_NAT, DE_SCALE_NAT = 3.0, 2.0  # DE of 1-s bands spans about 1..6 nats
LOGREL_CENTER, LOGREL_SCALE = -2.5, 2.5  # ln(band / total power) spans about -6..0
CLIP = 4.0
BASELINE_BEFORE_S = 10.0  # the breathing baseline window is taken this long before apex

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "mmme_fusion_int8.tflite"
# name -> (shape, dtype) the runtime relies on; checked at load.
INPUT_SPEC: dict[str, tuple[tuple[int, ...], str]] = {
    "visual": ((1, *VISUAL_SHAPE), "int8"),
    "eeg": ((1, EEG_DIM), "int8"),
    "periph": ((1, len(PERIPH_NAMES)), "int8"),
}
OUTPUT_SPEC: dict[str, tuple[tuple[int, ...], str]] = {
    "composite": ((1, len(COMPOSITES)), "int8"),
    "emotion": ((1, len(EMOTIONS)), "int8"),
}


class ModelSpecError(ValueError):
    """The model file is missing, unreadable or not the fusion model this runtime expects."""


# --------------------------------------------------------------------- feature layout
def _finite(x: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(x), x, 0.0)


def eeg_vector(values: Mapping[str, float]) -> np.ndarray:
    """(80,) float32 model input from event-window values ``eeg_{ch}_{band}_{pow,de}``.

    A channel with any invalid band (blink on a frontal site, lead-off) is all zeros.
    """
    de = np.array([[values.get(f"eeg_{c}_{b}_de", np.nan) for b in BANDS]
                   for c in EEG_CHANNELS], np.float64)
    pw = np.array([[values.get(f"eeg_{c}_{b}_pow", np.nan) for b in BANDS]
                   for c in EEG_CHANNELS], np.float64)
    ok = np.all(np.isfinite(de) & np.isfinite(pw) & (pw > 0), axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        logrel = np.log(pw / pw.sum(axis=1, keepdims=True))
    de_s = (de - DE_CENTER_NAT) / DE_SCALE_NAT
    lr_s = (logrel - LOGREL_CENTER) / LOGREL_SCALE
    out = np.concatenate([np.where(ok, de_s, 0.0).ravel(), np.where(ok, lr_s, 0.0).ravel()])
    return np.clip(_finite(out), -CLIP, CLIP).astype(np.float32)


def periph_vector(values: Mapping[str, float],
                  before: Mapping[str, float] | None = None) -> np.ndarray:
    """(9,) float32 model input (``PERIPH_NAMES`` order) from event-window values.

    ``before``: values of ``event_window(apex_ns - BASELINE_BEFORE_S)``, the breathing-rate
    baseline; without it the rate change is 0 (unknown). An SCR-free window (amplitude 0)
    has latency and rise 0 and ``eda_scr_present`` 0.
    """
    nan = float("nan")
    amp = float(values.get("eda_scr_amp_us", nan))
    present = 1.0 if np.isfinite(amp) and amp > 0 else 0.0
    rate = float(values.get("rsp_rate_bpm", nan))
    base = float(before.get("rsp_rate_bpm", nan)) if before is not None else nan
    raw = np.array([
        values.get("hr_delta_bpm", nan), values.get("hr_min_delta_bpm", nan), amp,
        values.get("eda_scr_latency_s", nan) if present else 0.0,
        values.get("eda_scr_rise_s", nan) if present else 0.0,
        present, rate - base, values.get("rsp_insp_pause_max_s", nan),
        values.get("skt_delta_c", nan),
    ], np.float64)
    return np.clip(_finite(raw / PERIPH_SCALE), -CLIP, CLIP).astype(np.float32)


def window_values(window: object) -> dict[str, float]:
    """``EventWindow`` -> {name: value} with NaN for invalid features."""
    vals, _ok = window.vector()  # type: ignore[attr-defined]
    return dict(zip(window.names, vals.tolist(), strict=True))  # type: ignore[attr-defined]


def event_inputs(pipeline: object, apex_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """(eeg, periph) inputs for an event whose apex is at host time ``apex_ns``.

    Call once ``pipeline.event_window(apex_ns).ready`` (about 7 s after the apex)."""
    now = window_values(pipeline.event_window(apex_ns))  # type: ignore[attr-defined]
    before = window_values(pipeline.event_window(  # type: ignore[attr-defined]
        apex_ns - int(BASELINE_BEFORE_S * 1e9)))
    return eeg_vector(now), periph_vector(now, before)


def _check_integrity(p: Path, data: bytes) -> None:
    """A damaged model must be an error, not a crash: tflite-runtime 2.14 segfaults on a
    truncated flatbuffer. With a ``.sha256`` sidecar (written by models.export) the hash
    must match; without one the file is first opened by a throwaway child process."""
    sidecar = Path(f"{p}.sha256")
    if sidecar.is_file():
        want = sidecar.read_text().split()[0] if sidecar.read_text().split() else ""
        if hashlib.sha256(data).hexdigest() != want:
            raise ModelSpecError(f"{p}: checksum does not match {sidecar.name} "
                                 "(file damaged, truncated or replaced without its sidecar)")
        return
    code = ("import sys; from edge.fusion import interpreter_class; "
            "c, _ = interpreter_class(); i = c(model_path=sys.argv[1]); i.allocate_tensors()")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(root), os.environ.get("PYTHONPATH", "")])}
    probe = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True,
                           text=True, timeout=60, env=env)
    if probe.returncode != 0:
        why = (probe.stderr.strip().splitlines() or [f"exit status {probe.returncode}"])[-1]
        raise ModelSpecError(f"{p}: the interpreter cannot load it ({why[:200]})")


# --------------------------------------------------------------------- interpreter
def interpreter_class() -> tuple[type, str]:
    try:
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]
        return Interpreter, "tflite-runtime"
    except ImportError as exc:
        raise ImportError("no TFLite interpreter: pip install ai-edge-litert "
                          "(or tflite-runtime with numpy<2 on Python <= 3.11)") from exc


def _named_details(interpreter: object) -> tuple[dict[str, dict], dict[str, dict]]:
    """Input and output tensor details keyed by signature name ("visual", "composite").

    The serving signature names them; without one (an older converter), inputs are named
    by their tensor name and outputs by their order."""
    try:
        runner = interpreter.get_signature_runner()  # type: ignore[attr-defined]
        return dict(runner.get_input_details()), dict(runner.get_output_details())
    except (ValueError, AttributeError, RuntimeError):
        ins = {str(d["name"]): d for d in interpreter.get_input_details()}  # type: ignore[attr-defined]
        outs = {str(d["name"]): d for d in interpreter.get_output_details()}  # type: ignore[attr-defined]
        return ins, outs


def _match(details: dict[str, dict], spec: dict[str, tuple[tuple[int, ...], str]], what: str
           ) -> dict[str, dict]:
    """Map spec names to tensor details (a name matches when it contains the spec name)
    and report every difference at once."""
    found: dict[str, dict] = {}
    problems: list[str] = []
    if len(details) != len(spec):
        problems.append(f"{len(details)} {what}s {sorted(details)}, expected {len(spec)} "
                        f"({', '.join(spec)})")
    for key, (shape, dtype) in spec.items():
        hits = [d for name, d in details.items() if key in name.lower()]
        if len(hits) != 1:
            problems.append(f"{what} {key!r}: {len(hits)} tensors named like it in "
                            f"{sorted(details)}")
            continue
        d = hits[0]
        got_shape = tuple(int(s) for s in d["shape"])
        got_dtype = np.dtype(d["dtype"]).name
        if got_shape != shape:
            problems.append(f"{what} {key!r}: shape {got_shape}, expected {shape}")
        if got_dtype != dtype:
            problems.append(f"{what} {key!r}: dtype {got_dtype}, expected {dtype}")
        scale, _zp = d["quantization"]
        if dtype == "int8" and not scale:
            problems.append(f"{what} {key!r}: not quantized (scale 0)")
        found[key] = d
    if problems:
        raise ModelSpecError("; ".join(problems))
    return found


@dataclass(frozen=True)
class FusionResult:
    composite: dict[str, float]  # probabilities over COMPOSITES
    emotion: dict[str, float]  # probabilities over EMOTIONS
    predicted: str  # most probable composite class
    predicted_emotion: str
    contributions: dict[str, float]  # per modality, >= 0, summing to 1 (or all 0)
    latency_us: float  # quantize + invoke + dequantize of the main inference


class FusionModel:
    """The int8 fusion model behind one :meth:`predict` call (single-threaded)."""

    def __init__(self, interpreter: object, path: Path, backend: str) -> None:
        self.path, self.backend = path, backend
        # Published in the rig's status: the file's own hash, so a swapped model shows.
        self.version = "fusion-int8-" + hashlib.sha256(Path(path).read_bytes()).hexdigest()[:10]
        self._it = interpreter
        ins, outs = _named_details(interpreter)
        problems = []
        for details, spec, what in ((ins, INPUT_SPEC, "input"), (outs, OUTPUT_SPEC, "output")):
            try:
                _match(details, spec, what)
            except ModelSpecError as exc:
                problems.append(str(exc))
        if problems:  # every difference, inputs and outputs, in one message
            raise ModelSpecError("; ".join(problems))
        self.inputs = _match(ins, INPUT_SPEC, "input")
        self.outputs = _match(outs, OUTPUT_SPEC, "output")
        self._in = {k: (int(d["index"]), *map(float, d["quantization"]))
                    for k, d in self.inputs.items()}
        self._out = {k: (int(d["index"]), *map(float, d["quantization"]))
                     for k, d in self.outputs.items()}

    @classmethod
    def load(cls, path: str | Path | None = None, num_threads: int = 1) -> FusionModel:
        """Load and check a model; raises :class:`ModelSpecError` naming what differs."""
        p = Path(path) if path is not None else DEFAULT_MODEL
        if not p.is_file():
            raise ModelSpecError(f"{p}: no such model file")
        data = p.read_bytes()
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise ModelSpecError(f"{p}: not a TFLite flatbuffer (no TFL3 identifier)")
        _check_integrity(p, data)
        interp_cls, backend = interpreter_class()
        try:
            it = interp_cls(model_content=data, num_threads=num_threads)
            it.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelSpecError(f"{p}: the interpreter cannot load it ({exc})") from exc
        try:
            return cls(it, p, backend)
        except ModelSpecError as exc:
            raise ModelSpecError(f"{p} is not the fusion model: {exc}") from exc

    # -- quantization ------------------------------------------------------------------
    def quantize(self, name: str, x: np.ndarray) -> np.ndarray:
        """Float -> int8 with the model's own (scale, zero point) for input ``name``."""
        _, scale, zp = self._in[name]
        q = np.round(np.asarray(x, np.float32) / np.float32(scale)) + zp
        return np.clip(q, -128, 127).astype(np.int8)

    def dequantize_input(self, name: str, q: np.ndarray) -> np.ndarray:
        _, scale, zp = self._in[name]
        return ((q.astype(np.float32) - zp) * np.float32(scale)).astype(np.float32)

    def input_quantization(self) -> dict[str, tuple[float, int]]:
        return {k: (v[1], int(v[2])) for k, v in self._in.items()}

    # -- inference -----------------------------------------------------------------------
    def invoke_int8(self, visual_q: np.ndarray, eeg_q: np.ndarray, periph_q: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw int8 in, raw int8 out (composite, emotion): what the CI reference checks."""
        it = self._it
        for name, q in (("visual", visual_q), ("eeg", eeg_q), ("periph", periph_q)):
            it.set_tensor(self._in[name][0], q.reshape(INPUT_SPEC[name][0]))  # type: ignore[attr-defined]
        it.invoke()  # type: ignore[attr-defined]
        return (it.get_tensor(self._out["composite"][0]).reshape(-1).copy(),  # type: ignore[attr-defined]
                it.get_tensor(self._out["emotion"][0]).reshape(-1).copy())  # type: ignore[attr-defined]

    def _dequant_out(self, name: str, q: np.ndarray) -> np.ndarray:
        _, scale, zp = self._out[name]
        return (q.astype(np.float32) - zp) * np.float32(scale)

    def probabilities(self, visual: np.ndarray, eeg: np.ndarray, periph: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Float inputs -> (composite (3,), emotion (7,)) float32 probabilities."""
        c, e = self.invoke_int8(self.quantize("visual", visual), self.quantize("eeg", eeg),
                                self.quantize("periph", periph))
        return self._dequant_out("composite", c), self._dequant_out("emotion", e)

    def predict(self, visual: np.ndarray, eeg: np.ndarray, periph: np.ndarray,
                contributions: bool = True) -> FusionResult:
        """One event. ``visual`` (28, 28, 3), ``eeg`` (80,), ``periph`` (9,) float32 as
        built by :func:`edge.spotting.visual_features`, :func:`eeg_vector` and
        :func:`periph_vector`. Contributions: for each modality, the drop in the predicted
        class's probability when that modality's input is zeroed (3 extra invokes),
        clipped at 0 and normalised to sum 1."""
        x = {"visual": np.asarray(visual, np.float32), "eeg": np.asarray(eeg, np.float32),
             "periph": np.asarray(periph, np.float32)}
        for k, v in x.items():
            want = INPUT_SPEC[k][0][1:]
            if v.shape != want:
                raise ValueError(f"{k}: shape {v.shape}, expected {want}")
        t0 = time.perf_counter_ns()
        pc, pe = self.probabilities(x["visual"], x["eeg"], x["periph"])
        lat = (time.perf_counter_ns() - t0) / 1e3
        k = int(np.argmax(pc))
        contrib = dict.fromkeys(MODALITIES, 0.0)
        if contributions:
            drops = np.empty(len(MODALITIES))
            for i, m in enumerate(MODALITIES):
                ablated = {**x, m: np.zeros_like(x[m])}
                drops[i] = pc[k] - self.probabilities(**ablated)[0][k]
            drops = np.maximum(drops, 0.0)
            total = float(drops.sum())
            if total > 0:
                contrib = {m: float(d / total) for m, d in zip(MODALITIES, drops, strict=True)}
        return FusionResult(
            composite={c: float(p) for c, p in zip(COMPOSITES, pc, strict=True)},
            emotion={e: float(p) for e, p in zip(EMOTIONS, pe, strict=True)},
            predicted=COMPOSITES[k], predicted_emotion=EMOTIONS[int(np.argmax(pe))],
            contributions=contrib, latency_us=lat,
        )
