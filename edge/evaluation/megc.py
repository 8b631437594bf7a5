"""MEGC spotting protocol: interval IoU >= 0.5 true positives, P/R/F1 per kind.

A prediction is a true positive when its IoU with a ground-truth interval of the same
video and kind is at least ``iou`` (0.5); each ground truth is matched at most once
and each prediction at most once (greedy by IoU, highest first). Micro and macro are
scored separately; "overall" sums their TP/FP/FN (as MEGC reports it). Intervals are
closed [onset, offset] in frames (IoU on frame counts, +1) or in seconds, whatever unit
both sides use.

Command: ``python -m edge.evaluation.megc --pred P --gt G [--iou 0.5] [--json]`` where
P and G are JSON (a list of objects, or {"intervals"|"expressions": [...]}) or CSV with
columns video, onset, offset, kind (also onset_frame/offset_frame or onset_s/offset_s).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

KINDS = ("micro", "macro")


@dataclass(frozen=True)
class Interval:
    onset: float
    offset: float
    kind: str = "micro"  # "micro" or "macro"
    video: str = ""


@dataclass(frozen=True)
class Counts:
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else 0.0

    def as_dict(self) -> dict[str, float]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": self.precision,
                "recall": self.recall, "f1": self.f1}


def iou(a: Interval, b: Interval, *, frames: bool = False) -> float:
    """Temporal IoU; with ``frames`` the bounds are inclusive frame numbers."""
    e = 1.0 if frames else 0.0
    inter = min(a.offset, b.offset) - max(a.onset, b.onset) + e
    if inter <= 0:
        return 0.0
    union = (a.offset - a.onset + e) + (b.offset - b.onset + e) - inter
    return inter / union if union > 0 else 0.0


def match(pred: Sequence[Interval], gt: Sequence[Interval], *, thr: float = 0.5,
          frames: bool = False) -> list[tuple[int, int, float]]:
    """One-to-one matches (pred index, gt index, IoU) with IoU >= thr, same video."""
    pairs = [
        (iou(p, g, frames=frames), i, j)
        for i, p in enumerate(pred)
        for j, g in enumerate(gt)
        if p.video == g.video and p.offset >= g.onset and g.offset >= p.onset
    ]
    pairs.sort(reverse=True)
    used_p: set[int] = set()
    used_g: set[int] = set()
    out = []
    for v, i, j in pairs:
        if v < thr or i in used_p or j in used_g:
            continue
        used_p.add(i)
        used_g.add(j)
        out.append((i, j, v))
    return out


def evaluate(pred: Iterable[Interval], gt: Iterable[Interval], *, thr: float = 0.5,
             frames: bool = False) -> dict[str, Counts]:
    """Counts for "micro", "macro" and "overall" (the sum of the two)."""
    pred, gt = list(pred), list(gt)
    out: dict[str, Counts] = {}
    for kind in KINDS:
        p = [x for x in pred if x.kind == kind]
        g = [x for x in gt if x.kind == kind]
        tp = len(match(p, g, thr=thr, frames=frames))
        out[kind] = Counts(tp, len(p) - tp, len(g) - tp)
    out["overall"] = Counts(*(sum(getattr(out[k], f) for k in KINDS) for f in ("tp", "fp", "fn")))
    return out


def metrics(pred: Iterable[Interval], gt: Iterable[Interval], *, thr: float = 0.5,
            frames: bool = False) -> dict[str, dict[str, float]]:
    return {k: c.as_dict() for k, c in evaluate(pred, gt, thr=thr, frames=frames).items()}


# -- files ------------------------------------------------------------------------------
def _pick(row: dict, *names: str) -> float | None:
    for n in names:
        v = row.get(n)
        if v not in (None, ""):
            return float(v)
    return None


def _kind(raw: object) -> str:
    s = str(raw or "micro").strip().lower()
    return "macro" if s.startswith("mac") else "micro"


def intervals_from_rows(rows: Iterable[dict]) -> list[Interval]:
    """Rows with onset/offset (frames or seconds), kind and video; see module doc."""
    out = []
    for r in rows:
        on = _pick(r, "onset", "onset_frame", "OnsetFrame", "onset_s")
        off = _pick(r, "offset", "offset_frame", "OffsetFrame", "offset_s")
        if on is None or off is None:
            raise ValueError(f"interval without onset/offset: {r!r}")
        out.append(Interval(on, off, _kind(r.get("kind")), str(r.get("video", "") or "")))
    return out


def load_intervals(path: str | Path) -> list[Interval]:
    p = Path(path)
    if p.suffix.lower() == ".csv":
        with open(p, newline="") as f:
            return intervals_from_rows(csv.DictReader(f))
    doc = json.loads(p.read_text())
    if isinstance(doc, dict):
        doc = doc.get("intervals", doc.get("expressions", []))
    return intervals_from_rows(doc)


def megc_main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="megc", description="MEGC spotting metrics")
    ap.add_argument("--pred", required=True)
    ap.add_argument("--gt", required=True)
    ap.add_argument("--iou", type=float, default=0.5)
    ap.add_argument("--frames", action="store_true", help="bounds are inclusive frames")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        pred, gt = load_intervals(a.pred), load_intervals(a.gt)
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        print(f"megc: {exc}", file=sys.stderr)
        return 2
    m = metrics(pred, gt, thr=a.iou, frames=a.frames)
    if a.json:
        print(json.dumps(m))
    else:
        for k, v in m.items():
            print(f"{k:8s} TP {v['tp']:4d} FP {v['fp']:4d} FN {v['fn']:4d}  "
                  f"P {v['precision']:.3f} R {v['recall']:.3f} F1 {v['f1']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(megc_main())
