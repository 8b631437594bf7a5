"""``mmme-edge info REC``: what a recording holds, where its gaps are, whether it is whole.

``info(path)`` returns a plain dict (JSON-ready); ``format_info`` turns it into text.
A gap is a jump in a stream's sample index (or the camera's frame counter): the driver saw
samples go missing. A truncated file (no footer) is reported, not refused.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from typing import Any

import numpy as np

from edge.recording.format import Recording, RecordingError, StreamData, open_recording

MAX_LISTED = 20  # gaps and markers listed in full; the rest are counted


def _gaps(counter: np.ndarray, t_ns: np.ndarray) -> list[dict[str, int]]:
    """Forward jumps of a counter: where (after which value, at what host time), how many."""
    d = np.diff(counter)
    out = []
    for j in np.flatnonzero(d != 1):
        out.append({"after": int(counter[j]), "missing": int(d[j] - 1),
                    "t_ns": int(t_ns[j + 1])})
    return out


def _stream_info(s: StreamData) -> dict[str, Any]:
    info = s.info
    d: dict[str, Any] = {"fs_hz": info.fs_hz, "channels": list(info.channels),
                         "units": list(info.units), "samples": len(s)}
    if len(s) == 0:
        return d | {"duration_s": 0.0, "gaps": [], "missing_samples": 0}
    gaps = _gaps(s.index, s.host_t_ns)
    span_ns = int(s.host_t_ns[-1] - s.host_t_ns[0])
    d.update({
        "first_index": int(s.index[0]), "last_index": int(s.index[-1]),
        "first_t_ns": int(s.host_t_ns[0]), "last_t_ns": int(s.host_t_ns[-1]),
        "duration_s": round(span_ns / 1e9 + 1.0 / info.fs_hz, 6),
        "effective_fs_hz": round((len(s) - 1) / (span_ns / 1e9), 4) if span_ns > 0 else None,
        "gaps": gaps,
        "missing_samples": int(sum(g["missing"] for g in gaps if g["missing"] > 0)),
        "sync_pulse_samples": int(np.count_nonzero(s.trigger & 1)),
    })
    return d


def _camera_info(rec: Recording) -> dict[str, Any]:
    seq, t = rec.frame_seq, rec.frame_t_ns
    d: dict[str, Any] = {"config": rec.camera, "frames": int(seq.size),
                         "store": (rec.camera or {}).get("store", "raw")}
    if seq.size:
        gaps = _gaps(seq, t)
        span = (t[-1] - t[0]) / 1e9
        d.update({"duration_s": round(float(span), 6),
                  "fps": round((seq.size - 1) / span, 3) if span > 0 else None,
                  "gaps": gaps, "missing_frames": int(sum(max(g["missing"], 0) for g in gaps))})
    return d


def _storage(rec: Recording) -> dict[str, Any]:
    """What the recording costs on disk per second and per hour, and how many hours of
    it the free space where it lies still holds."""
    size = sum(r.path.stat().st_size for r in rec.segments if r.path.exists())
    spans = [(int(s.host_t_ns[0]), int(s.host_t_ns[-1])) for s in rec.streams.values()
             if len(s)]
    if rec.frame_t_ns.size:
        spans.append((int(rec.frame_t_ns[0]), int(rec.frame_t_ns[-1])))
    dur = (max(b for _, b in spans) - min(a for a, _ in spans)) / 1e9 if spans else 0.0
    rate = size / dur if dur > 0 else None
    try:
        free = shutil.disk_usage(rec.path.resolve().parent).free
    except OSError:
        free = None
    return {"bytes": size, "duration_s": round(dur, 3),
            "bytes_per_s": None if rate is None else round(rate, 1),
            "gb_per_hour": None if rate is None else round(rate * 3600 / 1e9, 2),
            "disk_free_gb": None if free is None else round(free / 1e9, 2),
            "hours_left": None if rate is None or free is None else round(free / rate / 3600, 2)}


def info(rec_path: str) -> dict[str, Any]:
    """Streams, durations, sample counts, gaps, markers and file health of a recording."""
    rec = open_recording(rec_path, frames=False)
    return {
        "path": str(rec.path),
        "complete": rec.complete,
        "segments": [{"path": str(r.path), "complete": r.complete,
                      "intact_bytes": r.intact_bytes, "stop": r.stop_reason}
                     for r in rec.segments],
        "problems": rec.problems,
        "streams": {name: _stream_info(s) for name, s in rec.streams.items()},
        "camera": _camera_info(rec),
        "storage": _storage(rec),
        "markers": [{"code": m.code, "t_ns": m.t_ns} for m in rec.markers],
        "events": len(rec.events),
        "clock_updates": len(rec.clock),
        "status_changes": len(rec.status),
        "bad_messages": rec.bad_messages,
    }


def format_info(d: dict[str, Any]) -> str:
    lines = [f"{d['path']}: {'complete' if d['complete'] else 'TRUNCATED (no footer)'}"
             f", {len(d['segments'])} segment(s)"]
    lines += [f"  problem: {p}" for p in d["problems"]]
    for name, s in d["streams"].items():
        lines.append(f"  {name}: {s['samples']} samples, {len(s['channels'])} ch at "
                     f"{s['fs_hz']:g} Hz, {s['duration_s']:.3f} s, "
                     f"{len(s['gaps'])} gaps ({s['missing_samples']} samples missing)")
        lines += [f"    gap after index {g['after']}: {g['missing']} missing"
                  for g in s["gaps"][:MAX_LISTED]]
        if len(s["gaps"]) > MAX_LISTED:
            lines.append(f"    ... {len(s['gaps']) - MAX_LISTED} more gaps")
    cam = d["camera"]
    if cam["frames"]:
        lines.append(f"  camera ({cam['store']}): {cam['frames']} frames, "
                     f"{cam['duration_s']:.3f} s, "
                     f"{cam['fps']} fps, {len(cam['gaps'])} gaps "
                     f"({cam['missing_frames']} frames missing)")
    st = d["storage"]
    if st["bytes_per_s"]:
        lines.append(f"  storage: {st['bytes'] / 1e6:.1f} MB over {st['duration_s']:.1f} s = "
                     f"{st['bytes_per_s'] / 1e6:.2f} MB/s ({st['gb_per_hour']} GB/h); "
                     f"{st['disk_free_gb']} GB free here: {st['hours_left']} h more at this rate")
    lines.append(f"  markers: {len(d['markers'])}"
                 + "".join(f"\n    {m['code']} at t_ns {m['t_ns']}"
                           for m in d["markers"][:MAX_LISTED]))
    lines.append(f"  events {d['events']}, clock updates {d['clock_updates']}, "
                 f"status changes {d['status_changes']}, bad messages {d['bad_messages']}")
    return "\n".join(lines)


def info_main(argv: list[str] | None = None) -> int:
    """``mmme-edge info REC [--json]``: 0 done, 2 bad arguments or unreadable file."""
    p = argparse.ArgumentParser(prog="mmme-edge info", description="describe a recording")
    p.add_argument("rec")
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")
    try:
        args = p.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        d = info(args.rec)
    except RecordingError as exc:
        print(f"mmme-edge info: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"mmme-edge info: cannot read {args.rec}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(json.dumps(d) if args.json else format_info(d))
    return 0


__all__ = ["format_info", "info", "info_main"]
