"""Annotation readers: the real MMME coding file and CASME-style sheets."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from edge.evaluation.annotations import parse_aus, parse_frame_field, read_casme, read_mmme_coding


@pytest.fixture(scope="module")
def mmme(shared):
    return read_mmme_coding(shared("data", "mmme", "coding_file.xlsx"))


def test_mmme_has_299_micro_and_645_macro_intervals(mmme) -> None:
    assert Counter(g.kind for g in mmme) == {"micro": 299, "macro": 645}
    assert all(g.onset_s <= g.apex_s <= g.offset_s for g in mmme)
    assert all(g.aus and all(a.startswith("AU") for a in g.aus) for g in mmme)
    assert {g.emotion for g in mmme} == {"angry", "disgust", "fear", "sad", "happy",
                                         "surprise", "tense"}
    assert {g.composite for g in mmme} == {"negative", "positive", "surprise"}
    assert {g.subject for g in mmme} <= {f"S{i:02d}" for i in range(1, 17)}
    assert all(101 <= g.marker <= 148 for g in mmme)


def test_mmme_frames_come_from_the_counter_where_present(mmme) -> None:
    first = mmme[0]  # S01 angry_1: 16-00-31-433-685 / -686-723 / -32-428-831
    assert (first.onset, first.apex, first.offset) == (685, 723, 831)
    assert first.aus == ("AU1",) and first.emotion == "angry" and first.kind == "macro"
    with_frames = [g for g in mmme if g.onset is not None]
    assert 600 < len(with_frames) < len(mmme)  # some rows carry no counter
    assert all(g.onset <= g.apex <= g.offset for g in with_frames)
    # wrapped counters (948 -> 043) are unwrapped to agree with the time columns
    agree = [abs((g.offset - g.onset) / 150 - (g.offset_s - g.onset_s)) < 0.1
             for g in with_frames]
    assert sum(agree) / len(agree) > 0.95
    no_frames = [g for g in mmme if g.onset is None]
    assert all(g.apex is None and g.offset is None and g.onset_wall_ms for g in no_frames)


def test_frame_field_and_au_parsing() -> None:
    assert parse_frame_field("16-00-31-433-685") == (57631433, 685)
    assert parse_frame_field("15-10-22-548") == (54622548, None)
    assert parse_frame_field("n/a") is None
    assert parse_aus("AU4, AU7") == ("AU4", "AU7")
    assert parse_aus("4+R12") == ("AU4", "AU12")


def test_casme_sheet(tmp_path) -> None:
    p = tmp_path / "casme2.csv"
    p.write_text(
        "Subject,Filename,OnsetFrame,ApexFrame,OffsetFrame,Action Units,Estimated Emotion\n"
        "01,EP02_01f,46,59,86,12,happiness\n"
        "02,EP03_02,100,/,300,4+7,disgust\n"
    )
    rows = read_casme(p, fps=200.0)
    assert [(g.onset, g.apex, g.offset) for g in rows] == [(46, 59, 86), (100, None, 300)]
    assert [g.kind for g in rows] == ["micro", "macro"]  # 0.2 s vs 1.0 s at 200 fps
    assert rows[0].composite == "positive" and rows[1].aus == ("AU4", "AU7")
    assert rows[0].interval(frames=True).offset == 86


def test_without_openpyxl_the_error_names_the_extra(tmp_path: Path, monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "openpyxl", None)  # import openpyxl -> ImportError
    sheet = tmp_path / "coding.xlsx"
    sheet.write_bytes(b"")
    with pytest.raises(ImportError, match=r"mmme-edge\[annotations\]"):
        read_casme(sheet)
