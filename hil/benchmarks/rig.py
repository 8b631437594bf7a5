"""``mmme-hil bench rig``: the whole rig at real time, measured.

1. A scored end-to-end run (``hil.e2e``) of a generated session: CPU and peak RSS of the
   rig's process tree (simulators included: they run inside it), and the latency from an
   expression's true offset to its ``events/me`` message.
2. A camera frame-rate sweep: the rig runs at each rate for a while; the highest rate
   with no frame lost, neither by the camera's buffers nor by the spotter's queue, is
   ``max_fps``.

The last line with ``--json``: {"cpu_percent", "rss_mb", "max_fps", "me_latency_ms_p99"}.
``cpu_percent`` is in percent of one core (the machine has ``cpu_count`` of them).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from edge import config
from hil.e2e import run_scenario


def _scenario(path: Path, seconds: float) -> Path:
    path.write_text(f"[generate]\nduration_s = {seconds}\nn_events = {max(1, int(seconds / 7.5))}"
                    "\nseed = 21\n")
    return path


def run_at_fps(fps: float, seconds: float, workdir: Path) -> dict[str, Any]:
    cfg = workdir / f"rig_{int(fps)}.toml"
    cfg.write_text(config.example_path("sim").read_text().replace("fps = 150", f"fps = {fps}"))
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli", "run", "--sim", "--config", str(cfg), "--duration",
         str(seconds), "--json", "--quiet", "--record-dir", str(workdir / "rec")],
        capture_output=True, text=True, timeout=seconds + 120)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-1500:])
    s = json.loads(proc.stdout.strip().splitlines()[-1])
    cam = s["streams"]["camera"]
    return {"fps": fps, "camera_expected": cam["expected"], "camera_dropped": cam["dropped"],
            "spotter_dropped": s["spotter"]["frames_dropped"],
            "spotter_frame_ms_p50": s["spotter"]["frame_ms_p50"],
            "cpu_percent": s["cpu_percent"], "eeg_dropped": s["streams"]["eeg"]["dropped"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mmme-hil bench rig", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="length of the scored run")
    p.add_argument("--fps", default="150,200,250,300", help="camera rates to sweep")
    p.add_argument("--sweep-seconds", type=float, default=15.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="mmme-bench-rig-"))
    e2e = run_scenario(_scenario(work / "scenario.toml", args.seconds), work)
    sweep = [run_at_fps(float(f), args.sweep_seconds, work) for f in args.fps.split(",")]
    ok = [r["fps"] for r in sweep if r["camera_dropped"] == 0 and r["spotter_dropped"] == 0]
    out = {
        "cpu_percent": e2e["cpu_percent"],
        "rss_mb": e2e["rss_mb"],
        "max_fps": max(ok) if ok else 0.0,
        "me_latency_ms_p99": e2e["me_latency_ms"]["p99"],
    }
    log = sys.stderr if args.json else sys.stdout
    print(f"scored run {args.seconds:g} s: CPU {e2e['cpu_percent']}% of one core, RSS "
          f"{e2e['rss_mb']} MB, F1 {e2e['f1_overall']}, events/me latency ms "
          f"{e2e['me_latency_ms']}, dropped {e2e['dropped']}", file=log)
    print("fps sweep:", file=log)
    for r in sweep:
        print(f"  {r['fps']:6.0f} fps: camera dropped {r['camera_dropped']} of "
              f"{r['camera_expected']}, spotter dropped {r['spotter_dropped']}, spotter "
              f"{r['spotter_frame_ms_p50']} ms/frame, CPU {r['cpu_percent']}%", file=log)
    if args.json:
        print(json.dumps(out))
    return 0
