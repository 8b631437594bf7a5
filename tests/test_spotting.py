"""Spotter specifications against the simulated camera (hil.sim.camera)."""

from __future__ import annotations

import numpy as np
import pytest

from edge.evaluation.megc import Interval, metrics
from edge.spotting import FaceStatus, SpottedInterval, Spotter, interval_features
from hil.sim.camera import SimCamera
from hil.sim.scenario import ExpressionEvent, Scenario

FPS = 150.0


def _quiet(duration_s: float, *expressions: ExpressionEvent) -> Scenario:
    return Scenario(duration_s=duration_s, expressions=tuple(expressions))


def _run(cam: SimCamera, sp: Spotter, start_s: float = 0.0, stop_s: float | None = None):
    out: list[SpottedInterval] = []
    statuses = []
    for fr in cam.offline(start_s, stop_s):
        out += sp.update(fr)
        statuses.append((fr.seq / FPS, sp.status))
    return out, statuses


def test_an_obvious_micro_expression_is_spotted_with_its_bounds_and_regions() -> None:
    me = ExpressionEvent(1.5, 1.65, 1.85, ("AU6", "AU12"), "happy", intensity=0.9)
    out, _ = _run(SimCamera(_quiet(3.0, me), fps=FPS), Spotter(FPS))
    assert len(out) == 1
    iv = out[0]
    assert iv.kind == "micro"
    assert abs(iv.onset / FPS - 1.5) < 0.1 and abs(iv.offset / FPS - 1.85) < 0.1
    assert iv.onset < iv.apex < iv.offset and iv.onset_ns < iv.apex_ns < iv.offset_ns
    assert "lower" in iv.regions and "AU12" in iv.au_groups
    assert 0.0 < iv.confidence <= 1.0
    assert iv.emitted_seq - iv.offset <= 0.1 * FPS  # emitted within 100 ms of its offset


def test_a_slow_expression_is_macro() -> None:
    mac = ExpressionEvent(1.0, 1.7, 2.6, ("AU1", "AU2", "AU5"), "surprise", intensity=1.0)
    out, _ = _run(SimCamera(_quiet(3.5, mac), fps=FPS), Spotter(FPS))
    assert [iv.kind for iv in out] == ["macro"]
    assert "upper" in out[0].regions


def test_visual_features_are_stst_shaped_and_move_where_the_face_moved() -> None:
    me = ExpressionEvent(1.5, 1.65, 1.85, ("AU6", "AU12"), "happy", intensity=1.0)
    out, _ = _run(SimCamera(_quiet(2.5, me), fps=FPS), Spotter(FPS))
    feats = interval_features(out[0])
    assert feats is not None
    assert feats.stst.shape == (28, 28, 3) and feats.stst.dtype == np.float32
    assert np.abs(feats.stst[..., :2]).max() <= 1.0 and feats.stst[..., 2].min() >= 0.0
    assert feats.region_px["lower"] > feats.region_px["upper"]
    # strain in the mouth half exceeds strain in the forehead rows
    assert feats.stst[20:, :, 2].mean() > feats.stst[:6, :, 2].mean()


def test_no_face_in_view_is_a_status_not_an_exception() -> None:
    cam = SimCamera(_quiet(1.0), fps=FPS)
    cam.face_off(0.0, 1.0)
    out, st = _run(cam, Spotter(FPS))
    assert out == [] and {s for _, s in st} == {FaceStatus.NO_FACE}


def test_face_lost_mid_event_drops_the_event_and_reports_lost() -> None:
    mac = ExpressionEvent(1.0, 1.6, 2.5, ("AU4", "AU7", "AU23"), "angry", intensity=1.0)
    cam = SimCamera(_quiet(3.5, mac), fps=FPS)
    cam.face_off(1.7, 2.4)
    sp = Spotter(FPS)
    out, st = _run(cam, sp)
    assert FaceStatus.LOST in {s for t, s in st if 1.7 < t < 2.4}
    assert st[-1][1] is FaceStatus.OK  # found again afterwards
    assert sp.counters["aborted"] == 1
    assert all(iv.offset / FPS < 1.7 or iv.onset / FPS > 2.4 for iv in out)


@pytest.mark.parametrize(("gain", "status"), [(0.05, FaceStatus.TOO_DARK),
                                              (6.0, FaceStatus.TOO_BRIGHT)])
def test_extreme_lighting_is_a_status(gain: float, status: FaceStatus) -> None:
    cam = SimCamera(_quiet(2.0), fps=FPS)
    cam.set_lighting(gain, 1.0, 2.0)
    out, st = _run(cam, Spotter(FPS))
    assert {s for t, s in st if t > 1.05} == {status}
    assert {s for t, s in st if 0.2 < t < 0.95} == {FaceStatus.OK}
    assert out == []


def test_blinks_and_head_moves_alone_give_no_intervals() -> None:
    from hil.sim.scenario import Blink, HeadMove

    scen = Scenario(duration_s=6.0, blinks=(Blink(1.0, 0.15), Blink(3.0, 0.12)),
                    head_moves=(HeadMove(4.5, 0.4, 3.0, 1.5),))
    sp = Spotter(FPS)
    out, _ = _run(SimCamera(scen, fps=FPS), sp)
    assert out == []


def test_short_bench_scores_well_above_chance() -> None:
    from hil.benchmarks.spotting import make_scenario, run

    scen = make_scenario(12, seed=3)
    preds, cost, _, _ = run(scen, fps=FPS, seed=3)
    gt = [Interval(e.onset_s, e.offset_s, e.kind) for e in scen.expressions]
    m = metrics(preds, gt)
    # Chance: random 0.3-2 s intervals at this density hit IoU >= 0.5 a few % of the time.
    assert m["overall"]["f1"] >= 0.5
    assert len(cost) == round(scen.duration_s * FPS)


def test_at_640x480_the_face_is_found_and_the_expression_spotted_as_at_320x240() -> None:
    """The field rig's size: detection runs on the frame shrunk to ~320 px wide (its cost
    does not grow) and still finds the face in frame pixels; spotting works on the 128 px
    crop, so the same expression comes out with the same bounds."""
    from edge.spotting.face import FaceTracker

    me = ExpressionEvent(1.5, 1.65, 1.85, ("AU6", "AU12"), "happy", intensity=0.9)
    cam = SimCamera(_quiet(3.0, me), fps=FPS, width=640, height=480)
    det = FaceTracker(FPS).detect(cam.render(0.5))
    assert det is not None
    (x, y, w, h), (tx, ty, tw, th) = det, cam.face_box()
    inter = max(0, min(x + w, tx + tw) - max(x, tx)) * max(0, min(y + h, ty + th) - max(y, ty))
    assert inter / (w * h + tw * th - inter) > 0.5  # the box is in frame pixels
    out, _ = _run(cam, Spotter(FPS))
    assert len(out) == 1 and out[0].kind == "micro"
    assert abs(out[0].onset / FPS - 1.5) < 0.1 and abs(out[0].offset / FPS - 1.85) < 0.1
