"""Export opens in MNE with the right channels, units, rate and markers; info finds gaps."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from edge.recording.export import export, export_main
from edge.recording.info import format_info, info, info_main
from edge.recording.recorder import Recorder
from sensors.blocks import Frame, Marker, SampleBlock, StreamInfo

_spec = importlib.util.spec_from_file_location(
    "helpers_recorder_child", Path(__file__).with_name("helpers_recorder_child.py"))
child = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(child)

T0 = 5_000_000_000_000  # host time of sample 0
HUB500 = StreamInfo("hub", 500.0, ("PPG", "EDA", "SKT"), ("mV", "µS", "°C"),
                    (0.001, 0.0001, 0.01), (0.0, 0.0, 20.0), "us")
GAP = (1500, 1600)  # eeg indices lost in transit
MARKERS = [(101, 0.5), (100, 1.25), (102, 2.75)]  # code, seconds after sample 0


def _eeg_block(k: int, rng: np.random.Generator) -> SampleBlock:
    idx = np.arange(k * 100, (k + 1) * 100, dtype=np.int64)
    idx = idx[(idx < GAP[0]) | (idx >= GAP[1])]
    raw = rng.integers(-(2**23) + 1, 2**23, (idx.size, 8), dtype=np.int32)
    trig = (idx % 1000 < 10).astype(np.uint8)
    return SampleBlock("eeg", idx, idx, T0 + idx * 1_000_000 + rng.integers(-20_000, 20_000,
                                                                              idx.size),
                       raw, raw * child.EEG.scale[0], trig, np.zeros(idx.size, np.uint32))


def _hub_block(k: int, rng: np.random.Generator) -> SampleBlock:
    idx = np.arange(k * 50, (k + 1) * 50, dtype=np.int64)
    raw = rng.integers(0, 2**16, (50, 3), dtype=np.int32)
    return SampleBlock("hub", idx, idx * 2000, T0 + idx * 2_000_000, raw, raw * 1.0,
                       np.zeros(50, np.uint8), np.zeros(50, np.uint32))


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("rec") / "session.mcap"
    rng = np.random.default_rng(5)
    rec = Recorder(path, [child.EEG, HUB500], camera={"width": 40, "height": 30})
    eeg, hub = [], []
    for k in range(30):  # 3 s
        eeg.append(_eeg_block(k, rng))
        hub.append(_hub_block(k, rng))
        rec.write_block(eeg[-1])
        rec.write_block(hub[-1])
    frames = [Frame(s, T0 + s * 100_000_000, rng.integers(0, 256, (30, 40), dtype=np.uint8),
                    trigger=s % 2) for s in range(30) if s != 7]  # frame 7 was dropped
    for f in frames:
        rec.write_frame(f)
    for code, t_s in MARKERS:
        rec.write_marker(Marker(code, T0 + int(t_s * 1e9)))
    rec.write_event("me_spot", {"duration_s": 0.4}, T0 + 2_000_000_000)
    assert rec.close()["status"] == "ok"
    return path, {"eeg": eeg, "hub": hub, "frames": frames}


@pytest.fixture(scope="module")
def exported(recording, tmp_path_factory) -> tuple[Path, dict]:
    path, _ = recording
    out = tmp_path_factory.mktemp("bids")
    return out, export(path, out, subject="07", session="02")


def test_export_layout(exported) -> None:
    out, res = exported
    eeg_dir = out / "sub-07" / "ses-02" / "eeg"
    stem = "sub-07_ses-02_task-mmme"
    for name in (f"{stem}_eeg.bdf", f"{stem}_eeg.json", f"{stem}_channels.tsv",
                 f"{stem}_events.tsv", f"{stem}_recording-hub_physio.bdf",
                 f"{stem}_recording-hub_channels.tsv"):
        assert (eeg_dir / name).is_file(), name
    assert json.loads((out / "dataset_description.json").read_text())["BIDSVersion"]
    assert json.loads((eeg_dir / f"{stem}_eeg.json").read_text())["SamplingFrequency"] == 1000
    with open(eeg_dir / f"{stem}_channels.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [r["name"] for r in rows] == [*child.EEG.channels, "TRIG"]
    assert {r["units"] for r in rows[:8]} == {"uV"}
    assert res["frames"] == 29


def test_eeg_bdf_in_mne_has_names_units_rate_and_markers(exported, recording) -> None:
    import mne

    out, _ = exported
    _, data = recording
    bdf = out / "sub-07/ses-02/eeg/sub-07_ses-02_task-mmme_eeg.bdf"
    raw = mne.io.read_raw_bdf(bdf, preload=True, verbose="error")
    assert raw.ch_names == [*child.EEG.channels, "TRIG"]
    assert raw.info["sfreq"] == 1000.0
    # MNE spells the file's "uV" as "µV".
    assert {raw._orig_units[ch].replace("µ", "u") for ch in child.EEG.channels} == {"uV"}
    counts = np.concatenate([b.raw for b in data["eeg"]])
    idx = np.concatenate([b.index for b in data["eeg"]])
    volts = raw.get_data(picks=child.EEG.channels)  # MNE gives volts
    np.testing.assert_allclose(volts[:, idx].T, counts * child.EEG.scale[0] * 1e-6,
                               rtol=1e-9, atol=1e-12)
    assert not volts[:, GAP[0]:GAP[1]].any()  # lost samples are zeros at their true place
    ann = {d: o for o, d in zip(raw.annotations.onset, raw.annotations.description,
                                strict=True)}
    for code, t_s in MARKERS:
        assert ann[f"marker {code}"] == pytest.approx(t_s, abs=0.002)
    assert ann["event me_spot"] == pytest.approx(2.0, abs=0.002)
    assert ann["gap 100 samples lost"] == pytest.approx(GAP[0] / 1000, abs=1e-6)


def test_eeg_bdf_digital_values_are_the_raw_counts(exported, recording) -> None:
    from edfio import read_bdf

    out, _ = exported
    _, data = recording
    bdf = read_bdf(out / "sub-07/ses-02/eeg/sub-07_ses-02_task-mmme_eeg.bdf")
    counts = np.concatenate([b.raw for b in data["eeg"]])
    idx = np.concatenate([b.index for b in data["eeg"]])
    for c, name in enumerate(child.EEG.channels):
        np.testing.assert_array_equal(bdf.get_signal(name).digital[idx], counts[:, c])
    trig = np.concatenate([b.trigger for b in data["eeg"]])
    np.testing.assert_array_equal(bdf.get_signal("TRIG").digital[idx], trig)


def test_hub_file_keeps_its_own_rate_and_units(exported, recording) -> None:
    import mne

    out, _ = exported
    _, data = recording
    bdf = out / "sub-07/ses-02/eeg/sub-07_ses-02_task-mmme_recording-hub_physio.bdf"
    raw = mne.io.read_raw_bdf(bdf, preload=True, verbose="error")
    assert raw.info["sfreq"] == 500.0
    assert raw.ch_names == ["PPG", "EDA", "SKT", "TRIG"]
    from edfio import read_bdf

    hub = read_bdf(bdf)  # MNE only knows volt-like units; the header says the rest
    assert [hub.get_signal(c).physical_dimension for c in ("PPG", "EDA", "SKT")] == [
        "mV", "uS", "degC"]
    skt = hub.get_signal("SKT").data[:1500]  # physical: raw * scale + offset
    want = np.concatenate([b.raw[:, 2] for b in data["hub"]]) * 0.01 + 20.0
    np.testing.assert_allclose(skt, want, atol=1e-9)
    assert raw.n_times == 1500
    ann = dict(zip(raw.annotations.description, raw.annotations.onset, strict=True))
    assert ann["marker 100"] == pytest.approx(1.25, abs=0.003)


def test_events_and_frames_tables(exported, recording) -> None:
    out, _ = exported
    _, data = recording
    ses = out / "sub-07/ses-02"
    with open(ses / "eeg/sub-07_ses-02_task-mmme_events.tsv") as f:
        ev = list(csv.DictReader(f, delimiter="\t"))
    markers = [(r["value"], float(r["onset"])) for r in ev if r["trial_type"] == "marker"]
    assert [m[0] for m in markers] == ["101", "100", "102"]
    assert [m[1] for m in markers] == pytest.approx([t for _, t in MARKERS], abs=0.002)
    with open(ses / "video/sub-07_ses-02_task-mmme_frames.tsv") as f:
        fr = list(csv.DictReader(f, delimiter="\t"))
    assert [int(r["seq"]) for r in fr] == [f.seq for f in data["frames"]]
    assert [int(r["t_ns"]) for r in fr] == [f.t_ns for f in data["frames"]]
    import cv2

    for r, f in zip(fr[:5], data["frames"][:5], strict=True):
        png = cv2.imread(str(ses / "video" / r["file"]), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(png, f.luma)  # lossless


def test_info_reports_counts_and_gaps(recording) -> None:
    path, _ = recording
    d = info(str(path))
    assert d["complete"]
    eeg = d["streams"]["eeg"]
    assert eeg["samples"] == 3000 - 100
    assert [(g["after"], g["missing"]) for g in eeg["gaps"]] == [(GAP[0] - 1, 100)]
    assert eeg["missing_samples"] == 100
    assert eeg["duration_s"] == pytest.approx(3.0, abs=0.01)
    assert d["streams"]["hub"]["gaps"] == [] and d["streams"]["hub"]["samples"] == 1500
    assert [(g["after"], g["missing"]) for g in d["camera"]["gaps"]] == [(6, 1)]
    assert [m["code"] for m in d["markers"]] == [101, 100, 102]
    text = format_info(d)
    assert "gap after index 1499: 100 missing" in text and "markers: 3" in text


def test_cli_entries_succeed(recording, tmp_path: Path, capsys) -> None:
    path, _ = recording
    assert info_main([str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["streams"]["eeg"]["missing_samples"] == 100
    assert export_main([str(path), "--out", str(tmp_path / "x"), "--no-video"]) == 0
    assert "exported" in capsys.readouterr().out


@pytest.mark.parametrize("entry", [info_main, export_main])
@pytest.mark.parametrize("content", [None, b"", b"not a recording at all" * 40])
def test_cli_bad_file_is_one_line_and_status_2(entry, content, tmp_path: Path,
                                               capsys) -> None:
    rec = tmp_path / "bad.mcap"
    if content is not None:
        rec.write_bytes(content)
    argv = [str(rec)] if entry is info_main else [str(rec), "--out", str(tmp_path / "o")]
    assert entry(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "bad.mcap" in err
