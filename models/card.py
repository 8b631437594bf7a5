"""MODEL_CARD.md from the metrics ``models.train`` measured (no TensorFlow needed)."""

from __future__ import annotations

from pathlib import Path

from edge.fusion import (
    BANDS,
    COMPOSITES,
    EEG_CHANNELS,
    EMOTIONS,
    PERIPH_NAMES,
    PERIPH_SCALE,
)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _data_paragraph(m: dict) -> list[str]:
    d = m.get("data") or {"simulated": True}
    if d.get("simulated", True):
        return [
            "**Trained on simulated data only.** Every number below comes from a simulated "
            "cohort (the HIL scenario, physiology, EEG and face renderer of this repository), "
            "not from people. It shows that the pipeline, the quantization and the runtime "
            "work end to end; it says nothing about accuracy on real micro-expressions. "
            "Retrain on real data (`python -m models.train --data DIR`) before drawing any "
            "conclusion."]
    files = d.get("files", [])
    shown = ", ".join(f"`{f}`" for f in files[:20]) + (f" and {len(files) - 20} more"
                                                       if len(files) > 20 else "")
    per = ", ".join(f"{k} {v}" for k, v in d.get("events_per_subject", {}).items())
    return [
        f"**Trained on the recordings in `{d.get('path')}`** (`python -m models.train "
        f"--data`): {len(files)} recording(s) ({shown or 'MMME folder layout'}); labelled "
        f"events per subject: {per}. The figures below are only as good as that data: "
        "check how many subjects and events it holds before reading them."]


def _reproduce(m: dict) -> str:
    folds = 0 if m.get("folds", 0) == m.get("n_subjects") else m.get("folds", 0)
    d = m.get("data") or {"simulated": True}
    if d.get("simulated", True):
        return (f"`make train` (= `python -m models.train --seed {m['seed']} --folds {folds} "
                "--out models/`")
    return (f"`python -m models.train --data {d.get('path')} --seed {m['seed']} "
            f"--folds {folds} --epochs {m['epochs']}` (in `.venv-train`")


def write_card(path: Path, m: dict) -> None:
    q = m["quantization"]
    periph = ", ".join(f"{n}/{s:g}" for n, s in zip(PERIPH_NAMES, PERIPH_SCALE, strict=True))
    lines = [
        "# mmme_fusion_int8.tflite",
        "",
        *_data_paragraph(m),
        "",
        f"- data: {m['source']}; {m['n_events']} events, {m['n_subjects']} subjects; "
        f"composite counts {m['class_counts']['composite']} ({', '.join(COMPOSITES)}), "
        f"emotion counts {m['class_counts']['emotion']}",
        f"- network: visual STSTNet-style branch + EEG dense branch + peripheral dense "
        f"branch, concatenation, heads composite (3) and emotion (7); {m['params']} "
        f"parameters (models/fusion.py); {m['epochs']} epochs, seed {m['seed']}",
        f"- file: {m['size_bytes']} bytes ({m['size_bytes'] / 1024:.1f} KB), full-integer "
        "int8 (TFLITE_BUILTINS_INT8, int8 inputs and outputs)",
        f"- latency: median {m['latency']['p50_us']:.0f} us, p90 "
        f"{m['latency']['p90_us']:.0f} us per event (quantize + invoke + dequantize, one "
        "thread, ai-edge-litert, x86_64 dev machine shared with other work; "
        "`mmme-hil bench model` re-measures)",
        f"- reproduce: {_reproduce(m)}; {m['train_seconds'] / 60:.1f} min here); "
        f"versions {m['versions']}",
        "",
        "## Inputs (all int8; float = (q - zero_point) * scale)",
        "",
        "| name | shape | content | scale | zero point |",
        "|---|---|---|---|---|",
        f"| visual | (1, 28, 28, 3) | onset-apex flow u, v, optical strain: "
        f"`edge.spotting.visual.visual_features(...).stst` | {q['visual'][0]:.6g} | "
        f"{q['visual'][1]} |",
        f"| eeg | (1, 80) | DE (nats - 3) / 2 for channel x band, then ln(band/total power) "
        f"(+ 2.5) / 2.5, channels {', '.join(EEG_CHANNELS)}, bands {', '.join(BANDS)} "
        f"(channel-major): `edge.fusion.eeg_vector` | {q['eeg'][0]:.6g} | {q['eeg'][1]} |",
        f"| periph | (1, 9) | {periph}: "
        f"`edge.fusion.periph_vector` | {q['periph'][0]:.6g} | {q['periph'][1]} |",
        "",
        "Outputs: `composite` (1, 3) softmax over " + ", ".join(COMPOSITES) + "; `emotion` "
        "(1, 7) softmax over " + ", ".join(EMOTIONS) + "; both int8, scale 1/256, zero "
        "point -128. Missing features are 0. Order of feeding does not matter: the runtime "
        "binds tensors by signature name (edge/fusion.py checks names, shapes, dtypes).",
        "",
        "## Subject-independent evaluation (composite: negative / positive / surprise)",
        "",
    ]
    if m.get("loso"):
        scheme = ("leave-one-subject-out" if m["folds"] == m["n_subjects"] else
                  f"{m['folds']}-fold leave-subjects-out (about "
                  f"{m['n_subjects'] // m['folds']} subjects held out per fold; "
                  "`--folds 0` runs true leave-one-subject-out at about 6x the time)")
        lines += [
            f"Scheme: {scheme}. Every event is predicted by networks that never saw its "
            "subject; predictions pooled over folds; UF1 = macro F1, UAR = macro recall; "
            "each fold's network exported to int8 and run in the TFLite interpreter.",
            "",
            "| model | UF1 float | UAR float | UF1 int8 | UAR int8 | int8 = float (composite) "
            "| emotion UF1 float / int8 |",
            "|---|---|---|---|---|---|---|",
        ]
        names = {"fused": "fused (visual + EEG + peripheral)", "visual": "visual only",
                 "physio": "physiology only (EEG + peripheral)"}
        for v, row in m["loso"].items():
            f, i = row["float"], row["int8"]
            lines.append(f"| {names[v]} | {f['uf1']:.3f} | {f['uar']:.3f} | {i['uf1']:.3f} | "
                         f"{i['uar']:.3f} | {_pct(row['int8_agreement'])} % | "
                         f"{f['emotion_uf1']:.3f} / {i['emotion_uf1']:.3f} |")
    else:
        lines.append("Not evaluated (trained with --no-loso).")
    lines += [
        "",
        "## Per-modality check (linear ridge classifier, LOSO, composite UF1 / UAR)",
        "",
        "No modality should separate the classes on its own; chance UF1 is about 0.33.",
        "",
        "| features | UF1 | UAR |",
        "|---|---|---|",
    ]
    for k, v in m["ridge_loso"].items():
        lines.append(f"| {k} | {v['uf1']:.3f} | {v['uar']:.3f} |")
    simulated = (m.get("data") or {"simulated": True}).get("simulated", True)
    lines += ["", "## Limits", ""]
    if not simulated:
        lines += [
            f"- Every figure comes from the {m['n_events']} labelled events of "
            f"{m['n_subjects']} subjects named above; with few subjects LOSO scores swing "
            "widely from one subject to the next.",
            "- Labels are the coders' intervals and emotions as imported; inputs are "
            "computed by the device's own code (models/dataset.py).",
            "- Probabilities are not calibrated; contributions are modality-ablation deltas, "
            "not attributions with guarantees.",
            "",
        ]
        path.write_text("\n".join(lines))
        return
    lines += [
        "- The linear check above shows no modality is trivial, but the small CNN does far "
        "better on the rendered faces (visual-only UF1 above) than a linear model: the "
        "simulated AUs are clean prototypes on one face. Expect much lower visual scores on "
        "real micro-expressions; the fused-over-visual gain is the figure to re-check.",
        "- One face photograph for every simulated subject (the renderer has one); subjects "
        "differ in expressivity, camera noise, lighting, head motion, physiology and EEG.",
        "- EEG emotion effects are invented with modest effect sizes (models/cohort.py, "
        "EEG_EFFECTS); peripheral responses follow hil.sim.scenario.response_for.",
        "- Probabilities are not calibrated; contributions are modality-ablation deltas, "
        "not attributions with guarantees.",
        "",
    ]
    path.write_text("\n".join(lines))
