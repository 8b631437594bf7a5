"""`mmme-edge import-mmme`: the MMME release layout to a rig recording, on one clock.

Fixture sessions are written at test time in the documented layout (Curry 8 EEG with a
Trigger channel, the 17-column BIOPAC .mat, frames named Y-M-D-h-m-s-ms-Code-Marker with
a wrapping counter) from the simulated rig with a known truth (hil/sim/mmme_session.py).
The real Curry 8 and Neuroscan files in ../shared/data/real/eeg are checked against what
MNE reads directly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.cli import main as cli
from edge.corpus.mmme_layout import (
    BIOPAC_COLUMNS,
    detect_wrap,
    list_frames,
    read_polygraph,
    standard_eeg_name,
    unwrap_counter,
)
from edge.recording.format import open_recording
from hil.sim.mmme_session import LabSession, true_times, write_session

REPO = Path(__file__).resolve().parents[1]
REAL_EEG = REPO.parent / "shared" / "data" / "real" / "eeg"
CURRY = REAL_EEG / "test_bdf_stim_channel Curry 8.cdt"
CNT = REAL_EEG / "scan41_short.cnt"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two subjects' sessions, imported; (root, {subject: (recording, truth, report)})."""
    root = tmp_path_factory.mktemp("mmme")
    truths = {subj: write_session(root / "release", LabSession(
        subject=subj, seed=k, cam_ppm=60.0 - 90 * k, wall_start=f"2019-05-{14 + k}T10:32:05.250"))
        for k, subj in enumerate(("S01", "S02"))}
    out = {}
    for subj, truth in truths.items():
        rec = root / "recordings" / subj / f"{subj}.mcap"
        rec.parent.mkdir(parents=True)
        assert cli(["import-mmme", str(root / "release" / subj), "--out", str(rec)]) == 0
        report = next(s for s in open_recording(rec, frames=False).status
                      if s["device"] == "mmme-import")["state"]
        out[subj] = (rec, truth, report)
    return root, out


def _expected_ns(rec, truth: dict, t_s: np.ndarray) -> np.ndarray:
    """Host ns on the recording's time line of true time t_s (the EEG is the reference:
    its sample i sits at host_t_ns[0] + i ms)."""
    p = truth["params"]
    pos = (t_s - p["eeg_start_s"]) * p["fs_hz"] * (1 + p["eeg_ppm"] * 1e-6)
    return rec.streams["eeg"].host_t_ns[0] + pos * 1e9 / p["fs_hz"]


def test_fixture_is_in_the_documented_layout(corpus):
    root, _ = corpus
    s = root / "release" / "S01"
    poly = read_polygraph(s / "BIOPAC" / "Untitled1 (001).mat")
    assert poly.data.shape[1] == 17 and poly.fs_hz == 1000.0
    assert [c.split(",")[0] for c in poly.labels[:8]] == list(BIOPAC_COLUMNS[:8])
    assert set(np.unique(poly.code)) - {0} <= set(range(100, 149))
    frames = list_frames(s / "Camera")
    assert frames.counter.max() == 1000 and frames.counter.min() == 1  # it wrapped
    assert detect_wrap(frames.counter, frames.wall_ms, 150.0) == 1000
    seq = unwrap_counter(frames.counter, frames.wall_ms, 150.0, 1000)
    assert np.all(np.diff(seq) >= 1) and int(np.sum(np.diff(seq) - 1)) == 3  # 3 dropped
    import mne

    raw = mne.io.read_raw_curry(s / "EEG" / "Acquisition 01.cdt", verbose="error")
    assert len(raw.ch_names) == 69 and raw.ch_names[-1] == "Trigger"  # + time = 70 columns
    assert raw.info["sfreq"] == 1000.0


@pytest.fixture(scope="module")
def long_session(tmp_path_factory):
    """30 s (about 150 marker edges), flat frames: the clock needs no faces."""
    root = tmp_path_factory.mktemp("mmme_long")
    truth = write_session(root, LabSession(subject="S09", seed=9, duration_s=30.0,
                                           cam_ppm=-70.0, frame_size=(64, 34),
                                           render_faces=False))
    rec = root / "S09.mcap"
    assert cli(["import-mmme", str(root / "S09"), "--out", str(rec)]) == 0
    report = next(s for s in open_recording(rec, frames=False).status
                  if s["device"] == "mmme-import")["state"]
    return rec, truth, report


def _errors_at_edges_ms(rec_path: Path, truth: dict) -> dict[str, np.ndarray]:
    """Imported time minus true time (on the EEG's time line) of the hub sample and the
    frame at or after each true marker edge."""
    rec = open_recording(rec_path, frames=False)
    edges = np.array([x for a, b, _ in truth["pulses"] for x in (a, b)])
    hub = rec.streams["hub"]
    t_hub = true_times(truth, "hub", len(hub))
    i = np.searchsorted(t_hub, edges)
    t_cam = np.delete(true_times(truth, "camera", truth["n_frames_named"]),
                      truth["params"]["dropped_frames"])
    assert t_cam.size == rec.frame_t_ns.size
    j = np.clip(np.searchsorted(t_cam, edges), 0, t_cam.size - 1)
    return {"hub": (hub.host_t_ns[i] - _expected_ns(rec, truth, t_hub[i])) / 1e6,
            "camera": (rec.frame_t_ns[j] - _expected_ns(rec, truth, t_cam[j])) / 1e6}


def test_streams_share_one_clock_within_a_millisecond_of_the_truth(long_session):
    rec_path, truth, report = long_session
    for name, err in _errors_at_edges_ms(rec_path, truth).items():
        assert np.percentile(np.abs(err), 99) < 1.0, (name, err)
    # Every edge paired; residuals include each stream's sampling step (1 ms, 6.7 ms).
    for name, bound_ms in (("hub", 1.0), ("camera", 1000 / 150)):
        s = report["streams"][name]
        assert s["pairs"] == s["edges"] == 2 * len(truth["pulses"]), s
        assert s["unmatched_edges"] == 0 and s["residual_p99_ms"] < bound_ms, s
    assert report["streams"]["camera"]["missing_frames"] == 3
    # Samples and frames outside the EEG's (the reference's) span, as the truth has them.
    t_eeg = true_times(truth, "eeg", truth["n_eeg"])
    t_hub = true_times(truth, "hub", truth["n_bio"])
    assert report["streams"]["hub"]["before_reference"] == np.sum(t_hub < t_eeg[0]) == 150
    assert report["streams"]["hub"]["after_reference"] == np.sum(t_hub > t_eeg[-1])
    assert report["streams"]["camera"]["before_reference"] == 15  # 100 ms at 150 fps


def test_short_sessions_align_within_a_frame(corpus):
    # A few seconds hold too few edges to pin the camera's drift to a millisecond (the
    # long session above does); within a frame they must be.
    _, sessions = corpus
    for rec_path, truth, _ in sessions.values():
        for name, err in _errors_at_edges_ms(rec_path, truth).items():
            assert np.max(np.abs(err)) < (1.0 if name == "hub" else 1000 / 150), (name, err)


def test_coding_intervals_are_ground_truth_events_on_the_frames(corpus):
    _, sessions = corpus
    for rec_path, truth, report in sessions.values():
        rec = open_recording(rec_path, frames=False)
        gt = [e["payload"] for e in rec.events if e["kind"] == "ground_truth"]
        assert report["coding"]["placed"] == len(gt) == len(truth["expressions"])
        # The other subject's rows (another recording day) are not this session's.
        assert report["coding"]["other_sessions"] == len(truth["expressions"])
        for g, x in zip(gt, truth["expressions"], strict=True):
            assert (g["emotion"], g["kind"]) == (x["emotion"], x["kind"])
            for key in ("onset", "apex", "offset"):
                want = _expected_ns(rec, truth, np.float64(x[f"{key}_s"]))
                err_ms = (g[f"{key}_ns"] - want) / 1e6
                assert -0.5 <= err_ms <= 1000 / 150 + 1.0, (key, err_ms)  # the next frame
        # One row per session has no frame counter: placed by the frame's wall-clock time.
        assert {g["placed_by"] for g in gt} == {"frame counter", "frame wall clock"}


def test_info_and_export_read_the_import_and_mne_opens_the_bdf(corpus, tmp_path, capsys):
    import mne

    _, sessions = corpus
    rec_path, truth, _ = sessions["S01"]
    assert cli(["info", str(rec_path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["complete"] and d["streams"]["eeg"]["samples"] == truth["n_eeg"]
    assert len(d["streams"]["eeg"]["channels"]) == 69 and "Fp1" in d["streams"]["eeg"]["channels"]
    assert d["camera"]["missing_frames"] == 3 and len(d["markers"]) == len(truth["pulses"])
    assert cli(["export", str(rec_path), "--out", str(tmp_path), "--no-video"]) == 0
    bdf = next(tmp_path.rglob("*_eeg.bdf"))
    raw = mne.io.read_raw_bdf(bdf, preload=True, verbose="error")
    assert raw.info["sfreq"] == 1000.0 and "Fp1" in raw.ch_names
    src = mne.io.read_raw_curry(next(Path(truth_dir(rec_path, sessions)).rglob("*.cdt")),
                                preload=True, verbose="error")
    np.testing.assert_allclose(raw.get_data(picks=["Fp1"])[0, :src.n_times],
                               src.get_data(picks=["FP1"])[0], atol=2e-9)  # 1 nV counts
    texts = [a["description"] for a in raw.annotations]
    assert sum(t.startswith("marker") for t in texts) == len(truth["pulses"])
    assert sum(t == "event ground_truth" for t in texts) == len(truth["expressions"])


def truth_dir(rec_path: Path, sessions: dict) -> Path:
    return rec_path.parents[2] / "release" / rec_path.stem


@pytest.mark.parametrize("path", [CURRY, CNT], ids=["curry8", "neuroscan-cnt"])
def test_real_eeg_files_import_with_channels_rates_and_annotations_intact(path, tmp_path):
    import mne

    if not path.is_file():
        pytest.fail(f"{path} missing: the shared real-data folder is part of the test set")
    rec_path = tmp_path / "real.mcap"
    assert cli(["import-mmme", "--eeg", str(path), "--out", str(rec_path)]) == 0
    rec = open_recording(rec_path, frames=False)
    raw = (mne.io.read_raw_curry(path, preload=True, verbose="error") if path.suffix == ".cdt"
           else mne.io.read_raw_cnt(path, data_format="int16", preload=True, verbose="error"))
    eeg = rec.streams["eeg"]
    assert list(eeg.info.channels) == [standard_eeg_name(c) for c in raw.ch_names]
    assert eeg.info.fs_hz == raw.info["sfreq"] and len(eeg) == raw.n_times
    volts = [j for j, c in enumerate(raw.info["chs"]) if c["unit"] == 107]  # FIFF_UNIT_V
    np.testing.assert_allclose(eeg.values[:, volts], raw.get_data()[volts].T * 1e6,
                               atol=max(1e-3, np.abs(raw.get_data()).max() * 1e6 / 2**30))
    onsets = (np.array([m.t_ns for m in rec.markers]) - eeg.host_t_ns[0]) / 1e9
    want = np.round(raw.annotations.onset - raw.first_time, 6)
    assert [m.code for m in rec.markers] == [int(d) for d in raw.annotations.description]
    np.testing.assert_allclose(onsets, want, atol=0.5 / raw.info["sfreq"])


def test_partial_and_bad_sessions_say_what_and_import_the_rest(corpus, tmp_path, capsys):
    root, _ = corpus
    s = root / "release" / "S02"
    # No EEG: the polygraph becomes the reference; a damaged .mat beside it is reported.
    bad = tmp_path / "partial"
    (bad / "BIOPAC").mkdir(parents=True)
    (bad / "BIOPAC" / "Untitled1 (001).mat").write_bytes(b"not matlab")
    shutil.copytree(s / "Camera", bad / "Camera")
    sorted((bad / "Camera").iterdir())[500].write_bytes(b"torn")  # a named frame, unreadable
    (bad / "Camera2").mkdir()
    (bad / "Camera2" / "snapshot.tif").write_bytes(b"")  # a stray file elsewhere
    rec_path = tmp_path / "partial.mcap"
    assert cli(["import-mmme", str(bad), "--out", str(rec_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert any("polygraph not imported" in p and "MATLAB" in p for p in report["problems"])
    assert any("frames in 2 folders" in p for p in report["problems"])
    assert any("1 frame files could not be read" in p for p in report["problems"])
    rec = open_recording(rec_path, frames=False)
    assert rec.frame_t_ns.size > 800 and not rec.streams  # the frames, on their own clock
    # Nothing importable: one line, exit 2, no file.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(["import-mmme", str(empty), "--out", str(tmp_path / "x.mcap")]) == 2
    assert "nothing to import" in capsys.readouterr().err
    assert not (tmp_path / "x.mcap").exists()


def test_the_real_coding_file_is_read_and_its_rows_kept_to_their_own_sessions(corpus, tmp_path):
    coding = REPO.parent / "shared" / "data" / "mmme" / "coding_file.xlsx"
    root, _ = corpus
    rec_path = tmp_path / "s.mcap"
    assert cli(["import-mmme", str(root / "release" / "S01"), "--coding", str(coding),
                "--out", str(rec_path)]) == 0
    report = next(s for s in open_recording(rec_path, frames=False).status
                  if s["device"] == "mmme-import")["state"]
    # 944 real rows, none recorded on the fixture's day and time.
    assert report["coding"] == {"rows": 944, "placed": 0, "other_sessions": 944,
                                "not_placed": 0}


def test_without_a_trigger_channel_the_eeg_event_list_anchors_the_clock(corpus, tmp_path):
    import mne

    from hil.sim.curry import write_curry8

    root, sessions = corpus
    src = root / "release" / "S02"
    dst = tmp_path / "S02"
    shutil.copytree(src / "BIOPAC", dst / "BIOPAC")
    shutil.copytree(src / "Camera", dst / "Camera")
    (dst / "EEG").mkdir()
    raw = mne.io.read_raw_curry(src / "EEG" / "Acquisition 01.cdt", preload=True,
                                verbose="error")
    events = [(round(o * raw.info["sfreq"]), int(d)) for o, d in
              zip(raw.annotations.onset, raw.annotations.description, strict=True)]
    write_curry8(dst / "EEG" / "Acquisition 01.cdt", raw.get_data()[:-1].T * 1e6,
                 raw.ch_names[:-1], raw.info["sfreq"], raw.info["meas_date"], events)
    rec_path = tmp_path / "s.mcap"
    assert cli(["import-mmme", str(dst), "--out", str(rec_path), "--coding",
                str(root / "release" / "coding.csv")]) == 0
    truth = sessions["S02"][1]
    for name, err in _errors_at_edges_ms(rec_path, truth).items():
        assert np.max(np.abs(err)) < (1.0 if name == "hub" else 1000 / 150), (name, err)


def test_without_frames_rows_are_placed_from_their_clip_marker(corpus, tmp_path):
    root, sessions = corpus
    rec_path = tmp_path / "e.mcap"
    s = root / "release" / "S01"
    assert cli(["import-mmme", "--eeg", str(s / "EEG" / "Acquisition 01.cdt"), "--coding",
                str(root / "release" / "coding.csv"), "--out", str(rec_path)]) == 0
    rec = open_recording(rec_path, frames=False)
    truth = sessions["S01"][1]
    gt = [e["payload"] for e in rec.events if e["kind"] == "ground_truth"]
    assert [g["placed_by"] for g in gt] == ["marker + seconds"] * len(truth["expressions"])
    for g, x in zip(gt, truth["expressions"], strict=True):
        err_ms = (g["onset_ns"] - _expected_ns(rec, truth, np.float64(x["onset_s"]))) / 1e6
        assert abs(err_ms) <= 2 * 1000 / 150, err_ms  # the coder's frames, one each end


def test_a_counter_that_wraps_elsewhere_is_seen_and_unwrapped_right(tmp_path):
    truth = write_session(tmp_path, LabSession(subject="S07", seed=7, duration_s=4.0,
                                               counter_start=1000, counter_wrap=1024,
                                               frame_size=(64, 34), render_faces=False))
    rec_path = tmp_path / "w.mcap"
    assert cli(["import-mmme", str(tmp_path / "S07"), "--out", str(rec_path)]) == 0
    rec = open_recording(rec_path, frames=False)
    report = next(s for s in rec.status if s["device"] == "mmme-import")["state"]
    assert any("wraps at 1024, not 1000" in p for p in report["problems"])
    assert report["streams"]["camera"]["missing_frames"] == 3  # only the dropped ones
    for name, err in _errors_at_edges_ms(rec_path, truth).items():
        assert np.max(np.abs(err)) < (1.0 if name == "hub" else 1000 / 150), (name, err)


def test_frames_are_scaled_to_the_rigs_luma_and_the_scale_kept(corpus, tmp_path):
    import cv2

    from edge.corpus.mmme_layout import load_luma

    root, _ = corpus
    rec_path = tmp_path / "f.mcap"
    assert cli(["import-mmme", "--frames", str(root / "release" / "S01" / "Camera"),
                "--camera-width", "128", "--out", str(rec_path)]) == 0
    rec = open_recording(rec_path, frames=True)
    assert rec.camera["scale"] == 0.5 and (rec.camera["source_width"], rec.camera["width"]) \
        == (256, 128)
    assert rec.frames[0].luma.shape == (68, 128) and rec.frames[0].luma.dtype == np.uint8
    # A colour 16-bit frame (as a colour camera may save) becomes 8-bit grey.
    bgr16 = np.zeros((1088, 2048, 3), np.uint16)
    bgr16[..., 1] = 40000
    cv2.imwrite(str(tmp_path / "c.tif"), bgr16)
    luma = load_luma(tmp_path / "c.tif", 320, 170)
    assert luma.shape == (170, 320) and luma.dtype == np.uint8
    assert abs(int(luma.mean()) - round(0.587 * 40000 / 256)) <= 1


def test_a_polygraph_export_off_the_documented_layout_says_how(tmp_path):
    from scipy.io import savemat

    from edge.corpus.mmme_layout import LayoutError

    savemat(tmp_path / "labels.mat", {"data": np.zeros((100, 17)), "isi": 2.0,
                                      "labels": np.array([f"CH{i}" for i in range(17)],
                                                         dtype=object)})
    p = read_polygraph(tmp_path / "labels.mat")
    assert p.fs_hz == 500.0 and "differ from the documented order" in p.notes[0]
    savemat(tmp_path / "twelve.mat", {"x": np.zeros((100, 12))})
    with pytest.raises(LayoutError, match=r"no 17-column data array .*'x': \(100, 12\)"):
        read_polygraph(tmp_path / "twelve.mat")


def test_neuroscan_names_get_their_10_20_spelling():
    assert [standard_eeg_name(n) for n in ("FP1", "FPZ", "CZ", "POZ", "CB1", "O2", "HEO",
                                           "Trigger", "1")] == \
        ["Fp1", "Fpz", "Cz", "POz", "CB1", "O2", "HEO", "Trigger", "1"]


def test_models_dataset_reads_imported_sessions_with_their_labels(corpus):
    from models.dataset import load_dir

    root, sessions = corpus
    data = load_dir(root / "recordings")
    n = sum(len(t["expressions"]) for _, t, _ in sessions.values())
    assert data["eeg"].shape == (n, 80) and data["visual"].shape == (n, 28, 28, 3)
    assert sorted(set(data["subject_name"])) == ["S01", "S02"]
    assert np.any(data["periph"] != 0) and np.any(data["eeg"] != 0)
    # The face is found on the imported frames of every event (onset and apex frames).
    assert np.all(np.abs(data["visual"]).reshape(n, -1).max(axis=1) > 0)


def test_mmme_hil_run_scores_the_replay_of_an_imported_session_against_its_coding(
        corpus, tmp_path):
    """The imported session replayed through the whole rig with MQTT on (a private
    Mosquitto): events/me, events/emotion and vitals arrive at a subscriber, and the
    spotted intervals are scored against the coding file's, on the replay's time line."""
    from hil.e2e import run_replay

    _, sessions = corpus
    rec_path, truth, _ = sessions["S01"]
    work = tmp_path / "work"
    result = run_replay(rec_path, work)
    print(f"\nMMME replay scored: F1 {result['f1_overall']}, emotion UF1 "
          f"{result['emotion_uf1']}, events {result['events']}, dropped {result['dropped']}")
    assert result["errors"] == []
    events = result["events"]
    assert events["truth"] == len(truth["expressions"])
    assert events["me"] >= 1 and events["emotion"] == events["me"] and events["vitals"] >= 1
    assert result["spotting"]["overall"]["tp"] >= 1  # the coded faces are found again
    # The truth scored against is the coding file's intervals, on one time line.
    coded = json.loads((work / "truth.json").read_text())["expressions"]
    assert [c["emotion"] for c in coded] == [x["emotion"] for x in truth["expressions"]]
    lag = [c["onset_s"] - x["onset_s"] for c, x in zip(coded, truth["expressions"], strict=True)]
    assert max(lag) - min(lag) < 2 / 150  # a common offset, within frames


def test_model_card_names_lab_data_and_does_not_call_it_simulated(tmp_path):
    from models.card import write_card

    m = json.loads((REPO / "models" / "metrics.json").read_text())
    m.update(source="lab data from recordings", n_events=9, n_subjects=3,
             data={"simulated": False, "path": "recordings",
                   "files": ["S01/a.mcap", "S02/b.mcap", "S03/c.mcap"],
                   "events_per_subject": {"S01": 3, "S02": 3, "S03": 3}})
    write_card(tmp_path / "card.md", m)
    card = (tmp_path / "card.md").read_text()
    assert "Trained on the recordings in `recordings`" in card and "`S02/b.mcap`" in card
    assert "S03 3" in card and "simulated" not in card.lower()
    assert "--data recordings" in card  # how to reproduce it


TRAIN_PY = REPO / ".venv-train" / "bin" / "python"


@pytest.mark.bench  # minutes of TensorFlow: opt-in (make bench-tests)
@pytest.mark.skipif(not TRAIN_PY.is_file(), reason="TensorFlow lives in .venv-train (make train)")
def test_train_runs_end_to_end_on_imported_sessions_and_names_the_data(corpus, tmp_path):
    root, _ = corpus
    data = root / "recordings"
    r = subprocess.run([str(TRAIN_PY), "-m", "models.train", "--data", str(data), "--epochs",
                        "1", "--folds", "0", "--out", str(tmp_path)], cwd=REPO,
                       capture_output=True, text=True, timeout=900,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    card = (tmp_path / "MODEL_CARD.md").read_text()
    assert str(data) in card and (tmp_path / "mmme_fusion_int8.tflite").stat().st_size > 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_subjects"] == 2 and set(metrics["loso"]) == {"fused", "visual", "physio"}


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
