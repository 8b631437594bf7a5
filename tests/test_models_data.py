"""Training data: the simulated cohort, the lab-data loaders, the metrics (no TensorFlow,
no training)."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from edge.features import band_powers
from edge.fusion import EMOTIONS, PERIPH_NAMES
from hil.sim.face_render import AUS
from hil.sim.scenario import COMPOSITE, ExpressionEvent, PhysioResponse, Scenario, Subject
from models import cohort
from models.dataset import load_mmme
from models.evaluate import ridge_loso, uar, uf1


def test_subjects_have_their_own_baselines_and_responsiveness():
    subs = [cohort.subject_scenario(k, 0)[0].subject for k in range(8)]
    for field in ("hr_bpm", "rr_bpm", "scl_us", "skt_c", "eeg_alpha_uv", "responsiveness"):
        vals = [getattr(s, field) for s in subs]
        assert len(set(vals)) >= 6, field
    assert len({s.subject_id for s in subs}) == 8
    # Same seed, same cohort; another seed, other subjects.
    assert cohort.subject_scenario(3, 0)[0] == cohort.subject_scenario(3, 0)[0]
    assert cohort.subject_scenario(3, 1)[0].subject != subs[3]


def test_every_subject_sees_each_emotion_equally_often():
    for k in range(5):
        scen, _ = cohort.subject_scenario(k, 0)
        counts = {e: 0 for e in EMOTIONS}
        for ev in scen.expressions:
            counts[ev.emotion] += 1
        assert set(counts.values()) == {cohort.EVENTS_PER_EMOTION}, counts


def test_events_are_renderable_micro_expressions_with_room_for_their_windows():
    scen, _ = cohort.subject_scenario(0, 0)
    apex = np.array([e.apex_s for e in scen.expressions])
    assert np.diff(apex).min() > 8.0  # HR/SCR windows (<= 5.5 s) do not overlap
    assert apex[0] - 10.0 > 10.0  # the breathing baseline is after the RSP warm-up
    for e in scen.expressions:
        assert e.kind == "micro" and 0.0 < e.intensity <= 1.0
        assert set(e.aus) <= set(AUS)
    intens = [e.intensity for e in scen.expressions]
    assert min(intens) < 0.3 and max(intens) > 0.6  # barely visible to obvious


def _scenario(emotion: str, n: int = 6) -> Scenario:
    ev = tuple(ExpressionEvent(onset_s=4.0 + 6 * i, apex_s=4.15 + 6 * i, offset_s=4.4 + 6 * i,
                               aus=("AU1",), emotion=emotion, response=PhysioResponse())
               for i in range(n))
    return Scenario(duration_s=6.0 * n + 4, subject=Subject(), expressions=ev)


def _apex_alpha(x: np.ndarray, fs: float, scen: Scenario) -> float:
    p = [band_powers(x[int((e.apex_s - 0.5) * fs):int((e.apex_s + 0.5) * fs)], fs)[2].mean()
         for e in scen.expressions]
    return float(np.mean(p))


def test_eeg_effects_change_band_power_around_the_apex_in_the_stated_direction():
    fs = 250.0
    rng = np.random.default_rng(0)
    scen = _scenario("surprise")  # alpha suppressed (EEG_EFFECTS: -0.25 log amplitude)
    x = rng.standard_normal((int(64 * fs), 8)) * 10
    y = cohort.add_emotion_eeg(x, fs, scen, 1.0, np.random.default_rng(1))
    assert _apex_alpha(y, fs, scen) < 0.8 * _apex_alpha(x, fs, scen)
    sad = _scenario("sad", 10)  # alpha raised (a smaller effect: direction only)
    y = cohort.add_emotion_eeg(x, fs, sad, 1.0, np.random.default_rng(1))
    assert _apex_alpha(y, fs, sad) > _apex_alpha(x, fs, sad)
    # Away from any event nothing changes.
    assert np.allclose(y[: int(2 * fs)], x[: int(2 * fs)])


def test_visual_input_grows_with_intensity_and_is_zero_without_movement():
    base = dict(onset_s=1.0, apex_s=1.15, offset_s=1.4, aus=("AU12", "AU6"), emotion="happy")
    mags = []
    for inten in (0.0, 0.3, 1.0):
        ev = ExpressionEvent(**base, intensity=max(inten, 1e-6))
        scen = Scenario(duration_s=3.0, expressions=(ev,))
        v = cohort.visual_input(scen, {"noise_sigma": 0.0, "gain": 1.0}, 0)
        mags.append(float(np.abs(v[0, ..., :2]).sum()))
    assert mags[0] < 0.1 * mags[2] and mags[1] < mags[2]


def _write_mmme(root, fps: float) -> list[dict]:
    """A tiny MMME-layout folder: two coded events in one clip, frames, EEG and periph."""
    from hil.sim.camera import SimCamera
    from hil.sim.eeg_model import EegModel
    from hil.sim.physio import PhysioModel

    rows = [dict(emotion="happy", onset=12.0, apex=12.2, offset=12.4, aus=("AU6", "AU12")),
            dict(emotion="disgust", onset=24.0, apex=24.2, offset=24.4, aus=("AU9", "AU10"))]
    ev = tuple(ExpressionEvent(onset_s=r["onset"], apex_s=r["apex"], offset_s=r["offset"],
                               aus=r["aus"], emotion=r["emotion"], intensity=1.0,
                               response=PhysioResponse(hr_delta_bpm=-6.0, scr_amp_us=0.6))
               for r in rows)
    scen = Scenario(duration_s=34.0, seed=5, expressions=ev)
    with open(root / "coding.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Subject", "Filename", "Marker", "OnsetTime", "ApexTime", "OffsetTime",
                    "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units",
                    "Estimated Emotion", "Macro/Micro"])
        for r in rows:
            w.writerow(["s07", "s07_clip1", 101, r["onset"], r["apex"], r["offset"], "", "",
                        "", "+".join(r["aus"]), r["emotion"], "micro"])
        w.writerow(["s07", "s07_clip1", 102, 30.0, 30.2, 30.4, "", "", "", "AU4",
                    "others", "micro"])  # not one of the seven: skipped
    cam = SimCamera(scen, fps=fps, seed=1, noise_sigma=1.0)
    fdir = root / "frames" / "s07_clip1"
    fdir.mkdir(parents=True)
    for i in range(int(scen.duration_s * fps)):
        cv2.imwrite(str(fdir / f"{i:05d}.png"), cam.render(i / fps))
    (root / "eeg").mkdir()
    (root / "periph").mkdir()
    t = np.arange(int(scen.duration_s * 250)) / 250
    eeg = EegModel(("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2"), 250, 0, scen).next(t.size, t)
    np.savetxt(root / "eeg" / "s07_clip1.csv", np.column_stack((t, eeg)), delimiter=",",
               header="t_s,Fp1,Fp2,C3,C4,P7,P8,O1,O2", comments="", fmt="%.4f")
    th = np.arange(int(scen.duration_s * 500)) / 500
    hub = PhysioModel(scen).chunk(th)
    np.savetxt(root / "periph" / "s07_clip1.csv", np.column_stack((th, hub)), delimiter=",",
               header="t_s,ECG,PPG,RSP,EDA,SKT", comments="", fmt="%.5f")
    return rows


def test_mmme_layout_loader_builds_labelled_inputs_from_a_tiny_folder(tmp_path):
    rows = _write_mmme(tmp_path, fps=10.0)
    d = load_mmme(tmp_path, fps=10.0)
    assert d["visual"].shape == (2, 28, 28, 3)
    assert d["eeg"].shape == (2, 80) and d["periph"].shape == (2, len(PERIPH_NAMES))
    assert [EMOTIONS[i] for i in d["emotion"]] == [r["emotion"] for r in rows]
    assert list(d["composite"]) == [1, 0]  # happy -> positive, disgust -> negative
    assert list(d["subject_name"]) == ["s07", "s07"]
    assert np.abs(d["visual"]).sum(axis=(1, 2, 3)).min() > 0  # face found, motion seen
    assert np.count_nonzero(d["eeg"], axis=1).min() >= 60  # most channels valid
    per = {n: d["periph"][:, i] for i, n in enumerate(PERIPH_NAMES)}
    assert np.all(per["hr_delta_bpm"] < 0)  # the scripted -6 bpm deceleration
    assert np.all(per["eda_scr_present"] == 1.0)


def test_mmme_loader_without_coding_file_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="coding"):
        load_mmme(tmp_path)


def test_uf1_and_uar_are_macro_averages():
    y = np.array([0, 0, 0, 0, 1, 2])
    assert uf1(y, y, 3) == 1.0 and uar(y, y, 3) == 1.0
    p = np.array([0, 0, 0, 0, 0, 0])  # always the majority class
    assert uar(y, p, 3) == pytest.approx(1 / 3)
    assert uf1(y, p, 3) == pytest.approx((2 * 4 / (2 * 4 + 2)) / 3)


def test_ridge_check_separates_an_informative_modality_and_not_noise():
    rng = np.random.default_rng(0)
    n = 300
    y = rng.integers(0, 3, n)
    data = {"good": np.eye(3)[y] * 2 + rng.standard_normal((n, 3)),
            "noise": rng.standard_normal((n, 5)), "composite": y,
            "subject": np.repeat(np.arange(6), n // 6)}
    assert ridge_loso(data, ("good",))[0] > 0.8
    assert ridge_loso(data, ("noise",))[0] < 0.5


def test_composite_labels_follow_the_scenario_mapping():
    for e in EMOTIONS:
        assert cohort.COMPOSITES.index(COMPOSITE[e]) in (0, 1, 2)
