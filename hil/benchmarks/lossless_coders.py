"""Every lossless coder PyAV's FFmpeg offers, on the simulated camera's whole frames.

    mmme-hil bench lossless_coders [--width 640 --height 480 --fps 200] [--frames 200]
                                   [--only NAME,...] [--json]

For each coder: compression ratio, the GB per hour it would record at ``--fps``, CPU
milliseconds per frame (process time, all its threads) and the share of one core 200 fps
would take. It answers whether a ``lossless`` store can hold whole frames within a
budget on this host: the sensor noise (sigma 2 grey levels in the simulator) sets the
ratio, the CPU per frame whether the rig can afford it. Coders that do not open here are
listed with the reason. The last line under ``--json`` is one JSON object {coder: {...}}.
"""

from __future__ import annotations

import argparse
import json
import time
from fractions import Fraction
from typing import Any

import numpy as np

from hil.sim.camera import SimCamera
from hil.sim.scenario import generate

# (label, FFmpeg encoder, options, pix_fmt, gop, threads): what a rig could configure.
CODERS: tuple[tuple[str, str, dict[str, str], str, int, int], ...] = (
    ("ffv1", "ffv1", {}, "gray", 1, 1),
    ("ffv1-slices-2t", "ffv1", {"level": "3", "slices": "4", "slicecrc": "1"}, "gray", 1, 2),
    ("ffv1-large-context", "ffv1", {"context": "1"}, "gray", 1, 1),
    ("ffv1-range-coder", "ffv1", {"coder": "1", "context": "1"}, "gray", 1, 1),
    ("jpegls", "jpegls", {}, "gray", 1, 1),
    ("x264-ultrafast", "libx264", {"qp": "0", "preset": "ultrafast", "tune": "zerolatency"},
     "gray", 100, 1),
    ("x264-ultrafast-cabac", "libx264", {"qp": "0", "preset": "ultrafast",
                                         "tune": "zerolatency", "x264-params": "cabac=1"},
     "gray", 100, 1),
    ("x264-ultrafast-cabac-intra", "libx264", {"qp": "0", "preset": "ultrafast",
                                               "tune": "zerolatency",
                                               "x264-params": "cabac=1"}, "gray", 1, 1),
    ("x264-superfast", "libx264", {"qp": "0", "preset": "superfast", "tune": "zerolatency"},
     "gray", 100, 1),
    ("x265-ultrafast", "libx265", {"preset": "ultrafast",
                                   "x265-params": "lossless=1:log-level=error:pools=1"},
     "gray", 100, 1),
    ("vp9-realtime", "libvpx-vp9", {"lossless": "1", "cpu-used": "8", "deadline": "realtime"},
     "yuv420p", 100, 1),
    ("svtav1-preset12", "libsvtav1", {"preset": "12", "svtav1-params": "lossless=1"},
     "yuv420p", 100, 1),
)


def frames_for(width: int, height: int, fps: float, n: int) -> list[np.ndarray]:
    cam = SimCamera(generate(n / fps + 7.0, 2, seed=1), fps=fps, width=width, height=height,
                    seed=1)
    return [f.luma for _, f in zip(range(n), cam.offline(5.0), strict=False)]


def measure(name: str, options: dict[str, str], pix_fmt: str, gop: int, threads: int,
            frames: list[np.ndarray], fps: float) -> dict[str, Any]:
    import av

    h, w = frames[0].shape
    cc = av.CodecContext.create(name, "w")
    cc.width, cc.height, cc.pix_fmt = w, h, pix_fmt
    cc.time_base = Fraction(1, max(1, round(fps)))
    cc.gop_size, cc.thread_count, cc.options = gop, threads, dict(options)
    cc.open()
    planes = np.full((h * 3 // 2, w), 128, np.uint8)  # luma plus flat chroma
    size = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i, luma in enumerate(frames):
        if pix_fmt == "gray":
            vf = av.VideoFrame.from_ndarray(luma, format="gray")
        else:
            planes[:h] = luma
            vf = av.VideoFrame.from_ndarray(planes, format=pix_fmt)
        vf.pts = i
        size += sum(p.size for p in cc.encode(vf))
    size += sum(p.size for p in cc.encode(None))
    cpu_ms = (time.process_time() - cpu0) / len(frames) * 1e3
    wall_ms = (time.perf_counter() - wall0) / len(frames) * 1e3
    ratio = frames[0].nbytes * len(frames) / size
    return {"ratio": round(ratio, 3),
            "gb_per_hour": round(frames[0].nbytes / ratio * fps * 3600 / 1e9, 1),
            "cpu_ms_per_frame": round(cpu_ms, 2), "wall_ms_per_frame": round(wall_ms, 2),
            "cores_at_fps": round(cpu_ms * fps / 1e3, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mmme-hil bench lossless_coders")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--fps", type=float, default=200.0)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--only", default="", help="comma-separated labels")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    only = {s for s in args.only.split(",") if s}
    frames = frames_for(args.width, args.height, args.fps, args.frames)
    out: dict[str, Any] = {}
    print(f"{args.frames} simulated {args.width}x{args.height} frames, {args.fps:g} fps")
    for label, name, options, pix_fmt, gop, threads in CODERS:
        if only and label not in only:
            continue
        try:
            r = measure(name, options, pix_fmt, gop, threads, frames, args.fps)
        except Exception as exc:  # not built into this FFmpeg, or refused here
            out[label] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"  {label:28s} did not open: {out[label]['error']}")
            continue
        out[label] = r
        print(f"  {label:28s} {r['ratio']:5.3f}x {r['gb_per_hour']:6.1f} GB/h  "
              f"{r['cpu_ms_per_frame']:5.1f} ms CPU a frame = {r['cores_at_fps']:.2f} cores")
    if args.json:
        print(json.dumps(out))
    return 0
