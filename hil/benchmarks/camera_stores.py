"""Storage rate of each camera store on the simulated camera's frames.

    mmme-hil bench camera_stores [--width 640 --height 480 --fps 200] [--frames 400]
                                 [--codec ffv1|x264] [--json]

Renders ``--frames`` frames, feeds them to the recorder at the camera's pace in each
store (``raw``, ``lossless``, ``face`` with the simulator's face box and 2 fps context)
and reports file bytes per second of camera time, GB per hour and the hours a 256 GB card
holds, with the frames the encoder dropped and its busy time. The rate is per frame
recorded (file bytes / frames kept x fps), so frames a loaded host made the encoder drop
do not make a store look smaller than it is. The last line under
``--json`` is one JSON object {store: {...}}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edge.recording.recorder import Recorder
from hil.sim.camera import SimCamera
from hil.sim.scenario import generate

CARD_BYTES = 256e9
STORES = ("raw", "lossless", "face")


def measure(width: int, height: int, fps: float, n_frames: int, codec: str = "ffv1"
            ) -> dict[str, Any]:
    cam = SimCamera(generate(n_frames / fps + 2.0, 2, seed=1), fps=fps, width=width,
                    height=height, seed=1)
    frames = [f for _, f in zip(range(n_frames), cam.offline(0.0), strict=False)]
    box = cam.face_box()
    out: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="mmme-stores-"))
    try:
        for store in STORES:
            path = tmp / f"{store}.mcap"
            rec = Recorder(path, [], camera={"store": store, "width": width, "height": height,
                                             "fps": fps, "context_fps": 2.0, "codec": codec},
                           face_box=lambda: box)
            t0 = time.perf_counter()
            for i, f in enumerate(frames):  # the camera's pace
                time.sleep(max(0.0, t0 + (i + 1) / fps - time.perf_counter()))
                rec.write_frame(f)
            st = rec.close()
            kept = max(1, n_frames - st["dropped_frames"])
            rate = path.stat().st_size / (kept / fps)
            video = st.get("video", {})
            out[store] = {"mb_per_s": round(rate / 1e6, 2),
                          "gb_per_hour": round(rate * 3600 / 1e9, 1),
                          "card_256gb_hours": round(CARD_BYTES / rate / 3600, 1),
                          "dropped_frames": st["dropped_frames"],
                          "codec": video.get("codec", "zstd"),
                          "encoder_busy_s": video.get("busy_s"),
                          "face_crop": video.get("face_crop")}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mmme-hil bench camera_stores")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--fps", type=float, default=200.0)
    p.add_argument("--frames", type=int, default=400)
    p.add_argument("--codec", choices=("ffv1", "x264"), default="ffv1")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    res = measure(args.width, args.height, args.fps, args.frames, args.codec)
    for store, r in res.items():
        print(f"{args.width}x{args.height} at {args.fps:g} fps, {store:8s}: "
              f"{r['mb_per_s']:6.2f} MB/s, {r['gb_per_hour']:6.1f} GB/h, a 256 GB card "
              f"holds {r['card_256gb_hours']} h ({r['codec']}, {r['dropped_frames']} dropped)")
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
