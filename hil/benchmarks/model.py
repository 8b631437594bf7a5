"""``mmme-hil bench model [--json] [--n N] [--model PATH]``: the fusion model on this machine.

Loads the shipped int8 model through :class:`edge.fusion.FusionModel` (ai-edge-litert or
tflite-runtime, one thread), times N single-event inferences (quantize + invoke +
dequantize) on the stored CI inputs (``models/test_inputs.npz``), checks that the
interpreter reproduces the stored int8 outputs, and prints the LOSO table stored by
``python -m models.train`` (``models/metrics.json``). Agreement is the stored LOSO
float-vs-int8 figure; ``stored_exact`` says whether this interpreter matches the stored
outputs bit for bit. The last line is one JSON object::

    {"uf1_fused": x, "uf1_visual": y, "uf1_physio": z, "int8_agreement": a,
     "invoke_ms_p50": b, "size_kb": c}
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from edge.fusion import DEFAULT_MODEL, FusionModel

MODELS_DIR = DEFAULT_MODEL.parent


def time_invokes(model: FusionModel, inputs: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Microseconds per inference, cycling through the stored events."""
    k = len(inputs["eeg"])
    for i in range(min(50, n)):  # warm-up: first invokes allocate
        model.probabilities(inputs["visual"][i % k], inputs["eeg"][i % k], inputs["periph"][i % k])
    out = np.empty(n)
    for i in range(n):
        v, e, p = inputs["visual"][i % k], inputs["eeg"][i % k], inputs["periph"][i % k]
        t0 = time.perf_counter_ns()
        model.probabilities(v, e, p)
        out[i] = (time.perf_counter_ns() - t0) / 1e3
    return out


def stored_exact(model: FusionModel, ref: dict[str, np.ndarray]) -> bool:
    ok = True
    for j in range(len(ref["eeg"])):
        c, e = model.invoke_int8(ref["visual_q"][j], ref["eeg_q"][j], ref["periph_q"][j])
        ok &= bool(np.array_equal(c, ref["composite_q"][j]) and
                   np.array_equal(e, ref["emotion_q"][j]))
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mmme-hil bench model")
    ap.add_argument("--json", action="store_true", help="end with one JSON line (always)")
    ap.add_argument("--n", type=int, default=2000, help="timed inferences")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    args = ap.parse_args(argv)
    model = FusionModel.load(args.model, num_threads=1)
    with np.load(MODELS_DIR / "test_inputs.npz") as z:
        ref = {k: z[k] for k in z.files}
    us = time_invokes(model, ref, args.n)
    exact = stored_exact(model, ref)
    size_kb = args.model.stat().st_size / 1024
    print(f"model: {args.model} ({size_kb:.1f} KB), backend {model.backend}, 1 thread")
    print(f"inference over {args.n} events: p50 {np.median(us):.1f} us, "
          f"p90 {np.percentile(us, 90):.1f} us, max {us.max():.1f} us")
    print(f"stored int8 outputs reproduced exactly: {exact}")
    metrics_path = MODELS_DIR / "metrics.json"
    loso = json.loads(metrics_path.read_text()).get("loso") if metrics_path.is_file() else None
    result: dict[str, float | bool | None] = {
        "uf1_fused": None, "uf1_visual": None, "uf1_physio": None, "int8_agreement": None}
    if loso:
        print("LOSO (composite, pooled folds; stored by models.train):")
        print(f"  {'model':8s} {'UF1 fl':>7s} {'UAR fl':>7s} {'UF1 i8':>7s} {'UAR i8':>7s} "
              f"{'agree':>6s}")
        for v, row in loso.items():
            f, i = row["float"], row["int8"]
            print(f"  {v:8s} {f['uf1']:7.3f} {f['uar']:7.3f} {i['uf1']:7.3f} {i['uar']:7.3f} "
                  f"{row['int8_agreement']:6.3f}")
            result[f"uf1_{v}"] = round(f["uf1"], 4)
        result["int8_agreement"] = round(loso["fused"]["int8_agreement"], 4)
    else:
        print("no stored LOSO metrics (models/metrics.json)")
    result.update(invoke_ms_p50=round(float(np.median(us)) / 1e3, 4),
                  size_kb=round(size_kb, 1))
    result["stored_exact"] = exact
    print(json.dumps(result))
    return 0 if exact else 1


if __name__ == "__main__":
    raise SystemExit(main())
