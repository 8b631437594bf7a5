"""Reproduce the shipped fusion model from scratch (training venv, TensorFlow needed).

    python -m models.train --seed 0 --out models/

1. the simulated cohort (:mod:`models.cohort`, cached under ``artifacts/``);
2. a ridge classifier per modality (the "no modality is trivial" check);
3. leave-one-subject-out: fused, visual-only and physiology-only networks, each fold
   also exported to int8 and run in the TFLite interpreter;
4. the final fused model on every subject, exported to ``mmme_fusion_int8.tflite``, plus
   ``test_inputs.npz`` (CI reference), ``testdata/wrong_model.tflite``, ``metrics.json``
   and ``MODEL_CARD.md``.

``--data DIR`` trains on a lab's own recordings instead (:mod:`models.dataset`).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from edge.fusion import COMPOSITES, MODALITIES, FusionModel
from models import cohort
from models.evaluate import Int8Runner, ridge_loso, uar, uf1

EPOCHS = 30
BATCH = 128
FOLDS = 4  # subject-grouped folds; 0 = true leave-one-subject-out (6x the time)
MODALITY_DROPOUT = 0.2  # per branch, fused model only: robustness to a missing modality


def _augment(data: dict[str, np.ndarray], idx: np.ndarray, rng: np.random.Generator,
             modality_dropout: float) -> dict[str, np.ndarray]:
    """Training rows plus their mirror images (u negated: the face flipped left-right);
    some rows lose one modality (zeroed, the runtime's "absent" value)."""
    vis = data["visual"][idx]
    flip = vis[:, :, ::-1, :].copy()
    flip[..., 0] *= -1.0
    out = {"visual": np.concatenate([vis, flip]),
           "eeg": np.tile(data["eeg"][idx], (2, 1)),
           "periph": np.tile(data["periph"][idx], (2, 1)),
           "composite": np.tile(data["composite"][idx], 2),
           "emotion": np.tile(data["emotion"][idx], 2)}
    if modality_dropout > 0:
        n = len(out["eeg"])
        which = rng.integers(0, len(MODALITIES), n)
        drop = rng.random(n) < modality_dropout * len(MODALITIES)
        for j, m in enumerate(MODALITIES):
            out[m][drop & (which == j)] = 0.0
    return out


def fit(data: dict[str, np.ndarray], idx: np.ndarray, modalities: tuple[str, ...], seed: int,
        epochs: int = EPOCHS):
    from models.fusion import build, compile_model

    rng = np.random.default_rng(seed)
    d = _augment(data, idx, rng, MODALITY_DROPOUT if len(modalities) == 3 else 0.0)
    counts = np.bincount(d["composite"], minlength=len(COMPOSITES))
    w = (len(d["composite"]) / (len(COMPOSITES) * counts))[d["composite"]].astype(np.float32)
    model = compile_model(build(modalities, seed=seed))
    model.fit({m: d[m] for m in MODALITIES},
              {"composite": d["composite"], "emotion": d["emotion"]},
              sample_weight={"composite": w, "emotion": np.ones_like(w)},
              epochs=epochs, batch_size=BATCH, shuffle=True, verbose=0)
    return model


def predict(model, data: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    out = model.predict({m: data[m][idx] for m in MODALITIES}, batch_size=256, verbose=0)
    return {k: np.asarray(v) for k, v in out.items()}


def int8_of(model, modalities: tuple[str, ...], data: dict[str, np.ndarray], idx: np.ndarray,
            seed: int) -> bytes:
    from models.export import to_int8
    from models.fusion import inference_copy

    return to_int8(inference_copy(model, modalities), {m: data[m][idx] for m in MODALITIES},
                   seed=seed)


def subject_folds(subject: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """Held-out subject sets: one subject each (folds = 0) or ``folds`` shuffled groups."""
    subs = np.unique(subject)
    if folds <= 0 or folds >= len(subs):
        return [np.array([s]) for s in subs]
    return np.array_split(np.random.default_rng(seed).permutation(subs), folds)


def loso(data: dict[str, np.ndarray], seed: int, epochs: int, log, folds: int = FOLDS
         ) -> dict[str, dict]:
    """Pooled out-of-subject probabilities per variant, float and int8: every event is
    predicted by networks that never saw its subject."""
    from models.fusion import VARIANTS

    subj = data["subject"]
    n = len(subj)
    res = {v: {"float_c": np.zeros((n, 3), np.float32), "float_e": np.zeros((n, 7), np.float32),
               "int8_c": np.zeros((n, 3), np.float32), "int8_e": np.zeros((n, 7), np.float32)}
           for v in VARIANTS}
    groups = subject_folds(subj, folds, seed)
    for k, held in enumerate(groups):
        tr, te = np.flatnonzero(~np.isin(subj, held)), np.flatnonzero(np.isin(subj, held))
        t0 = time.perf_counter()
        for v, mods in VARIANTS.items():
            model = fit(data, tr, mods, seed + k, epochs)
            p = predict(model, data, te)
            res[v]["float_c"][te], res[v]["float_e"][te] = p["composite"], p["emotion"]
            q = Int8Runner(int8_of(model, mods, data, tr, seed))({m: data[m][te] for m in
                                                                  MODALITIES})
            res[v]["int8_c"][te], res[v]["int8_e"][te] = q["composite"], q["emotion"]
        acc = float(np.mean(res["fused"]["float_c"][te].argmax(1) == data["composite"][te]))
        log(f"fold {k + 1}/{len(groups)} (subjects {held.tolist()}): fused acc {acc:.2f}, "
            f"{time.perf_counter() - t0:.0f} s")
    return res


def summarise(data: dict[str, np.ndarray], res: dict[str, dict]) -> dict:
    yc, ye = data["composite"], data["emotion"]
    table = {}
    for v, r in res.items():
        row = {}
        for kind in ("float", "int8"):
            pc, pe = r[f"{kind}_c"].argmax(1), r[f"{kind}_e"].argmax(1)
            row[kind] = {"uf1": uf1(yc, pc, 3), "uar": uar(yc, pc, 3),
                         "emotion_uf1": uf1(ye, pe, 7), "emotion_uar": uar(ye, pe, 7)}
        row["int8_agreement"] = float(np.mean(r["float_c"].argmax(1) == r["int8_c"].argmax(1)))
        row["int8_agreement_emotion"] = float(np.mean(r["float_e"].argmax(1)
                                                      == r["int8_e"].argmax(1)))
        table[v] = row
    return table


def latency_us(path: Path, n: int = 2000) -> dict[str, float]:
    """Median and p90 of single-threaded int8 inference (quantize + invoke + dequantize)."""
    m = FusionModel.load(path)
    rng = np.random.default_rng(0)
    v = rng.uniform(-0.2, 0.2, (28, 28, 3)).astype(np.float32)
    e = rng.standard_normal(80).astype(np.float32)
    p = rng.standard_normal(9).astype(np.float32)
    for _ in range(50):
        m.probabilities(v, e, p)
    t = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter_ns()
        m.probabilities(v, e, p)
        t[i] = (time.perf_counter_ns() - t0) / 1e3
    return {"p50_us": float(np.median(t)), "p90_us": float(np.percentile(t, 90))}


def reference_inputs(data: dict[str, np.ndarray], model, path: Path, out: Path,
                     n: int = 64, seed: int = 0) -> None:
    """Stored inputs with the int8 outputs the shipped model gives (CI checks exactness)."""
    rng = np.random.default_rng(seed)
    n = min(n, len(data["eeg"]))  # a small lab set has fewer events than the reference size
    idx = np.sort(rng.choice(len(data["eeg"]), n, replace=False))
    fm = FusionModel.load(path)
    q = {m: np.stack([fm.quantize(m, data[m][i]) for i in idx]) for m in MODALITIES}
    oc, oe = zip(*(fm.invoke_int8(q["visual"][j], q["eeg"][j], q["periph"][j])
                   for j in range(n)), strict=True)
    fp = predict(model, data, idx)
    np.savez_compressed(
        out, **{m: data[m][idx] for m in MODALITIES}, **{f"{m}_q": q[m] for m in MODALITIES},
        composite_q=np.stack(oc), emotion_q=np.stack(oe), float_composite=fp["composite"],
        float_emotion=fp["emotion"], label_composite=data["composite"][idx],
        label_emotion=data["emotion"][idx])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.train")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--subjects", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--data", type=Path, default=None,
                    help="a lab's own data (rig recordings or MMME layout), see models.dataset")
    ap.add_argument("--folds", type=int, default=FOLDS,
                    help="subject-grouped CV folds; 0 = leave-one-subject-out")
    ap.add_argument("--no-loso", action="store_true", help="final fit only (no evaluation)")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from models.export import write, wrong_model
    from models.fusion import FULL, inference_copy

    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f} s] {msg}", flush=True)

    if args.data is not None:
        from models.dataset import load_dir

        data = load_dir(args.data)
        source = f"lab data from {args.data}"
        names, counts = np.unique(data["subject_name"], return_counts=True)
        data_meta = {"simulated": False, "path": str(args.data),
                     "files": sorted(str(p.relative_to(args.data))
                                     for p in Path(args.data).rglob("*.mcap")),
                     "events_per_subject": {str(k): int(v) for k, v in
                                            zip(names, counts, strict=True)}}
    else:
        data = cohort.load_or_generate(args.subjects, args.seed)
        source = (f"simulated cohort: {args.subjects} subjects, seed {args.seed}, "
                  f"models/cohort.py v{cohort.COHORT_VERSION}")
        data_meta = {"simulated": True}
    log(f"data: {len(data['eeg'])} events, {len(np.unique(data['subject']))} subjects")
    ridge = {name: dict(zip(("uf1", "uar"), ridge_loso(data, mods), strict=True))
             for name, mods in (("visual", ("visual",)), ("eeg", ("eeg",)),
                                ("periph", ("periph",)), ("eeg+periph", ("eeg", "periph")),
                                ("all", MODALITIES))}
    log(f"ridge LOSO composite UF1: {({k: round(v['uf1'], 3) for k, v in ridge.items()})}")
    table = None
    if not args.no_loso:
        res = loso(data, args.seed, args.epochs, log, args.folds)
        table = summarise(data, res)
        for v, row in table.items():
            log(f"{v}: float UF1 {row['float']['uf1']:.3f} UAR {row['float']['uar']:.3f} | "
                f"int8 UF1 {row['int8']['uf1']:.3f} UAR {row['int8']['uar']:.3f} | "
                f"agreement {row['int8_agreement']:.3f}")
    keras.utils.set_random_seed(args.seed)
    all_idx = np.arange(len(data["eeg"]))
    model = fit(data, all_idx, FULL, args.seed, args.epochs)
    out = args.out
    path = write(out / "mmme_fusion_int8.tflite", int8_of(model, FULL, data, all_idx, args.seed))
    write(out / "testdata" / "wrong_model.tflite", wrong_model())
    reference_inputs(data, inference_copy(model), path, out / "test_inputs.npz", seed=args.seed)
    lat = latency_us(path)
    train_s = time.perf_counter() - t_start
    metrics = {
        "source": source, "data": data_meta, "seed": args.seed, "epochs": args.epochs,
        "folds": len(subject_folds(data["subject"], args.folds, args.seed)),
        "n_events": len(data["eeg"]), "n_subjects": len(np.unique(data["subject"])),
        "class_counts": {"composite": np.bincount(data["composite"], minlength=3).tolist(),
                         "emotion": np.bincount(data["emotion"], minlength=7).tolist()},
        "ridge_loso": ridge, "loso": table, "size_bytes": path.stat().st_size,
        "params": int(model.count_params()), "latency": lat, "train_seconds": train_s,
        "quantization": FusionModel.load(path).input_quantization(),
        "versions": {"tensorflow": __import__("tensorflow").__version__,
                     "keras": keras.__version__, "numpy": np.__version__},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    from models.card import write_card

    write_card(out / "MODEL_CARD.md", metrics)
    log(f"wrote {path} ({path.stat().st_size} bytes), p50 {lat['p50_us']:.0f} us; "
        f"total {train_s:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
