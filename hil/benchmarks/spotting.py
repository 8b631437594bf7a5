"""``mmme-hil bench spotting``: the spotter against the simulated camera.

Generates a scenario with N expressions (intensities from barely visible to obvious,
micro and macro, with blinks and head moves as distractors), renders every frame with
``hil.sim.camera.SimCamera.offline`` (no pacing), runs :class:`edge.spotting.Spotter`
on one thread and scores the intervals with the MEGC protocol (IoU >= 0.5).

The simulated face is far easier than real video: one photograph, known lighting, pure
displacement-field AUs, translation-only head moves. Figures here are an upper bound on
what real footage gives (MEGC long-video F1 on real data is typically 0.1-0.4).

Last output line: {"f1_overall": x, "f1_me": y, "frame_ms_p50": a, "frame_ms_p99": b}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np

from edge.evaluation.megc import KINDS, Interval, match, metrics
from edge.spotting import Spotter
from hil.sim.scenario import Scenario, generate

AMP_BINS = (0.0, 0.3, 0.5, 0.7, 1.01)


def make_scenario(n_events: int, seed: int = 0, slot_s: float = 3.0) -> Scenario:
    return generate(
        duration_s=n_events * slot_s + 3.0,
        n_events=n_events,
        seed=seed,
        intensity_range=(0.15, 1.0),
        blinks_per_min=15.0,
        head_moves_per_min=4.0,
    )


class RunResult(NamedTuple):
    preds: list[Interval]  # spotted intervals, seconds from the first frame
    cost_ms: np.ndarray  # per-frame Spotter.update wall time (perf_counter)
    cpu_ms: np.ndarray  # per-frame thread CPU time
    spotter: Spotter


def run(scenario: Scenario, *, fps: float = 150.0, seed: int = 0, **spotter_kw) -> RunResult:
    """Spot over the whole scenario, every frame, one thread."""
    from hil.sim.camera import SimCamera  # the camera emulator lives beside this bench

    cv2.setNumThreads(1)  # cost figures are for one core
    cam = SimCamera(scenario, fps=fps, seed=seed)
    sp = Spotter(fps, **spotter_kw)
    preds: list[Interval] = []
    cost: list[float] = []
    cpu: list[float] = []  # thread CPU time: the same cost without preemption by neighbours
    t_first: tuple[int, int] | None = None  # (t_ns, seq) of the first frame: t = 0 s
    for fr in cam.offline():
        if t_first is None:
            t_first = (fr.t_ns, fr.seq)
        c0 = time.thread_time()
        t0 = time.perf_counter()
        out = sp.update(fr)
        cost.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.thread_time() - c0) * 1e3)
        for iv in out:
            on = (iv.onset_ns - t_first[0]) / 1e9
            off = (iv.offset_ns - t_first[0]) / 1e9
            preds.append(Interval(on, off, iv.kind))
    return RunResult(preds, np.asarray(cost), np.asarray(cpu), sp)


def recall_by_amplitude(
    scenario: Scenario, preds: Sequence[Interval]
) -> list[tuple[str, int, float]]:
    """Recall (kind-aware, IoU >= 0.5) of ground truth per intensity bin."""
    exprs = list(scenario.expressions)
    hit = np.zeros(len(exprs), bool)
    for kind in KINDS:
        idx = [i for i, e in enumerate(exprs) if e.kind == kind]
        gt = [Interval(exprs[i].onset_s, exprs[i].offset_s, kind) for i in idx]
        for _, j, _ in match([p for p in preds if p.kind == kind], gt):
            hit[idx[j]] = True
    amp = np.array([e.intensity for e in exprs])
    rows = []
    for lo, hi in itertools.pairwise(AMP_BINS):
        m = (amp >= lo) & (amp < hi)
        rows.append((f"{lo:.2f}-{min(hi, 1.0):.2f}", int(m.sum()),
                     float(hit[m].mean()) if m.any() else float("nan")))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mmme-hil bench spotting")
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fps", type=float, default=150.0)
    ap.add_argument("--json", action="store_true", help="(the JSON line is always printed last)")
    a = ap.parse_args(list(argv or []))
    scen = make_scenario(a.events, a.seed)
    gt = [Interval(e.onset_s, e.offset_s, e.kind) for e in scen.expressions]
    t0 = time.perf_counter()
    preds, cost, cpu, sp = run(scen, fps=a.fps, seed=a.seed)
    wall = time.perf_counter() - t0
    m = metrics(preds, gt)
    print(f"scenario: {a.events} expressions ({sum(e.kind == 'micro' for e in scen.expressions)}"
          f" micro), {len(scen.blinks)} blinks, {len(scen.head_moves)} head moves, "
          f"{scen.duration_s:.0f} s, {len(cost)} frames, run {wall:.0f} s")
    print("simulated face: far easier than real video; read these as an upper bound")
    for k, v in m.items():
        print(f"  {k:8s} TP {v['tp']:4d} FP {v['fp']:4d} FN {v['fn']:4d}  "
              f"P {v['precision']:.3f} R {v['recall']:.3f} F1 {v['f1']:.3f}")
    print("recall by intensity:")
    for label, n, r in recall_by_amplitude(scen, preds):
        print(f"  {label}: n={n:3d} recall={r:.2f}")
    print(f"spotter counters: {sp.counters}")
    p50, p99 = (float(x) for x in np.percentile(cost, [50, 99]))
    print(f"per-frame cost (1 thread, wall): p50 {p50:.3f} ms, p99 {p99:.3f} ms, "
          f"max {float(cost.max()):.1f} ms (Haar detections every 1.5 s)")
    c50, c99 = (float(x) for x in np.percentile(cpu, [50, 99]))
    print(f"per-frame thread CPU time: p50 {c50:.3f} ms, p99 {c99:.3f} ms "
          f"(wall minus preemption on a shared machine; thread_time has coarse ticks)")
    print(json.dumps({"f1_overall": round(m["overall"]["f1"], 4),
                      "f1_me": round(m["micro"]["f1"], 4),
                      "frame_ms_p50": round(p50, 4), "frame_ms_p99": round(p99, 4)}))
    return 0
