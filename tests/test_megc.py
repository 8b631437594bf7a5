"""MEGC spotting protocol specifications."""

from __future__ import annotations

import json

import pytest

from edge.evaluation.megc import Interval, evaluate, iou, match, megc_main, metrics


def test_iou_of_frame_intervals_counts_inclusive_frames() -> None:
    assert iou(Interval(0, 9), Interval(5, 14), frames=True) == pytest.approx(5 / 15)
    assert iou(Interval(0, 1.0), Interval(0.5, 1.5)) == pytest.approx(0.5 / 1.5)
    assert iou(Interval(0, 1), Interval(2, 3)) == 0.0


def test_a_prediction_needs_iou_half_and_each_truth_matches_once() -> None:
    gt = [Interval(10, 20)]
    pred = [Interval(10, 20), Interval(11, 20), Interval(30, 40)]
    c = evaluate(pred, gt)["micro"]
    assert (c.tp, c.fp, c.fn) == (1, 2, 0)
    assert match([Interval(10, 14.9)], gt) == []  # IoU 0.49: a miss and a false positive


def test_kinds_score_separately_and_overall_sums_them() -> None:
    gt = [Interval(0, 0.3, "micro"), Interval(5, 6.5, "macro"), Interval(9, 10, "macro")]
    pred = [Interval(0, 0.3, "micro"), Interval(5, 6.5, "micro"), Interval(9.1, 10, "macro")]
    m = metrics(pred, gt)
    assert (m["micro"]["tp"], m["micro"]["fp"], m["micro"]["fn"]) == (1, 1, 0)
    assert (m["macro"]["tp"], m["macro"]["fp"], m["macro"]["fn"]) == (1, 0, 1)
    assert (m["overall"]["tp"], m["overall"]["fp"], m["overall"]["fn"]) == (2, 1, 1)
    assert m["overall"]["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))


def test_intervals_in_different_videos_never_match() -> None:
    assert match([Interval(0, 1, video="a")], [Interval(0, 1, video="b")]) == []


def test_command_reads_json_and_csv(tmp_path, capsys) -> None:
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"expressions": [
        {"onset_s": 1.0, "offset_s": 1.3, "kind": "micro"},
        {"onset_s": 4.0, "offset_s": 5.5, "kind": "macro"}]}))
    pred = tmp_path / "pred.csv"
    pred.write_text("video,onset,offset,kind\n,1.02,1.3,micro\n,8,9,macro\n")
    assert megc_main(["--pred", str(pred), "--gt", str(gt), "--json"]) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert m["micro"]["f1"] == 1.0 and m["macro"]["tp"] == 0 and m["overall"]["tp"] == 1
    assert megc_main(["--pred", str(tmp_path / "missing.csv"), "--gt", str(gt)]) == 2
