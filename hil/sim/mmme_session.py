"""A simulated MMME lab session written in the corpus's documented layout, with its truth.

The released corpus has no public sample of its BIOPAC export or its frame files, so
tests build sessions here, in exactly the layout the release documents, from the
simulated rig's models with a known ground truth:

    <out>/<subject>/EEG/Acquisition 01.cdt (+ .cdt.dpa, .cdt.cef)   Curry 8 (hil/sim/curry.py)
    <out>/<subject>/BIOPAC/Untitled1 (001).mat                       17 columns, 1000 Hz
    <out>/<subject>/Camera/<Y-M-D-h-m-s-ms-Code-Marker>.tif          8-bit grey frames
    <out>/coding.csv                                                 coding-file columns
    <out>/<subject>/truth.json                                       what the import must find

EEG: 64 channels from :class:`hil.sim.eeg_model.EegModel` plus HEO, VEO, EKG, EMG and a
Trigger channel carrying the marker code (69 channels; with time, the release's 70
columns). Polygraph: :class:`hil.sim.physio.PhysioModel` in the documented 17 columns,
the marker code on ``Digital (STP Input 0..7)`` (bit i = input i, 0/5 V). Camera:
:class:`hil.sim.camera.SimCamera` frames of the scenario's expressions, named with the
camera PC's wall clock (ms, with jitter) and a frame counter 1..``counter_wrap`` that
wraps; a few frames are dropped (gaps in the counter).

Each stream runs on its own crystal (ppm drift and start offset against true time), so
the import must find the mapping from the shared marker edges. Markers are pulses (code
for 40-160 ms, then 0) every 0.3-0.6 s: far denser than the study's clip markers, so a
few seconds give enough edges; the importer does not depend on the density.
Frames are small (``frame_size``, default 1/8 of the XIMEA's 2048x1088) to keep
fixtures light; the importer scales whatever size it finds.
"""

from __future__ import annotations

import csv
import datetime
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hil.sim.curry import write_curry8
from hil.sim.scenario import (
    COMPOSITE,
    EMOTION_AUS,
    ExpressionEvent,
    Scenario,
    Subject,
)

EEG_64 = ("FP1", "FPZ", "FP2", "AF3", "AF4", "F7", "F5", "F3", "F1", "FZ", "F2", "F4", "F6",
    "F8", "FT7", "FC5", "FC3", "FC1", "FCZ", "FC2", "FC4", "FC6", "FT8", "T7", "C5", "C3",
    "C1", "CZ", "C2", "C4", "C6", "T8", "M1", "TP7", "CP5", "CP3", "CP1", "CPZ", "CP2", "CP4",
    "CP6", "TP8", "M2", "P7", "P5", "P3", "P1", "PZ", "P2", "P4", "P6", "P8", "PO7", "PO5",
    "PO3", "POZ", "PO4", "PO6", "PO8", "CB1", "O1", "OZ", "O2", "CB2")
EEG_EXTRA = ("HEO", "VEO", "EKG", "EMG", "Trigger")
BIOPAC_COLUMNS = (
    "PPG, X, PPGED-R", "RSP, X, RSPEC-R", "EMG A, X, EMG2-R", "SKT A, X, SKT2-R",
    "EDA, X, PPGED-R", "ECG, X, RSPEC-R", "EMG B, X, EMG2-R", "SKT B, X, SKT2-R",
    *(f"Digital (STP Input {i})" for i in range(8)), "ECG rate (.5 - 35 Hz)")
BIOPAC_UNITS = ("Volts", "Volts", "mV", "Deg C", "microsiemens", "mV", "mV", "Deg C",
                *("Volts",) * 8, "BPM")
CODING_COLUMNS = ("Subject", "Filename", "Marker", "OnsetTime", "ApexTime", "OffsetTime",
                  "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units",
                  "Estimated Emotion", "Macro/Micro", "Date", "dif")


@dataclass(frozen=True)
class LabSession:
    subject: str = "S01"
    duration_s: float = 6.0
    seed: int = 0
    fs_hz: float = 1000.0
    fps: float = 150.0
    eeg_start_s: float = 0.20  # true time of each stream's first sample
    bio_start_s: float = 0.05
    cam_start_s: float = 0.10
    eeg_ppm: float = 30.0  # crystal error: the stream's clock runs fast by this much
    bio_ppm: float = -80.0
    cam_ppm: float = 60.0
    cam_pc_offset_ms: float = 37.0  # camera PC's wall clock minus the EEG PC's
    counter_start: int = 940  # frame counter of the first frame (wraps after 1000)
    counter_wrap: int = 1000
    dropped_frames: tuple[int, ...] = (101, 102, 417)
    frame_size: tuple[int, int] = (256, 136)  # width, height
    n_expressions: int = 2
    render_faces: bool = True  # False: flat grey frames (clock tests need no faces, and are fast)
    wall_start: str = "2019-05-14T10:32:05.250"  # the EEG PC's clock at true time 0


def _scenario(p: LabSession, rng: np.random.Generator) -> Scenario:
    emotions = list(EMOTION_AUS)
    exprs = []
    span = (p.duration_s - 1.5) / max(p.n_expressions, 1)
    for i in range(p.n_expressions):
        emo = emotions[(p.seed * p.n_expressions + i) % len(emotions)]  # spread over subjects
        onset = round(0.8 + i * span + float(rng.uniform(0, span - 0.6)), 3)
        dur = float(rng.uniform(0.3, 0.45))
        exprs.append(ExpressionEvent(onset, round(onset + dur * 0.45, 3), round(onset + dur, 3),
                                     EMOTION_AUS[emo], emo, intensity=1.0))
    return Scenario(duration_s=p.duration_s, seed=p.seed, subject=Subject(p.subject),
                    expressions=tuple(exprs))


def _pulses(p: LabSession, rng: np.random.Generator) -> list[tuple[float, float, int]]:
    """(start_s, end_s, code) marker pulses in true time."""
    out, t = [], 0.3
    while t < p.duration_s - 0.3:
        w = float(rng.uniform(0.04, 0.16))
        out.append((round(t, 6), round(t + w, 6), int(rng.integers(100, 149))))
        t += w + float(rng.uniform(0.15, 0.45))
    return out


def _marker_at(pulses: list[tuple[float, float, int]], t: np.ndarray) -> np.ndarray:
    code = np.zeros(t.shape, np.int64)
    for a, b, c in pulses:
        code[(t >= a) & (t < b)] = c
    return code


def _times(start_s: float, rate: float, ppm: float, duration_s: float) -> np.ndarray:
    """True times of a stream's samples: its clock runs (1 + ppm) fast."""
    n = int((duration_s - start_s) * rate)
    return start_s + np.arange(n) / (rate * (1 + ppm * 1e-6))


def _frame_field(wall: datetime.datetime, counter: int | None) -> str:
    s = f"{wall.hour:02d}-{wall.minute:02d}-{wall.second:02d}-{wall.microsecond // 1000:03d}"
    return s if counter is None else f"{s}-{counter}"


def write_session(out: str | Path, p: LabSession = LabSession()) -> dict:
    """Write one subject's session under ``out/<subject>`` and its coding rows into
    ``out/coding.csv`` (appended); return the truth (also in ``truth.json``)."""
    import cv2
    from scipy.io import savemat

    from hil.sim.camera import SimCamera
    from hil.sim.eeg_model import EegModel
    from hil.sim.physio import PhysioModel

    rng = np.random.default_rng([p.seed, 18])
    root = Path(out) / p.subject
    for d in ("EEG", "BIOPAC", "Camera"):
        (root / d).mkdir(parents=True, exist_ok=True)
    scen = _scenario(p, rng)
    pulses = _pulses(p, rng)
    wall0 = datetime.datetime.fromisoformat(p.wall_start)

    # EEG (Curry 8): 64 channels, HEO/VEO/EKG/EMG, Trigger = the marker code.
    t_e = _times(p.eeg_start_s, p.fs_hz, p.eeg_ppm, p.duration_s)
    eeg = EegModel(EEG_64, p.fs_hz, seed=p.seed, scenario=scen).next(t_e.size, t_e)
    phys = PhysioModel(scen).chunk(t_e)
    extra = np.column_stack([rng.normal(0, 8, t_e.size), rng.normal(0, 8, t_e.size),
                             phys[:, 0] * 1000.0, rng.normal(0, 5, t_e.size),
                             _marker_at(pulses, t_e)])
    trig = extra[:, -1].astype(np.int64)
    rises = np.flatnonzero(np.diff(np.r_[0, trig]) > 0)
    write_curry8(root / "EEG" / "Acquisition 01.cdt", np.hstack([eeg, extra]),
                 [*EEG_64, *EEG_EXTRA], p.fs_hz,
                 wall0 + datetime.timedelta(seconds=p.eeg_start_s),
                 [(int(i), int(trig[i])) for i in rises])

    # BIOPAC MP160 export: the documented 17 columns, STP bits = the marker code.
    t_b = _times(p.bio_start_s, p.fs_hz, p.bio_ppm, p.duration_s)
    pm = PhysioModel(scen)
    v = pm.chunk(t_b)  # ECG, PPG, RSP, EDA, SKT
    code = _marker_at(pulses, t_b)
    bits = [5.0 * ((code >> i) & 1) for i in range(8)]
    cols = [v[:, 1], v[:, 2], rng.normal(0, 0.01, t_b.size), v[:, 4], v[:, 3], v[:, 0],
            rng.normal(0, 0.01, t_b.size), v[:, 4] + 0.3, *bits, pm.hr_bpm(t_b)]
    savemat(root / "BIOPAC" / "Untitled1 (001).mat",
            {"data": np.column_stack(cols), "labels": np.array(BIOPAC_COLUMNS, dtype=object),
             "units": np.array(BIOPAC_UNITS, dtype=object), "isi": 1000.0 / p.fs_hz,
             "isi_units": "ms", "start_sample": 0})

    # Camera: frames named Y-M-D-h-m-s-ms-Code-Marker, counter wrapping at counter_wrap.
    t_c = _times(p.cam_start_s, p.fps, p.cam_ppm, p.duration_s)
    w, h = p.frame_size
    cam = SimCamera(scen, fps=p.fps, width=w, height=h, seed=p.seed)
    jitter_ms = rng.uniform(0.0, 2.0, t_c.size)
    marker_c = _marker_at(pulses, t_c)
    counters = (p.counter_start - 1 + np.arange(t_c.size)) % p.counter_wrap + 1
    names: list[str] = []
    for k, t in enumerate(t_c):
        wall = wall0 + datetime.timedelta(milliseconds=t * 1e3 + p.cam_pc_offset_ms
                                          + jitter_ms[k])
        name = (f"{wall.year}-{wall.month:02d}-{wall.day:02d}-{wall.hour:02d}-"
                f"{wall.minute:02d}-{wall.second:02d}-{wall.microsecond // 1000:03d}-"
                f"{counters[k]}-{marker_c[k]}.tif")
        names.append(name)
        if k in p.dropped_frames:
            continue
        img = cam.render(float(t)) if p.render_faces else np.full((h, w), 128, np.uint8)
        cv2.imwrite(str(root / "Camera" / name), img)

    # Coding rows: frame fields of the frames at onset / apex / offset (counter present,
    # except the last row of each session, as in some rows of the real file).
    rows = []
    for i, ev in enumerate(scen.expressions):
        ks = [int(np.searchsorted(t_c, x)) for x in (ev.onset_s, ev.apex_s, ev.offset_s)]
        before = [(a, c) for a, _, c in pulses if a <= ev.onset_s]
        clip0, marker = before[-1] if before else (0.0, 100)  # the clip starts at its marker
        c0 = int(np.searchsorted(t_c, clip0))
        with_counter = i < len(scen.expressions) - 1
        fields = [_frame_field(_wall_of(names[k]), int(counters[k]) if with_counter else None)
                  for k in ks]
        rows.append({
            "Subject": p.subject,
            "Filename": f"{ev.emotion}_{i + 1}_{marker}_{p.subject}_{wall0:%Y%m%d}.avi",
            "Marker": marker,
            "OnsetTime": f"{t_c[ks[0]] - t_c[c0]:.4f}", "ApexTime": f"{t_c[ks[1]] - t_c[c0]:.4f}",
            "OffsetTime": f"{t_c[ks[2]] - t_c[c0]:.4f}",
            "OnsetFrame": fields[0], "ApexFrame": fields[1], "OffsetFrame": fields[2],
            "Action Units": ", ".join(ev.aus), "Estimated Emotion": ev.emotion,
            "Macro/Micro": "Micro" if ev.kind == "micro" else "Macro",
            "Date": "2020-01-01", "dif": ks[2] - ks[0],
        })
    coding = Path(out) / "coding.csv"
    new = not coding.exists()
    with open(coding, "a", newline="", encoding="utf-8") as f:
        wr = csv.DictWriter(f, fieldnames=CODING_COLUMNS)
        if new:
            wr.writeheader()
        wr.writerows(rows)

    truth = {
        "params": asdict(p),
        "pulses": pulses,
        "expressions": [{**asdict(e), "kind": e.kind, "composite": COMPOSITE[e.emotion],
                         "onset_frame": int(np.searchsorted(t_c, e.onset_s))}
                        for e in scen.expressions],
        "n_frames_named": len(names), "n_eeg": int(t_e.size), "n_bio": int(t_b.size),
    }
    (root / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


def _wall_of(name: str) -> datetime.datetime:
    y, mo, d, h, mi, s, ms = (int(x) for x in name.split("-")[:7])
    return datetime.datetime(y, mo, d, h, mi, s, ms * 1000)


def true_times(truth: dict, stream: str, n: int) -> np.ndarray:
    """True time (s) of a stream's first ``n`` samples or frames (frames: by position in
    the named sequence, before drops)."""
    p = LabSession(**{k: tuple(v) if isinstance(v, list) else v
                      for k, v in truth["params"].items()})
    start, rate, ppm = {"eeg": (p.eeg_start_s, p.fs_hz, p.eeg_ppm),
                        "hub": (p.bio_start_s, p.fs_hz, p.bio_ppm),
                        "camera": (p.cam_start_s, p.fps, p.cam_ppm)}[stream]
    return start + np.arange(n) / (rate * (1 + ppm * 1e-6))


__all__ = ["BIOPAC_COLUMNS", "EEG_64", "EEG_EXTRA", "LabSession",
           "true_times", "write_session"]
