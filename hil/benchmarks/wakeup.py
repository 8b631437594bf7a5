"""``mmme-hil bench wakeup``: can this host read an ADS1299 at its data rate?

The ADS1299 holds one frame: a reader that wakes later than the next DRDY has lost a
sample, whatever the software does after waking. This bench measures that floor for the
host alone. A process at the EEG reader's priority (SCHED_FIFO 50 where allowed) sleeps
to each tick of a ``fs_hz`` grid and does nothing else; each tick is scored with the
driver's own rule (:mod:`sensors.ads1299`): ticks passed while asleep are "overwritten",
a wake later than ``LATE_READ_PERIODS`` (0.98) periods after the newest tick is a "late
read". It runs twice: on the idle host, then while the simulated rig runs beside it
without its EEG (the same load the EEG reader sees in ``mmme-edge run --sim``).

So the rig's EEG loss can be read against the host: a loss fraction near this floor
is the host's scheduling (a VM's vCPU preemption, no PREEMPT_RT), not the reader's work.
The last line with ``--json``: {"idle_loss_fraction", "loaded_loss_fraction",
"idle_p999_us", "loaded_p999_us"}.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge import config
from edge.acquisition import _set_realtime
from edge.rig import EEG_RT_PRIORITY
from sensors.ads1299 import LATE_READ_PERIODS


def serve(now_ns: int, t0_ns: int, period_ns: int, k: int, n: int) -> tuple[int, int, bool]:
    """Score one wake at ``now_ns`` that was due for tick ``k`` (of ``n``) as the driver
    would: (newest tick, ticks overwritten before it, whether its read is late)."""
    newest = min(max((now_ns - t0_ns) // period_ns, k), n - 1)
    lag = now_ns - (t0_ns + newest * period_ns)
    return newest, newest - k, lag > LATE_READ_PERIODS * period_ns


def wake_loop(fs_hz: float, seconds: float, rt_priority: int | None) -> dict[str, Any]:
    """Sleep to every tick of an ``fs_hz`` grid for ``seconds``; score each as the driver."""
    sched = _set_realtime(rt_priority)
    period = round(1e9 / fs_hz)
    n = int(seconds * fs_hz)
    late = np.empty(n, dtype=np.int64)  # wake - the tick it slept for
    got = overwritten = late_reads = 0
    t0 = time.monotonic_ns() + 10 * period
    k = 0  # next tick to serve
    while k < n:
        tick = t0 + k * period
        now = time.monotonic_ns()
        if tick > now:
            time.sleep((tick - now) / 1e9)
            now = time.monotonic_ns()
        newest, lost, is_late = serve(now, t0, period, k, n)
        overwritten += lost
        late_reads += is_late
        late[got] = now - tick
        got += 1
        k = newest + 1
    lat_us = late[:got] / 1e3
    return {
        "scheduling": sched, "ticks": n, "overwritten": overwritten, "late_read": late_reads,
        "loss_fraction": round((overwritten + late_reads) / n, 6),
        "lateness_us": {q: round(float(np.percentile(lat_us, p)), 1)
                        for q, p in (("p50", 50), ("p99", 99), ("p999", 99.9))}
        | {"max": round(float(lat_us.max()), 1)},
    }


def _measure(fs_hz: float, seconds: float, rt: int | None) -> dict[str, Any]:
    # Its own process, as the EEG reader: this one's threads and GIL stay out of it.
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(wake_loop, (fs_hz, seconds, rt))


def _rig_without_eeg(seconds: float, work: Path) -> subprocess.Popen[str]:
    text = config.example_path("sim").read_text().replace("[eeg]\n", "[eeg]\nenabled = false\n")
    cfg = work / "rig_no_eeg.toml"
    cfg.write_text(text)
    return subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "--sim", "--config", str(cfg), "--duration",
         str(seconds), "--quiet", "--record-dir", str(work / "rec")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mmme-hil bench wakeup", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0, help="per phase")
    p.add_argument("--fs-hz", type=float, default=1000.0)
    p.add_argument("--no-rt", action="store_true", help="normal priority, not SCHED_FIFO")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rt = None if args.no_rt else EEG_RT_PRIORITY
    idle = _measure(args.fs_hz, args.seconds, rt)
    with tempfile.TemporaryDirectory(prefix="mmme-bench-wakeup-") as tmp:
        rig = _rig_without_eeg(args.seconds + 15.0, Path(tmp))
        try:
            time.sleep(8.0)  # opened and streaming
            if rig.poll() is not None:
                raise RuntimeError(f"the rig did not run: {rig.stderr.read()[-1500:]}")
            loaded = _measure(args.fs_hz, args.seconds, rt)
        finally:
            rig.terminate()
            rig.wait(30)
    for name, r in (("idle host", idle), ("rig running (no EEG)", loaded)):
        lat = r["lateness_us"]
        print(f"{name:22s} {r['scheduling']:14s} loss {100 * r['loss_fraction']:.3f}% "
              f"(overwritten {r['overwritten']}, late {r['late_read']} of {r['ticks']}) | "
              f"wake lateness us p50 {lat['p50']} p99 {lat['p99']} p99.9 {lat['p999']} "
              f"max {lat['max']}")
    if args.json:
        print(json.dumps({"idle_loss_fraction": idle["loss_fraction"],
                          "loaded_loss_fraction": loaded["loss_fraction"],
                          "idle_p999_us": idle["lateness_us"]["p999"],
                          "loaded_p999_us": loaded["lateness_us"]["p999"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
