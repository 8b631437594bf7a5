"""``mmme-edge import-mmme SESSION_DIR --out REC``: one MMME session as a rig recording.

Reads the session's three streams (:mod:`edge.corpus.mmme_layout`), puts them on one
clock and writes an ordinary recording (:mod:`edge.recording.format`, through the rig's
own :class:`~edge.recording.recorder.Recorder`), so ``info``, ``export``, replay, the
benches and the dashboard read it unchanged.

One clock. The three streams share the trigger line: the EEG's Trigger channel, the
BIOPAC's STP inputs and the marker in each frame's name. Every change of the marker
value is an *edge*, keyed by the value after it. The reference is the EEG (else the
polygraph): its sample ``i`` is at ``i / fs`` on the recording's time line. For each other
stream, edges are paired with the reference's edges of the same key: an anchor pair with
the most same-key pairs around it (offset within 20 ms + 500 ppm of the time between)
gives the coarse offset, then each edge takes the nearest same-key reference edge, and
the pairs (rises and falls alike) are fitted by the rig's own
:class:`edge.clock.model.ClockModel` (robust line with a drift prior). Edge times are
midpoints between the last sample before and the first after the change, so the sample
quantisation (1 ms at 1 kHz, one frame at 150 fps) is unbiased and averages out over
the pairs. Device time: EEG and polygraph sample index; camera the frame counter
unwrapped (it wraps at ``counter_wrap``; the wall-clock names choose the wrap count).

Residuals reported per stream are reference edge time minus the fitted map at each
paired edge, so they include both streams' sampling quantisation (up to +-0.5 ms each at
1 kHz, +-3.3 ms for frames); the map itself is better than that (the fixture test
checks it against the truth).

Ground truth: the coding file's rows that fall in this session (date in the Filename,
wall-clock time of the onset frame within the frames' span) become ``/events`` messages
of kind ``ground_truth`` with ``onset_ns``, ``apex_ns``, ``offset_ns``, ``emotion``,
``composite``, ``kind`` (micro/macro), ``aus``, ``marker``, ``video``, ``subject``
(what ``models.dataset`` trains on and ``export`` writes as annotations). A row is placed
on the frame whose name has the row's wall-clock time and counter; without a counter,
on the frame nearest in wall-clock time; apex and offset follow by the counter
difference (or the seconds columns). Without frames, a row is placed on its clip's marker
(the seconds columns count from the clip's start), found by the row's wall-clock time.

Streams in the recording: ``eeg`` (every channel of the file, 10-20 spelling, uV as
int32 counts of 1 nV; the Trigger channel in codes), ``hub`` (the polygraph's analogue
columns named as the rig's hub channels, ``STP`` = the marker code from the 8 digital
inputs, ``ECG rate``), ``/camera`` (8-bit luma scaled to ``camera_width``, seq = the
unwrapped counter), ``/markers`` (the reference's marker events: the EEG file's
annotations, else its Trigger rises), ``/clock`` (each fitted map's state) and
``/status`` (device ``mmme-import``: the import report). The trigger byte of every
block is 0: the lab rig had no sync pulse train.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.clock.model import ClockModel
from edge.corpus.mmme_layout import (
    HUB_NAMES,
    EegFile,
    FrameList,
    LayoutError,
    PolygraphFile,
    detect_wrap,
    list_frames,
    load_luma,
    read_eeg,
    read_polygraph,
    standard_eeg_name,
    unwrap_counter,
)
from sensors.blocks import Frame, Marker, SampleBlock, StreamInfo

NS = 1_000_000_000
ORIGIN_NS = NS  # the earliest sample of any stream sits at 1 s on the recording's time line
BLOCK_S = 0.04
EEG_NV_PER_COUNT = 1e-3  # uV per count: 1 nV steps, +-2.1 V range
HUB_COUNT = 1e-6  # unit per count for the polygraph's analogue channels
ANCHOR_TOL_S = 0.020
ANCHOR_PPM = 500e-6
CLIP_MAX_S = 600.0  # a coded row lies at most this long after its clip's marker
FRAME_LOOKAHEAD = 64  # frames decoded ahead of the writer (bounds memory)
PAIR_TOL_S = 0.012  # after the coarse fit: a frame period plus the marker's own latency


class SessionError(ValueError):
    """Nothing of the session could be imported."""


@dataclass
class Edges:
    device_t: np.ndarray  # float64 device units (midpoint of the change)
    key: np.ndarray  # int64 value after the edge
    units_per_s: float


@dataclass
class Alignment:
    model: ClockModel | None
    pairs: int = 0
    edges: int = 0
    unmatched_edges: int = 0
    residual_ns: np.ndarray = field(default_factory=lambda: np.zeros(0))
    note: str = ""

    def summary(self) -> dict[str, Any]:
        r = np.abs(self.residual_ns) / 1e6
        d: dict[str, Any] = {"edges": self.edges, "pairs": self.pairs,
                             "unmatched_edges": self.unmatched_edges}
        if r.size:
            d.update(residual_p50_ms=round(float(np.percentile(r, 50)), 4),
                     residual_p99_ms=round(float(np.percentile(r, 99)), 4),
                     residual_max_ms=round(float(r.max()), 4))
        if self.model is not None:
            d["drift_ppm"] = round(self.model.drift_ppm, 2)
        if self.note:
            d["note"] = self.note
        return d


def code_edges(code: np.ndarray, device_t: np.ndarray, units_per_s: float,
               max_gap: float = 1.0) -> Edges:
    """Every change of ``code``: time halfway between the samples around it, keyed by the
    new value. A change across a gap (device step > ``max_gap`` units: lost frames) is
    left out: where in the gap it happened is unknown."""
    code = np.asarray(code, np.int64)
    dt = np.asarray(device_t, np.float64)
    j = np.flatnonzero(np.diff(code) != 0) + 1
    ok = (dt[j] - dt[j - 1]) <= max_gap * 1.0001
    j = j[ok]
    return Edges((dt[j] + dt[j - 1]) / 2.0, code[j], units_per_s)


def _pair(dev_s: np.ndarray, dkey: np.ndarray, ref_s: np.ndarray, rkey: np.ndarray,
          pred_s: np.ndarray, tol_s: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Each device edge with the nearest same-key reference edge to its predicted time."""
    di, rj = [], []
    for k in np.unique(dkey):
        r_idx = np.flatnonzero(rkey == k)
        if r_idx.size == 0:
            continue
        d_idx = np.flatnonzero(dkey == k)
        dist = np.abs(pred_s[d_idx, None] - ref_s[None, r_idx])
        best = dist.argmin(axis=1)
        tol = np.broadcast_to(np.asarray(tol_s, np.float64), dev_s.shape)[d_idx]
        ok = dist[np.arange(d_idx.size), best] <= tol
        di.append(d_idx[ok])
        rj.append(r_idx[best[ok]])
    if not di:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    a, b = np.concatenate(di), np.concatenate(rj)
    # One reference edge per device edge and back: where two claim one, the first wins.
    _, first = np.unique(b, return_index=True)
    keep = np.sort(first)
    order = np.argsort(a[keep])
    return a[keep][order], b[keep][order]


def align(name: str, dev: Edges, ref: Edges, sample_period_s: float) -> Alignment:
    """Fit ``dev``'s device time -> reference ns (module docstring)."""
    out = Alignment(None, edges=int(dev.key.size))
    if dev.key.size == 0 or ref.key.size == 0:
        out.unmatched_edges = int(dev.key.size)
        out.note = "no marker edges in this stream" if dev.key.size == 0 else \
            "no marker edges in the reference"
        return out
    ds, rs = dev.device_t / dev.units_per_s, ref.device_t / ref.units_per_s
    # Coarse: the anchor (same-key pair of rises) that most other edges agree with.
    cand = [(i, j) for i in np.flatnonzero(dev.key != 0)
            for j in np.flatnonzero(ref.key == dev.key[i])]
    if len(cand) > 4000:
        cand = [cand[k] for k in np.linspace(0, len(cand) - 1, 4000).astype(int)]
    best = (0, 0.0)
    for i, j in cand:
        off = rs[j] - ds[i]
        tol = ANCHOR_TOL_S + ANCHOR_PPM * np.abs(ds - ds[i])
        a, _ = _pair(ds, dev.key, rs, ref.key, ds + off, tol)
        if a.size > best[0]:
            best = (int(a.size), float(off))
    if best[0] < 2:
        out.unmatched_edges = int(dev.key.size)
        out.note = "fewer than 2 marker edges agree with the reference"
        return out
    a, b = _pair(ds, dev.key, rs, ref.key, ds + best[1],
                 ANCHOR_TOL_S + ANCHOR_PPM * np.abs(ds - ds.mean()))
    model = _fit(name, dev, ref, a, b, sample_period_s)
    pred = model.to_host_ns(dev.device_t).astype(np.float64) / NS
    a, b = _pair(ds, dev.key, rs, ref.key, pred, PAIR_TOL_S + sample_period_s)
    model = _fit(name, dev, ref, a, b, sample_period_s)
    host = np.round(ref.device_t[b] / ref.units_per_s * NS)
    out.model = model
    out.pairs = int(a.size)
    out.unmatched_edges = int(dev.key.size - a.size)
    out.residual_ns = host - model.to_host_ns(dev.device_t[a]).astype(np.float64)
    return out


def _fit(name: str, dev: Edges, ref: Edges, a: np.ndarray, b: np.ndarray,
         sample_period_s: float) -> ClockModel:
    model = ClockModel(name, dev.units_per_s, window_pairs=max(600, int(a.size) + 1),
                       sample_period_s=sample_period_s, step_floor_ns=50_000_000.0)
    for i, j in zip(a, b, strict=True):
        model.add_pair(float(dev.device_t[i]), round(ref.device_t[j] / ref.units_per_s * NS))
    return model


# ---------------------------------------------------------------- session files


@dataclass
class SessionFiles:
    eeg: Path | None = None
    polygraph: Path | None = None
    frames: Path | None = None
    coding: Path | None = None
    notes: list[str] = field(default_factory=list)


def find_session(root: Path | None, eeg: Path | None = None, polygraph: Path | None = None,
                 frames: Path | None = None, coding: Path | None = None) -> SessionFiles:
    """The session's files: given paths win, else the first of each kind under ``root``."""
    s = SessionFiles(eeg, polygraph, frames, coding)
    if root is None:
        return s
    if not root.is_dir():
        raise SessionError(f"{root}: not a folder")

    def first(patterns: tuple[str, ...], what: str) -> Path | None:
        found = sorted(p for pat in patterns for p in root.rglob(pat) if p.is_file())
        if len(found) > 1:
            s.notes.append(f"{len(found)} {what} files; using {found[0].relative_to(root)}")
        return found[0] if found else None

    s.eeg = s.eeg or first(("*.cdt", "*.cnt"), "EEG")
    s.polygraph = s.polygraph or first(("*.mat",), "polygraph")
    if s.frames is None:
        tifs = [p for pat in ("*.tif", "*.tiff") for p in root.rglob(pat)]
        if tifs:
            count: dict[Path, int] = {}
            for p in tifs:
                count[p.parent] = count.get(p.parent, 0) + 1
            dirs = sorted(count, key=lambda d: (-count[d], str(d)))
            s.frames = dirs[0]
            if len(dirs) > 1:
                s.notes.append(f"frames in {len(dirs)} folders; using "
                               f"{dirs[0].relative_to(root)} ({count[dirs[0]]} files)")
    if s.coding is None:
        for d in (root, root.parent):
            for n in ("coding.csv", "coding.xlsx", "coding_file.xlsx"):
                if (d / n).is_file():
                    s.coding = d / n
                    break
            if s.coding:
                break
    return s


# ---------------------------------------------------------------- streams


def eeg_stream(e: EegFile) -> tuple[StreamInfo, np.ndarray]:
    names = tuple(standard_eeg_name(c) for c in e.channels)
    maxabs = np.max(np.abs(e.data), axis=0, initial=0.0) if e.data.size else np.zeros(len(names))
    scale = [1.0 if u == "code" else max(EEG_NV_PER_COUNT, float(m) / 2**30)
             for u, m in zip(e.units, maxabs, strict=True)]
    info = StreamInfo("eeg", e.fs_hz, names, tuple(e.units), tuple(scale),
                      (0.0,) * len(names), "sample")
    raw = np.round(e.data / np.asarray(scale)).astype(np.int32)
    return info, raw


def hub_stream(p: PolygraphFile) -> tuple[StreamInfo, np.ndarray]:
    names = (*HUB_NAMES, "STP", "ECG rate")
    units = (*p.units[:8], "code", p.units[16])
    analog = np.column_stack([p.data[:, :8], p.data[:, 16:17]])
    maxabs = np.nanmax(np.abs(analog), axis=0, initial=0.0)
    sc = [max(HUB_COUNT, float(m) / 2**30) for m in maxabs]
    raw = np.zeros((p.data.shape[0], 10), np.int32)
    raw[:, :8] = np.round(np.nan_to_num(analog[:, :8]) / np.asarray(sc[:8]))
    raw[:, 8] = p.code
    raw[:, 9] = np.round(np.nan_to_num(analog[:, 8]) / sc[8])
    scale = (*sc[:8], 1.0, sc[8])
    return StreamInfo("hub", p.fs_hz, names, units, scale, (0.0,) * 10, "sample"), raw


def _block(info: StreamInfo, raw: np.ndarray, host_ns: np.ndarray, status: np.ndarray,
           a: int, b: int) -> SampleBlock:
    """Samples a..b as one block (built when written: a long session's blocks never all
    sit in memory; the recorder stores ``raw``, so ``values`` is computed per block)."""
    idx = np.arange(a, b, dtype=np.int64)
    r = raw[a:b]
    values = r * np.asarray(info.scale) + np.asarray(info.offset)
    return SampleBlock(info.name, idx, idx.copy(), host_ns[a:b].copy(), r, values,
                       np.zeros(b - a, np.uint8), status[a:b].astype(np.uint32))


# ---------------------------------------------------------------- ground truth


def _row_date(video: str) -> str | None:
    m = re.search(r"_(\d{8})(?:\.\w+)?$", video)
    return m.group(1) if m else None


def place_coding(rows: list[Any], frames: FrameList | None, seq: np.ndarray | None,
                 frame_ns: np.ndarray | None, fps: float, wrap: int,
                 markers: list[Marker], wall_origin_ns: int = 0,
                 ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Ground-truth payloads for the coding rows of this session (module docstring).

    Without frames a row is placed on its clip's marker (the latest rise of its Marker
    code up to CLIP_MAX_S before the row's wall-clock onset, on the EEG PC's clock, which
    ``wall_origin_ns`` ties to host time); the seconds columns count from there. That
    needs the wall clock: without it such rows are not placed."""
    counts = {"rows": len(rows), "placed": 0, "other_sessions": 0, "not_placed": 0}
    out: list[dict[str, Any]] = []
    have_frames = frames is not None and len(frames) > 0 and seq is not None
    if have_frames:
        assert frames is not None and seq is not None and frame_ns is not None
        wall = frames.wall_ms
        day = f"{frames.wall[0]:%Y%m%d}"
        lo, hi = int(wall[0]) - 1000, int(wall[-1]) + 1000
        # The coding file's time of day is the camera PC's: frames of another day than the
        # first would need their own offset (a session over midnight is not handled).
        tod = wall

    def ns_at(s: float) -> int:
        """Host ns of frame number ``s``: between frames by interpolation, beyond the
        ends at the nominal rate."""
        if s < seq[0]:
            return round(float(frame_ns[0]) + (s - float(seq[0])) * NS / fps)
        if s > seq[-1]:
            return round(float(frame_ns[-1]) + (s - float(seq[-1])) * NS / fps)
        return round(float(np.interp(s, seq, frame_ns)))

    for r in rows:
        placed_by = ""
        if have_frames and r.onset_wall_ms is not None:
            d = _row_date(r.video)
            if (d is not None and d != day) or not lo <= r.onset_wall_ms <= hi:
                counts["other_sessions"] += 1
                continue
            near = np.abs(tod - r.onset_wall_ms)
            k = int(near.argmin())
            if r.onset is not None:
                same = np.flatnonzero(frames.counter % wrap == r.onset % wrap)
                if same.size and near[same].min() <= 20:
                    k, placed_by = int(same[near[same].argmin()]), "frame counter"
            if not placed_by and near[k] <= 1000.0 / fps + 3:
                placed_by = "frame wall clock"
            if placed_by:
                s_on = float(seq[k])
                if r.onset is not None and r.apex is not None and r.offset is not None:
                    s_ap, s_off = s_on + (r.apex - r.onset), s_on + (r.offset - r.onset)
                else:
                    ap = r.apex_s if r.apex_s is not None else r.onset_s
                    s_ap = s_on + round((ap - r.onset_s) * fps)
                    s_off = s_on + round((r.offset_s - r.onset_s) * fps)
                on_ns, ap_ns, off_ns = ns_at(s_on), ns_at(s_ap), ns_at(s_off)
                frame_fields = {"onset_frame": int(s_on), "apex_frame": int(s_ap),
                                "offset_frame": int(s_off)}
        elif not have_frames and r.marker is not None and r.onset_wall_ms is not None \
                and wall_origin_ns:
            d = _row_date(r.video)
            if d is not None:
                day = datetime.datetime.strptime(d, "%Y%m%d")
            elif markers:  # the session's own day
                first = datetime.datetime.fromtimestamp(
                    (wall_origin_ns + markers[0].t_ns) / NS, datetime.timezone.utc)
                day = datetime.datetime.combine(first.date(), datetime.time())
            else:
                counts["not_placed"] += 1
                continue
            row_wall_ns = (day.replace(tzinfo=datetime.timezone.utc).timestamp() * NS
                           + r.onset_wall_ms * 1e6)
            clip = [m.t_ns for m in markers if m.code == r.marker and 0 <= row_wall_ns - (
                wall_origin_ns + m.t_ns) <= CLIP_MAX_S * NS]
            if not clip:
                counts["other_sessions"] += 1
                continue
            base = max(clip)
            on_ns = base + round(r.onset_s * NS)
            ap_ns = base + round((r.apex_s if r.apex_s is not None else r.onset_s) * NS)
            off_ns = base + round(r.offset_s * NS)
            placed_by, frame_fields = "marker + seconds", {}
        if not placed_by:
            counts["not_placed"] += 1
            continue
        counts["placed"] += 1
        out.append({"source": "coding file", "placed_by": placed_by, "onset_ns": on_ns,
                    "apex_ns": ap_ns, "offset_ns": off_ns,
                    "duration_s": round((off_ns - on_ns) / NS, 6), "emotion": r.emotion,
                    "composite": r.composite, "kind": r.kind, "aus": list(r.aus),
                    "marker": r.marker, "video": r.video, "subject": r.subject,
                    **frame_fields})
    return out, counts


# ---------------------------------------------------------------- the import


@dataclass
class ImportOptions:
    camera_width: int = 320
    fps: float = 150.0
    counter_wrap: int = 1000


@dataclass
class _Session:
    """What was read of one session, and what the import found wrong so far."""

    eeg: EegFile | None
    poly: PolygraphFile | None
    frames: FrameList | None
    seq: np.ndarray  # unwrapped frame counter, one per named frame
    wrap: int
    problems: list[str]


def _read(files: SessionFiles, opts: ImportOptions) -> _Session:
    problems = list(files.notes)
    eeg = poly = None
    frames: FrameList | None = None
    if files.eeg is not None:
        try:
            eeg = read_eeg(files.eeg)
        except LayoutError as exc:
            problems.append(f"EEG not imported: {exc}")
    if files.polygraph is not None:
        try:
            poly = read_polygraph(files.polygraph)
            problems += poly.notes
        except LayoutError as exc:
            problems.append(f"polygraph not imported: {exc}")
    if files.frames is not None:
        frames = list_frames(files.frames)
        if frames.unnamed:
            problems.append(f"{len(frames.unnamed)} .tif files not named "
                            f"Y-M-D-h-m-s-ms-Code-Marker (first: {frames.unnamed[0]})")
        if len(frames) == 0:
            problems.append(f"camera not imported: no named frames in {files.frames}")
            frames = None
    if eeg is None and poly is None and frames is None:
        raise SessionError("nothing to import: " + ("; ".join(problems) or
                                                    "no EEG, polygraph or frames found"))
    seq = np.zeros(0, np.int64)
    wrap = opts.counter_wrap
    if frames is not None:
        seen = detect_wrap(frames.counter, frames.wall_ms, opts.fps)
        if seen is not None and seen != wrap:
            problems.append(f"camera: the frame counter wraps at {seen}, not {wrap}: "
                            f"unwrapped with {seen}")
            wrap = seen
        seq = unwrap_counter(frames.counter, frames.wall_ms, opts.fps, wrap)
        dup = int(np.count_nonzero(np.diff(seq) <= 0))
        if dup:
            problems.append(f"camera: {dup} frames repeat or go back in the counter; kept in "
                            "name order")
    return _Session(eeg, poly, frames, seq, wrap, problems)


def _edges(s: _Session, fps: float) -> dict[str, Edges]:
    """Marker edges per stream, in each stream's device time."""
    edges: dict[str, Edges] = {}
    if s.eeg is not None:
        trig = s.eeg.trigger
        if trig is not None:
            edges["eeg"] = code_edges(trig, np.arange(trig.size, dtype=np.float64), s.eeg.fs_hz)
        else:
            # No Trigger channel: the file's numeric events are the marker rises (their
            # sample is the first with the code; the falls are unknown).
            ev = [(o, int(d)) for o, d in s.eeg.annotations if d.strip().isdigit() and int(d)]
            if ev:
                edges["eeg"] = Edges(np.array([round(o * s.eeg.fs_hz) - 0.5 for o, _ in ev]),
                                     np.array([c for _, c in ev], np.int64), s.eeg.fs_hz)
                s.problems.append("EEG: no Trigger channel; its event list gives the marker "
                                  "rises (no falls)")
            else:
                s.problems.append("EEG: no Trigger channel and no numeric events: it cannot "
                                  "anchor the other streams")
    if s.poly is not None:
        edges["hub"] = code_edges(s.poly.code, np.arange(s.poly.data.shape[0],
                                                         dtype=np.float64), s.poly.fs_hz)
    if s.frames is not None:
        edges["camera"] = code_edges(s.frames.marker, s.seq.astype(np.float64), fps)
    return edges


def _device_times(s: _Session) -> dict[str, np.ndarray]:
    """Device time of every sample or frame (frames: the unwrapped counter)."""
    out: dict[str, np.ndarray] = {}
    if s.eeg is not None:
        out["eeg"] = np.arange(s.eeg.data.shape[0], dtype=np.float64)
    if s.poly is not None:
        out["hub"] = np.arange(s.poly.data.shape[0], dtype=np.float64)
    if s.frames is not None:
        out["camera"] = s.seq.astype(np.float64)
    return out


def _one_clock(s: _Session, edges: dict[str, Edges], fps: float, report: dict[str, Any],
               ) -> tuple[str, dict[str, np.ndarray], dict[str, Alignment]]:
    """Reference stream, host ns of every sample and frame, and each stream's fit."""
    dev = _device_times(s)
    rate = {"eeg": s.eeg.fs_hz if s.eeg else 0.0, "hub": s.poly.fs_hz if s.poly else 0.0,
            "camera": fps}
    ref = "eeg" if "eeg" in edges else ("hub" if "hub" in dev else next(iter(dev)))
    ref_edges = edges.get(ref)
    if ref == "camera" and ref_edges is not None:  # frames count from the first one
        ref_edges = Edges(ref_edges.device_t - s.seq[0], ref_edges.key, ref_edges.units_per_s)
    host: dict[str, np.ndarray] = {}  # float ns on the reference's time line
    fits: dict[str, Alignment] = {}
    for name, dt in dev.items():
        if name == ref:
            host[name] = (dt - dt[0] if name == "camera" else dt) * (NS / rate[name])
            report["streams"][name] = {"reference": True,
                                       "edges": int(edges[name].key.size) if name in edges
                                       else 0}
            continue
        if name not in edges or ref_edges is None:
            s.problems.append(f"{name} not imported: no shared marker edges to put it on "
                              f"the {ref} clock")
            continue
        # Both ends are quantised: the pair's spread is the two sample periods together.
        period = float(np.hypot(1.0 / rate[name], 1.0 / rate[ref]))
        al = align(name, edges[name], ref_edges, period)
        fits[name] = al
        report["streams"][name] = al.summary()
        if al.model is None:
            s.problems.append(f"{name} not imported: {al.note}")
            continue
        host[name] = al.model.to_host_ns(dt).astype(np.float64)
    shift = ORIGIN_NS - min(float(h[0]) for h in host.values() if h.size)
    t_ns = {k: np.round(v + shift).astype(np.int64) for k, v in host.items()}
    if ref in t_ns and t_ns[ref].size:  # what lies outside the reference's span
        lo, hi = int(t_ns[ref][0]), int(t_ns[ref][-1])
        for name, t in t_ns.items():
            if name != ref:
                report["streams"][name].update(
                    before_reference=int(np.count_nonzero(t < lo)),
                    after_reference=int(np.count_nonzero(t > hi)))
    return ref, t_ns, fits


def _wall_origin(s: _Session, t_ns: dict[str, np.ndarray]) -> int:
    """Wall-clock ns at host 0: the EEG's start time, else the first frame's name."""
    utc = datetime.timezone.utc
    if s.eeg is not None and s.eeg.meas_date is not None and "eeg" in t_ns:
        return int(s.eeg.meas_date.replace(tzinfo=utc).timestamp() * NS - t_ns["eeg"][0])
    if s.frames is not None and "camera" in t_ns:
        return int(s.frames.wall[0].replace(tzinfo=utc).timestamp() * NS - t_ns["camera"][0])
    return 0


def _streams(s: _Session, t_ns: dict[str, np.ndarray], opts: ImportOptions,
             report: dict[str, Any]) -> tuple[dict[str, tuple[StreamInfo, np.ndarray,
                                                               np.ndarray]], dict | None]:
    """The recording's sample streams (info, raw, status) and camera metadata."""
    data: dict[str, tuple[StreamInfo, np.ndarray, np.ndarray]] = {}
    if s.eeg is not None and "eeg" in t_ns:
        info, raw = eeg_stream(s.eeg)
        data["eeg"] = (info, raw, np.zeros(raw.shape[0], np.uint32))
        report["streams"]["eeg"].update(samples=int(raw.shape[0]), fs_hz=info.fs_hz,
                                        channels=len(info.channels), reader=s.eeg.reader)
    if s.poly is not None and "hub" in t_ns:
        info, raw = hub_stream(s.poly)
        data["hub"] = (info, raw, np.zeros(raw.shape[0], np.uint32))
        report["streams"]["hub"].update(samples=int(raw.shape[0]), fs_hz=info.fs_hz)
    camera_meta = None
    if s.frames is not None and "camera" in t_ns:
        w0, h0 = _native_size(s.frames.paths)
        w = min(opts.camera_width, w0) if opts.camera_width > 0 else w0
        h = max(2, round(h0 * w / w0 / 2) * 2)
        camera_meta = {"store": "raw", "width": w, "height": h, "fps": opts.fps,
                       "source": "MMME release frames (XIMEA MQ022CG-CM)",
                       "source_width": w0, "source_height": h0, "scale": round(w / w0, 6),
                       "counter_wrap": s.wrap}
        report["streams"]["camera"].update(
            frames=len(s.frames), width=w, height=h, scale=camera_meta["scale"],
            missing_frames=int(np.sum(np.clip(np.diff(s.seq) - 1, 0, None))),
            unnamed_files=len(s.frames.unnamed))
    return data, camera_meta


def _markers(s: _Session, t_ns: dict[str, np.ndarray],
             ) -> tuple[list[Marker], list[tuple[int, str]]]:
    """The reference's marker events (EEG annotations, else its Trigger rises; without EEG
    the polygraph's or the frames' rises), and the EEG's other annotations (t_ns, text)."""
    markers: list[Marker] = []
    other: list[tuple[int, str]] = []
    if s.eeg is not None and "eeg" in t_ns:
        e_ns = t_ns["eeg"]

        def at(o: float) -> int:
            return int(e_ns[int(np.clip(round(o * s.eeg.fs_hz), 0, e_ns.size - 1))])  # type: ignore[union-attr]

        numeric = [(o, d) for o, d in s.eeg.annotations if d.strip().lstrip("-").isdigit()]
        markers = [Marker(int(d), at(o)) for o, d in numeric]
        if not numeric and s.eeg.trigger is not None:
            tr = s.eeg.trigger
            j = np.flatnonzero((np.diff(tr) != 0) & (tr[1:] != 0)) + 1
            markers = [Marker(int(tr[i]), int(e_ns[i])) for i in j]
        other = [(at(o), d) for o, d in s.eeg.annotations if (o, d) not in numeric]
        return markers, other
    src = "hub" if "hub" in t_ns else "camera"
    code = s.poly.code if src == "hub" and s.poly is not None else (
        s.frames.marker if s.frames is not None else np.zeros(0, np.int64))
    if src in t_ns and code.size:
        j = np.flatnonzero((np.diff(code) != 0) & (code[1:] != 0)) + 1
        markers = [Marker(int(code[i]), int(t_ns[src][i])) for i in j]
    return markers, other


def import_session(files: SessionFiles, out: Path, opts: ImportOptions | None = None,
                   ) -> dict[str, Any]:
    """Read, align and write; returns the report (also in the recording's /status)."""
    from edge.evaluation.annotations import read_mmme_coding
    from edge.recording.recorder import Recorder

    opts = opts or ImportOptions()
    s = _read(files, opts)
    report: dict[str, Any] = {"files": {k: str(v) if v else None for k, v in (
        ("eeg", files.eeg), ("polygraph", files.polygraph), ("frames", files.frames),
        ("coding", files.coding))}, "streams": {}, "problems": s.problems}
    ref, t_ns, fits = _one_clock(s, _edges(s, opts.fps), opts.fps, report)
    report["reference"] = ref
    wall_origin = _wall_origin(s, t_ns)
    data, camera_meta = _streams(s, t_ns, opts, report)
    markers, other = _markers(s, t_ns)
    report["markers"] = len(markers)
    if s.eeg is not None:
        report["eeg_annotations"] = len(s.eeg.annotations)
    truth: list[dict[str, Any]] = []
    if files.coding is not None:
        try:
            rows = read_mmme_coding(files.coding, fps=opts.fps)
        except Exception as exc:  # openpyxl / csv errors of a damaged sheet
            s.problems.append(f"coding file not read: {type(exc).__name__}: {exc}")
            rows = []
        cam = s.frames is not None and "camera" in t_ns
        truth, report["coding"] = place_coding(
            rows, s.frames if cam else None, s.seq if cam else None, t_ns.get("camera"),
            opts.fps, s.wrap, markers, wall_origin)
    report["ground_truth"] = len(truth)

    rec = Recorder(Path(out), [d[0] for d in data.values()], camera=camera_meta,
                   clock_origin=(wall_origin + ORIGIN_NS, ORIGIN_NS) if wall_origin else None)
    try:
        unreadable = _write(rec, data, t_ns, s.frames, s.seq, camera_meta)
        if unreadable:
            s.problems.append(f"camera: {unreadable} frame files could not be read (left out)")
        for m in markers:
            _put(rec, rec.write_marker, m)
        for t, text in other:
            _put(rec, rec.write_event, "annotation", {"text": text, "source": "EEG file"}, t)
        for g in truth:
            _put(rec, rec.write_event, "ground_truth", g, g["onset_ns"])
        end_ns = max(int(v[-1]) for v in t_ns.values() if v.size)
        for name, al in fits.items():
            if al.model is not None:
                _put(rec, rec.write_clock, name, {**al.model.state, "reference": ref,
                                                  "source": "marker edges"}, end_ns)
        _put(rec, rec.write_status, "mmme-import", report, end_ns)
    finally:
        stats = rec.close()
    lost = stats.get("dropped_queue", 0) + stats.get("dropped_error", 0)
    if stats.get("status") != "ok" or lost:
        raise OSError(f"{out}: recorder {stats.get('status')}, {lost} items not written")
    return report


def _native_size(paths: list[Path]) -> tuple[int, int]:
    """(width, height) of the first frame file that reads."""
    import cv2

    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if img is not None:
            return int(img.shape[1]), int(img.shape[0])
    raise LayoutError(f"none of the {len(paths)} frame files is a readable image")


def _put(rec: Any, write: Any, *args: Any) -> None:
    """Hand one item to the recorder, waiting while its queue is half full: an import has
    no real-time deadline, so it waits instead of dropping."""
    while rec.queue_fill() > 0.5:
        time.sleep(0.002)
    if not write(*args):
        raise OSError(f"recorder refused an item ({rec.status})")


def _write(rec: Any, data: dict[str, tuple[StreamInfo, np.ndarray, np.ndarray]],
           t_ns: dict[str, np.ndarray], frames: FrameList | None, seq: np.ndarray,
           camera_meta: dict[str, Any] | None) -> int:
    """Blocks (``BLOCK_S`` each) and frames in time order, each read or built when it is
    written; returns how many frame files could not be read."""
    items: list[tuple[int, int, str, int]] = []  # (t_ns, kind, stream, start or frame)
    for k, (info, raw, _) in data.items():
        step = max(int(BLOCK_S * info.fs_hz), 1)
        items += [(int(t_ns[k][a]), 0, k, a) for a in range(0, raw.shape[0], step)]
    if frames is not None and camera_meta is not None:
        items += [(int(t), 1, "camera", k) for k, t in enumerate(t_ns["camera"])]
    items.sort(key=lambda x: (x[0], x[1]))
    bad = 0
    # Frame files decode in a pool (OpenCV releases the GIL; a full-size TIFF takes tens
    # of ms), a bounded window ahead of the writer, and are written in time order.
    order = [k for _, kind, _, k in items if kind == 1]
    pool = ThreadPoolExecutor(max_workers=max(os.cpu_count() or 1, 1))
    ahead: dict[int, Future[np.ndarray]] = {}
    nxt = 0

    def prefetch() -> None:
        nonlocal nxt
        while nxt < len(order) and len(ahead) < FRAME_LOOKAHEAD:
            k = order[nxt]
            ahead[k] = pool.submit(load_luma, frames.paths[k], camera_meta["width"],  # type: ignore[union-attr, index]
                                   camera_meta["height"])  # type: ignore[index]
            nxt += 1

    try:
        for t, kind, name, k in items:
            if kind == 0:
                info, raw, st = data[name]
                step = max(int(BLOCK_S * info.fs_hz), 1)
                _put(rec, rec.write_block, _block(info, raw, t_ns[name], st, k,
                                                  min(k + step, raw.shape[0])))
                continue
            assert frames is not None
            prefetch()
            try:
                luma = ahead.pop(k).result()
            except LayoutError:
                bad += 1
                continue
            _put(rec, rec.write_frame, Frame(seq=int(seq[k]), t_ns=t, luma=luma,
                                             trigger=int(frames.marker[k]) & 0xFF))
    finally:
        pool.shutdown(cancel_futures=True)
    return bad


def main(argv: list[str] | None = None) -> int:
    """``mmme-edge import-mmme``: 0 written, 2 bad arguments or nothing importable."""
    p = argparse.ArgumentParser(prog="mmme-edge import-mmme",
                                description="import one MMME session as a rig recording")
    p.add_argument("session", nargs="?", type=Path, help="session folder (EEG, .mat, frames)")
    p.add_argument("--out", required=True, type=Path, help="recording to write (.mcap)")
    p.add_argument("--eeg", type=Path, help="Curry 8 .cdt or Neuroscan .cnt (else found)")
    p.add_argument("--polygraph", type=Path, help="BIOPAC .mat (else found)")
    p.add_argument("--frames", type=Path, help="folder of .tif frames (else found)")
    p.add_argument("--coding", type=Path, help="coding file (.xlsx/.csv; else coding.* in "
                   "the session folder or its parent)")
    p.add_argument("--camera-width", type=int, default=320,
                   help="frame width in the recording (height keeps the aspect; 0: native)")
    p.add_argument("--fps", type=float, default=150.0)
    p.add_argument("--counter-wrap", type=int, default=1000,
                   help="the camera frame counter's modulus")
    p.add_argument("--json", action="store_true", help="print the report as one JSON line")
    try:
        args = p.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.session is None and not (args.eeg or args.polygraph or args.frames):
        print("mmme-edge import-mmme: give SESSION_DIR or --eeg/--polygraph/--frames",
              file=sys.stderr)
        return 2
    if args.out.exists():
        print(f"mmme-edge import-mmme: {args.out} exists (a recording is never overwritten)",
              file=sys.stderr)
        return 2
    try:
        files = find_session(args.session, args.eeg, args.polygraph, args.frames, args.coding)
        report = import_session(files, args.out, ImportOptions(
            args.camera_width, args.fps, args.counter_wrap))
    except (SessionError, LayoutError, OSError) as exc:
        print(f"mmme-edge import-mmme: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
    else:
        print(format_report(report, args.out))
    return 0


def format_report(r: dict[str, Any], out: Path) -> str:
    lines = [f"{out}: reference {r.get('reference')}, {r['markers']} markers, "
             f"{r['ground_truth']} ground-truth intervals"]
    for name, s in r["streams"].items():
        bits = [f"{k} {v}" for k, v in s.items() if k not in ("channels",)]
        lines.append(f"  {name}: " + ", ".join(bits))
    if "coding" in r:
        lines.append("  coding file: " + ", ".join(f"{k} {v}" for k, v in r["coding"].items()))
    lines += [f"  problem: {p}" for p in r["problems"]]
    return "\n".join(lines)


__all__ = ["Alignment", "Edges", "ImportOptions", "SessionFiles", "align", "code_edges",
           "find_session", "import_session", "main", "place_coding"]


if __name__ == "__main__":
    raise SystemExit(main())
