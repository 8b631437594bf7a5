"""Export a recording to a BIDS-like folder: BDF+ per sample stream, PNG frames, TSVs.

Why BDF+ and not EDF+: the ADS1299 gives 24-bit counts and BDF stores 24-bit samples, so
the EEG counts go into the file unchanged (digital value == raw count, physical range
from the stream's scale and offset). EDF's 16 bits would need requantising.
A stream whose counts do not fit 24 bits is rescaled linearly (noted in channels.tsv).

Layout (``sub``/``ses``/``task`` labels are arguments)::

    dataset_description.json
    sub-01/ses-01/eeg/sub-01_ses-01_task-mmme_eeg.bdf        stream "eeg"
    sub-01/ses-01/eeg/sub-01_ses-01_task-mmme_eeg.json       sidecar
    sub-01/ses-01/eeg/sub-01_ses-01_task-mmme_channels.tsv
    sub-01/ses-01/eeg/sub-01_ses-01_task-mmme_events.tsv     onsets on the eeg file's time
    sub-01/ses-01/eeg/sub-01_ses-01_task-mmme_recording-hub_physio.bdf   other streams
    sub-01/ses-01/eeg/sub-01_ses-01_task-mmme_recording-hub_channels.tsv
    sub-01/ses-01/video/sub-01_ses-01_task-mmme_video/000000.png  (lossless)
    sub-01/ses-01/video/sub-01_ses-01_task-mmme_frames.tsv   seq, t_ns, trigger, onset
    sub-01/ses-01/video/sub-01_ses-01_task-mmme_face/000000.png   store "face": the face
    sub-01/ses-01/video/sub-01_ses-01_task-mmme_face.tsv     regions, with x, y, w, h
                                                             (the _video/ frames are then
                                                             the context frames)

Streams keep separate files (each has its own device clock and rate). Samples sit at
``index - first_index``, so a dropped run becomes zeros plus a "gap" annotation and
later samples keep their true position. Annotation onsets map host time to sample
position with a least-squares fit of host_t_ns on index (device-clock drift included).
Each BDF also carries a ``TRIG`` channel with the trigger bits.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.recording.format import (
    FACE_TOPIC,
    Recording,
    RecordingError,
    StreamData,
    iter_frames,
    iter_video,
    open_recording,
)

BDF_MIN, BDF_MAX = -(2**23), 2**23 - 1
_UNIT_ASCII = {"µ": "u", "μ": "u", "°": "deg", "Ω": "Ohm"}


@dataclass(frozen=True)
class Timeline:
    """Host time of a stream's sample positions: t_ns = t0_ns + position * ns_per_sample."""

    t0_ns: float
    ns_per_sample: float
    first_index: int

    def position(self, t_ns: int | np.ndarray) -> np.ndarray:
        return (np.asarray(t_ns, dtype=np.float64) - self.t0_ns) / self.ns_per_sample


def fit_timeline(s: StreamData) -> Timeline:
    """Least-squares fit of host time on sample index: jitter averages out, drift stays."""
    first = int(s.index[0])
    pos = (s.index - first).astype(np.float64)
    t = (s.host_t_ns - s.host_t_ns[0]).astype(np.float64)
    nominal = 1e9 / s.info.fs_hz
    if len(s) < 2 or np.ptp(pos) == 0:
        return Timeline(float(s.host_t_ns[0]), nominal, first)
    slope, intercept = np.polyfit(pos, t, 1)
    if not (0.5 * nominal < slope < 2 * nominal):  # nonsense host times: trust the rate
        slope, intercept = nominal, float(np.median(t - pos * nominal))
    return Timeline(float(s.host_t_ns[0]) + intercept, float(slope), first)


def _ascii(text: str, n: int) -> str:
    for k, v in _UNIT_ASCII.items():
        text = text.replace(k, v)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return text[:n]


def _record_duration(fs_hz: float) -> float:
    for d in (1.0, 0.5, 0.25, 0.2, 0.1, 0.05, 0.04, 0.02, 0.01):
        if abs(fs_hz * d - round(fs_hz * d)) < 1e-9:
            return d
    return 1.0


def _place(s: StreamData) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]], bool]:
    """Samples at their index positions; returns (raw, trigger, gaps, by_index)."""
    d = np.diff(s.index)
    if len(s) and np.all(d > 0):
        pos = s.index - s.index[0]
        n = int(pos[-1]) + 1
        raw = np.zeros((n, s.raw.shape[1]), dtype=np.int32)
        trig = np.zeros(n, dtype=np.int32)
        raw[pos] = s.raw
        trig[pos] = s.trigger
        jumps = np.flatnonzero(d > 1)
        gaps = [(int(pos[j] + 1), int(d[j] - 1)) for j in jumps]
        return raw, trig, gaps, True
    # Index not increasing (device reset?): keep arrival order.
    return s.raw.astype(np.int32), s.trigger.astype(np.int32), [], False


def _fit8(x: float) -> float:
    """The value an 8-character EDF header field can hold nearest to x."""
    for decimals in range(7, -1, -1):
        text = f"{x:.{decimals}f}"
        if len(text) <= 8:
            return float(text)
    return float(f"{x:.0f}")  # out of range: edfio will refuse it with a clear message


_ROUND = (np.arange(1, 100)[:, None] * 10 ** np.arange(0, 6)[None, :]).ravel()
_D_CANDIDATES = np.unique(np.append(_ROUND[_ROUND < BDF_MAX], BDF_MAX))


def _ranges(lo: int, hi: int, scale: float, offset: float,
            ) -> tuple[tuple[int, int], tuple[float, float]]:
    """Digital and physical ranges whose 8-character header text keeps the scale exact.

    A symmetric digital range [-D, D] is tried with round D (and the full 24 bits); the D
    whose physical limits the header can write with the least rounding wins, so the
    reader's gain and offset equal the stream's scale and offset (e.g. ADS1299 at gain
    24: D = 2^23 - 1 maps to exactly 187500 uV).
    """
    need = max(abs(lo), abs(hi), 1)
    cands = _D_CANDIDATES[need <= _D_CANDIDATES]
    if lo < -BDF_MAX or cands.size == 0:  # -2^23 is in the data: only the full range holds it
        return (BDF_MIN, BDF_MAX), (_fit8(BDF_MIN * scale + offset),
                                    _fit8(BDF_MAX * scale + offset))
    best: tuple[float, int] | None = None
    for d in cands[::-1]:  # largest first: ties keep the most headroom
        pmin, pmax = -d * scale + offset, d * scale + offset
        err = abs(_fit8(pmin) - pmin) + abs(_fit8(pmax) - pmax)
        if best is None or err < best[0]:
            best = (err, int(d))
        if err == 0.0:
            break
    d = best[1]
    return (-d, d), (_fit8(-d * scale + offset), _fit8(d * scale + offset))


def _signals(s: StreamData, raw: np.ndarray, trig: np.ndarray, fs: float,
             ) -> tuple[list[Any], list[dict[str, str]]]:
    from edfio import BdfSignal

    sigs: list[Any] = []
    rows: list[dict[str, str]] = []
    info = s.info
    for c, name in enumerate(info.channels):
        col = raw[:, c]
        scale, offset = float(info.scale[c]), float(info.offset[c])
        lo, hi = (int(col.min()), int(col.max())) if col.size else (0, 0)
        note = "raw counts"
        digital = col.astype(np.int32)
        if lo < BDF_MIN or hi > BDF_MAX:  # wider than 24 bits: rescale onto 24 (lossy)
            span = max(hi - lo, 1)
            k = (2**24 - 1) / span
            digital = (np.round((col.astype(np.float64) - lo) * k) + BDF_MIN).astype(np.int32)
            offset, scale = offset + lo * scale - BDF_MIN * scale / k, scale / k
            lo, hi, note = BDF_MIN, BDF_MAX, "rescaled to 24 bit"
        if scale == 0:
            (dmin, dmax), (pmin, pmax) = (BDF_MIN, BDF_MAX), (float(BDF_MIN), float(BDF_MAX))
        else:
            (dmin, dmax), (pmin, pmax) = _ranges(lo, hi, scale, offset)
        unit = _ascii(info.units[c], 8)
        sigs.append(BdfSignal.from_digital(
            digital, fs, label=_ascii(name, 16), physical_dimension=unit,
            physical_range=(pmin, pmax), digital_range=(dmin, dmax)))
        rows.append({"name": name, "type": "EEG" if info.name == "eeg" else "MISC",
                     "units": unit, "sampling_frequency": f"{fs:g}",
                     "status": "good", "description": note})
    sigs.append(BdfSignal.from_digital(trig.astype(np.int32), fs, label="TRIG",
                                       physical_range=(0, 255), digital_range=(0, 255)))
    rows.append({"name": "TRIG", "type": "TRIG", "units": "n/a",
                 "sampling_frequency": f"{fs:g}", "status": "good",
                 "description": "trigger input bits (bit 0: sync pulse)"})
    return sigs, rows


def _annotations(rec: Recording, tl: Timeline, fs: float, duration_s: float,
                 gaps: list[tuple[int, int]]) -> list[tuple[float, float, str, str, int]]:
    """(onset_s, duration_s, trial_type, value, sample) inside the file's span."""
    out: list[tuple[float, float, str, str, int]] = []
    for m in rec.markers:
        out.append((float(tl.position(m.t_ns)) / fs, 0.0, "marker", str(m.code), 0))
    for e in rec.events:
        payload = e.get("payload")
        dur = float(payload.get("duration_s", 0.0)) if isinstance(payload, dict) else 0.0
        out.append((float(tl.position(e["t_ns"])) / fs, dur, "event", str(e.get("kind")), 0))
    for start, n in gaps:
        out.append((start / fs, n / fs, "gap", f"{n} samples lost", 0))
    keep = [(o, d, k, v, round(o * fs)) for o, d, k, v, _ in out if 0.0 <= o < duration_s]
    return sorted(keep)


def _annotation_text(kind: str, value: str) -> str:
    return {"marker": f"marker {value}", "event": f"event {value}"}.get(kind, f"gap {value}")


def _write_tsv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    lines = ["\t".join(columns)]
    lines += ["\t".join(str(r.get(c, "n/a")) for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def _start_datetime(rec: Recording, t0_ns: float) -> datetime.datetime:
    try:
        wall = int(rec.meta["wall_start_ns"]) + (t0_ns - int(rec.meta["mono_start_ns"]))
        return datetime.datetime.fromtimestamp(wall / 1e9)
    except (KeyError, ValueError, OverflowError, OSError):
        return datetime.datetime(2000, 1, 1)


def _write_bdf(rec: Recording, s: StreamData, path: Path, channels_tsv: Path,
               ) -> tuple[Timeline, list[tuple[float, float, str, str, int]]]:
    from edfio import Bdf, EdfAnnotation
    from edfio import Recording as EdfRecording

    fs = float(s.info.fs_hz)
    tl = fit_timeline(s)
    raw, trig, gaps, _ = _place(s)
    rec_d = _record_duration(fs)
    per = round(fs * rec_d)
    pad = (-len(raw)) % per
    if pad:  # BDF holds whole data records
        raw = np.vstack([raw, np.zeros((pad, raw.shape[1]), np.int32)])
        trig = np.concatenate([trig, np.zeros(pad, np.int32)])
    sigs, rows = _signals(s, raw, trig, fs)
    duration = len(raw) / fs
    anns = _annotations(rec, tl, fs, duration, gaps)
    start = _start_datetime(rec, tl.t0_ns)
    bdf = Bdf(sigs, recording=EdfRecording(startdate=start.date()),
              starttime=start.time().replace(microsecond=0), data_record_duration=rec_d,
              annotations=[EdfAnnotation(o, d or None, _annotation_text(k, v))
                           for o, d, k, v, _ in anns])
    bdf.write(path)
    _write_tsv(channels_tsv, rows,
               ["name", "type", "units", "sampling_frequency", "status", "description"])
    return tl, anns


def _export_video(rec_path: Path, video_dir: Path, stem: str, tl: Timeline | None,
                  fs: float) -> int:
    import cv2

    frames_dir = video_dir / f"{stem}_video"
    frames_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for f in iter_frames(rec_path):
        name = f"{len(rows):06d}.png"
        if not cv2.imwrite(str(frames_dir / name), f.luma, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
            raise OSError(f"cannot write {frames_dir / name}")
        onset = f"{float(tl.position(f.t_ns)) / fs:.6f}" if tl is not None else "n/a"
        rows.append({"seq": f.seq, "t_ns": f.t_ns, "trigger": f.trigger, "onset": onset,
                     "file": f"{frames_dir.name}/{name}"})
    _write_tsv(video_dir / f"{stem}_frames.tsv", rows,
               ["seq", "t_ns", "trigger", "onset", "file"])
    return len(rows)


def _export_faces(rec_path: Path, video_dir: Path, stem: str, tl: Timeline | None,
                  fs: float) -> int:
    """Face regions (store ``face``) as PNGs, their place in the frame in the TSV."""
    import cv2

    face_dir = video_dir / f"{stem}_face"
    face_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for img in iter_video(rec_path, FACE_TOPIC):
        hd = img.header
        name = f"{len(rows):06d}.png"
        if not cv2.imwrite(str(face_dir / name), img.luma, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
            raise OSError(f"cannot write {face_dir / name}")
        onset = f"{float(tl.position(hd.t_ns)) / fs:.6f}" if tl is not None else "n/a"
        rows.append({"seq": hd.seq, "t_ns": hd.t_ns, "trigger": hd.trigger, "onset": onset,
                     "x": hd.x, "y": hd.y, "width": hd.width, "height": hd.height,
                     "tracked": int(hd.tracked), "file": f"{face_dir.name}/{name}"})
    _write_tsv(video_dir / f"{stem}_face.tsv", rows,
               ["seq", "t_ns", "trigger", "onset", "x", "y", "width", "height", "tracked",
                "file"])
    return len(rows)


def export(rec_path: str | Path, out_dir: str | Path, subject: str = "01",
           session: str = "01", task: str = "mmme", video: bool = True) -> dict[str, Any]:
    """Write the BIDS-like export; returns what was written (paths, counts)."""
    rec_path, out = Path(rec_path), Path(out_dir)
    rec = open_recording(rec_path, frames=False)
    stem = f"sub-{subject}_ses-{session}_task-{task}"
    eeg_dir = out / f"sub-{subject}" / f"ses-{session}" / "eeg"
    eeg_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Any] = {"files": [], "streams": {}, "frames": 0, "faces": 0}
    ref: tuple[Timeline, float] | None = None
    events: list[tuple[float, float, str, str, int]] = []
    # The eeg stream (else the first) is the reference time line for events.tsv.
    order = sorted(rec.streams.values(), key=lambda s: s.info.name != "eeg")
    for s in order:
        if len(s) == 0:
            continue
        if s.info.name == "eeg":
            bdf, chans = eeg_dir / f"{stem}_eeg.bdf", eeg_dir / f"{stem}_channels.tsv"
        else:
            rs = f"{stem}_recording-{s.info.name}"
            bdf, chans = eeg_dir / f"{rs}_physio.bdf", eeg_dir / f"{rs}_channels.tsv"
        tl, anns = _write_bdf(rec, s, bdf, chans)
        written["files"] += [str(bdf), str(chans)]
        written["streams"][s.info.name] = {"samples": len(s), "fs_hz": s.info.fs_hz}
        if ref is None:
            ref, events = (tl, float(s.info.fs_hz)), anns
            sidecar = {"TaskName": task, "SamplingFrequency": s.info.fs_hz,
                       "EEGChannelCount": len(s.info.channels) if s.info.name == "eeg" else 0,
                       "EEGReference": "n/a", "PowerLineFrequency": "n/a",
                       "SoftwareFilters": "n/a", "RecordingType": "continuous",
                       "RecordingDuration": len(s) / s.info.fs_hz,
                       "Manufacturer": "mmme-edge"}
            side = bdf.with_suffix(".json")
            side.write_text(json.dumps(sidecar, indent=2) + "\n")
            written["files"].append(str(side))
    ev_path = eeg_dir / f"{stem}_events.tsv"
    _write_tsv(ev_path, [{"onset": f"{o:.6f}", "duration": f"{d:.6f}", "trial_type": k,
                          "value": v, "sample": n} for o, d, k, v, n in events],
               ["onset", "duration", "trial_type", "value", "sample"])
    written["files"].append(str(ev_path))
    if video and rec.frame_seq.size:
        vdir = out / f"sub-{subject}" / f"ses-{session}" / "video"
        tl, fs = ref if ref is not None else (None, 1.0)
        written["frames"] = _export_video(rec_path, vdir, stem, tl, fs)
        if rec.face_boxes.size:
            written["faces"] = _export_faces(rec_path, vdir, stem, tl, fs)
    desc = {"Name": f"mmme-edge recording {rec_path.name}", "BIDSVersion": "1.9.0",
            "DatasetType": "raw", "GeneratedBy": [{"Name": "mmme-edge export"}]}
    (out / "dataset_description.json").write_text(json.dumps(desc, indent=2) + "\n")
    written["complete"] = rec.complete
    written["problems"] = rec.problems
    return written


def export_main(argv: list[str] | None = None) -> int:
    """``mmme-edge export REC --out DIR``: 0 done, 2 bad arguments or unreadable file."""
    p = argparse.ArgumentParser(prog="mmme-edge export",
                                description="export a recording to BDF+ / PNG / TSV")
    p.add_argument("rec", help="recording (.mcap)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--sub", default="01")
    p.add_argument("--ses", default="01")
    p.add_argument("--task", default="mmme")
    p.add_argument("--no-video", action="store_true", help="skip the PNG frames")
    try:
        args = p.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        res = export(args.rec, args.out, args.sub, args.ses, args.task, not args.no_video)
    except RecordingError as exc:
        print(f"mmme-edge export: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"mmme-edge export: cannot write {args.out}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    streams = ", ".join(f"{k} {v['samples']} samples" for k, v in res["streams"].items())
    faces = f", {res['faces']} face regions" if res["faces"] else ""
    print(f"exported {streams}; {res['frames']} frames{faces} -> {args.out}")
    for prob in res["problems"]:
        print(f"note: {prob}")
    return 0


__all__ = ["Timeline", "export", "export_main", "fit_timeline"]
