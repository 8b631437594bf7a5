"""Loaders that turn a lab's own data into the training arrays of :mod:`models.train`.

Both paths compute inputs with the device's functions (FaceTracker + visual_features,
FeaturePipeline + edge.fusion.event_inputs), so training and the device agree.

1. Rig recordings (``*.mcap`` from edge/recording/recorder.py) with labelled events: every event
   on the recording's ``/events`` topic whose ``payload`` has ``onset_ns``, ``apex_ns``
   and ``emotion`` (the spotter's interval plus the emotion a coder assigned). Subject =
   the file's parent folder name. ``mmme-edge import-mmme`` writes the MMME release's
   sessions this way (``ground_truth`` events from the coding file).
2. MMME layout (one folder)::

       coding.csv | coding.xlsx   MMME coding file (edge.evaluation.annotations.read_mmme_coding)
       frames/<Filename>/*.png    the clip's frames in name order, frame i at i / fps s
       eeg/<Filename>.csv         header t_s,<channel>... (uV), t_s from the clip start
       periph/<Filename>.csv      header t_s,ECG,PPG,RSP,EDA,SKT (mV, au, au, uS, degC)

   Rows whose emotion is not one of the seven are skipped (and counted).

``load_dir(path)`` picks the layout: a coding file means MMME, else every ``*.mcap``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.fusion import EMOTIONS, PERIPH_NAMES, event_inputs
from sensors.blocks import SampleBlock, StreamInfo

COMPOSITES = ("negative", "positive", "surprise")
_COMPOSITE = {"angry": 0, "disgust": 0, "fear": 0, "sad": 0, "tense": 0, "happy": 1,
              "surprise": 2}
HUB_UNITS = {"ECG": "mV", "PPG": "au", "RSP": "au", "EDA": "uS", "SKT": "degC"}
T0_NS = 1_000_000_000_000  # host-time origin for files that only carry seconds
_BLOCK_S = 0.04


@dataclass(frozen=True)
class LabelledEvent:
    onset_ns: int
    apex_ns: int
    emotion: str


def _blocks(info: StreamInfo, t_ns: np.ndarray, x: np.ndarray) -> list[SampleBlock]:
    """Cut a stream into 40-ms SampleBlocks (raw = values: the pipeline reads values)."""
    n = len(t_ns)
    step = max(int(_BLOCK_S * info.fs_hz), 1)
    idx = np.arange(n, dtype=np.int64)
    out = []
    for a in range(0, n, step):
        b = min(a + step, n)
        out.append(SampleBlock(info.name, idx[a:b], idx[a:b], t_ns[a:b],
                               np.zeros((0,), np.int32), x[a:b], np.zeros(b - a, np.uint8),
                               np.zeros(b - a, np.uint32)))
    return out


def physio_inputs(streams: Sequence[tuple[StreamInfo, np.ndarray, np.ndarray]],
                  apex_ns: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(eeg (n, 80), periph (n, 9)) for events at ``apex_ns`` from (info, t_ns, values)
    streams (an "eeg" and/or a "hub" stream), streamed through the FeaturePipeline."""
    from edge.features import FeaturePipeline

    by = {info.name: (info, t, x) for info, t, x in streams}
    eeg, hub = by.get("eeg"), by.get("hub")
    pipe = FeaturePipeline(eeg[0] if eeg else None, hub[0] if hub else None)
    blocks = [b for s in (eeg, hub) if s for b in _blocks(*s)]
    blocks.sort(key=lambda b: int(b.host_t_ns[-1]))
    order = np.argsort(apex_ns)
    ex = np.zeros((len(apex_ns), 80), np.float32)
    px = np.zeros((len(apex_ns), len(PERIPH_NAMES)), np.float32)
    k = 0
    for b in blocks:
        pipe.update(b)
        while k < len(order) and int(b.host_t_ns[-1]) > apex_ns[order[k]] + 8_000_000_000:
            ex[order[k]], px[order[k]] = event_inputs(pipe, int(apex_ns[order[k]]))
            k += 1
    for j in order[k:]:  # events too close to the end: what the windows hold
        ex[j], px[j] = event_inputs(pipe, int(apex_ns[j]))
    return ex, px


def visual_input(frame_at: Callable[[int], np.ndarray | None], onset_ns: int, apex_ns: int,
                 fps: float) -> np.ndarray:
    """28x28x3 input from the frame before onset and the apex frame (zeros: no face)."""
    from edge.spotting.face import FaceStatus, FaceTracker
    from edge.spotting.visual import visual_features

    a_img, b_img = frame_at(onset_ns - int(1e9 / fps)), frame_at(apex_ns)
    if a_img is None or b_img is None:
        return np.zeros((28, 28, 3), np.float32)
    tr = FaceTracker(fps)
    a, b = tr.update(a_img), tr.update(b_img)
    if a.status != FaceStatus.OK or b.status != FaceStatus.OK:
        return np.zeros((28, 28, 3), np.float32)
    return visual_features(a.crop, b.crop).stst


def _arrays(subject: str, vis: list, eeg: np.ndarray, per: np.ndarray, emos: list[str]
            ) -> dict[str, np.ndarray]:
    e = np.array([EMOTIONS.index(x) for x in emos], np.int64)
    return {"visual": np.asarray(vis, np.float32).reshape(-1, 28, 28, 3),
            "eeg": eeg, "periph": per, "emotion": e,
            "composite": np.array([_COMPOSITE[x] for x in emos], np.int64),
            "subject_name": np.array([subject] * len(emos))}


# ------------------------------------------------------------------ rig recordings
def recording_events(rec: object) -> list[LabelledEvent]:
    out = []
    for ev in rec.events:  # type: ignore[attr-defined]
        p = ev.get("payload") or {}
        if isinstance(p, dict) and {"onset_ns", "apex_ns", "emotion"} <= p.keys() \
                and str(p["emotion"]).lower() in EMOTIONS:
            out.append(LabelledEvent(int(p["onset_ns"]), int(p["apex_ns"]),
                                     str(p["emotion"]).lower()))
    return out


def load_recording(path: str | Path) -> dict[str, np.ndarray]:
    from edge.recording.format import iter_frames, open_recording

    rec = open_recording(path, frames=False)  # a long session's frames do not fit in memory
    events = recording_events(rec)
    fps = float((rec.camera or {}).get("fps", 150.0))
    ft = rec.frame_t_ns

    def position(t_ns: int) -> int:
        return int(np.clip(np.searchsorted(ft, t_ns, side="right") - 1, 0, len(ft) - 1))

    want = {position(t) for e in events for t in (e.onset_ns - int(1e9 / fps), e.apex_ns)} \
        if len(ft) else set()
    want_t = {int(ft[i]) for i in want}
    kept: dict[int, np.ndarray] = {}
    if want_t:  # one pass over the frames, keeping only those the events need
        last = max(want_t)
        for f in iter_frames(path):
            if f.t_ns in want_t:
                kept[f.t_ns] = f.luma
            if len(kept) == len(want_t) or f.t_ns >= last:
                break

    def frame_at(t_ns: int) -> np.ndarray | None:
        return kept.get(int(ft[position(t_ns)])) if len(ft) else None

    streams = [(s.info, s.host_t_ns, s.values) for s in rec.streams.values() if len(s)]
    eeg, per = physio_inputs(streams, [e.apex_ns for e in events])
    vis = [visual_input(frame_at, e.onset_ns, e.apex_ns, fps) for e in events]
    return _arrays(Path(path).parent.name, vis, eeg, per, [e.emotion for e in events])


# ------------------------------------------------------------------ MMME layout
def _csv(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, encoding="utf-8") as f:
        header = [h.strip() for h in f.readline().split(",")]
    return header, np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)


def _csv_stream(path: Path, name: str) -> tuple[StreamInfo, np.ndarray, np.ndarray] | None:
    if not path.is_file():
        return None
    header, a = _csv(path)
    t_s, x = a[:, 0], a[:, 1:]
    fs = float(1.0 / np.median(np.diff(t_s)))
    ch = tuple(header[1:])
    units = tuple(HUB_UNITS.get(c.upper(), "au") for c in ch) if name == "hub" \
        else ("uV",) * len(ch)
    info = StreamInfo(name, fs, ch, units, (1.0,) * len(ch), (0.0,) * len(ch),
                      "sample" if name == "eeg" else "us")
    return info, T0_NS + np.round(t_s * 1e9).astype(np.int64), x


def load_mmme(root: str | Path, fps: float = 150.0) -> dict[str, np.ndarray]:
    from edge.evaluation.annotations import read_mmme_coding

    root = Path(root)
    coding = next((p for p in (root / "coding.csv", root / "coding.xlsx") if p.is_file()), None)
    if coding is None:
        raise FileNotFoundError(f"{root}: no coding.csv or coding.xlsx")
    rows = [r for r in read_mmme_coding(coding, fps=fps) if r.emotion in EMOTIONS]
    parts = []
    for video in dict.fromkeys(r.video for r in rows):
        clip = [r for r in rows if r.video == video]
        files = sorted((root / "frames" / video).glob("*.png")) + \
            sorted((root / "frames" / video).glob("*.jpg"))

        def frame_at(t_ns: int, files: list[Path] = files) -> np.ndarray | None:
            if not files:
                return None
            i = int(np.clip(round((t_ns - T0_NS) / 1e9 * fps), 0, len(files) - 1))
            return cv2.imread(str(files[i]), cv2.IMREAD_GRAYSCALE)

        streams = [s for s in (_csv_stream(root / "eeg" / f"{video}.csv", "eeg"),
                               _csv_stream(root / "periph" / f"{video}.csv", "hub")) if s]
        on = [T0_NS + round(r.onset_s * 1e9) for r in clip]
        ap = [T0_NS + round((r.apex_s if r.apex_s is not None else r.onset_s) * 1e9)
              for r in clip]
        eeg, per = physio_inputs(streams, ap)
        vis = [visual_input(frame_at, o, a, fps) for o, a in zip(on, ap, strict=True)]
        parts.append(_arrays(clip[0].subject, vis, eeg, per, [r.emotion for r in clip]))
    return _concat(parts)


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not parts:
        raise ValueError("no labelled events found")
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    _, out["subject"] = np.unique(out["subject_name"], return_inverse=True)
    return out


def load_dir(path: str | Path) -> dict[str, np.ndarray]:
    """MMME layout if a coding file is there, else every rig recording below ``path``."""
    p = Path(path)
    if (p / "coding.csv").is_file() or (p / "coding.xlsx").is_file():
        return load_mmme(p)
    return _concat([load_recording(f) for f in sorted(p.rglob("*.mcap"))])
