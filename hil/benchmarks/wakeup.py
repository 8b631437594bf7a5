"""``mmme-hil bench wakeup``: can this host read an ADS1299 at its data rate?

The ADS1299 holds one frame: a reader that wakes later than the next DRDY has lost a
sample, whatever the software does after waking. This bench measures that floor for the
host alone (the measuring code is :mod:`edge.wakeup`, shared with ``mmme-edge selftest``
and ``mmme-edge run``). A process at the EEG reader's priority (SCHED_FIFO 50 where
allowed) sleeps to each tick of a ``fs_hz`` grid and does nothing else; each tick is scored with the
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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edge import config
from edge.rig import EEG_RT_PRIORITY
from edge.wakeup import WakeFloor, measure


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
    idle = measure(args.fs_hz, args.seconds, rt)
    with tempfile.TemporaryDirectory(prefix="mmme-bench-wakeup-") as tmp:
        rig = _rig_without_eeg(args.seconds + 15.0, Path(tmp))
        try:
            time.sleep(8.0)  # opened and streaming
            if rig.poll() is not None:
                raise RuntimeError(f"the rig did not run: {rig.stderr.read()[-1500:]}")
            loaded = measure(args.fs_hz, args.seconds, rt)
        finally:
            rig.terminate()
            rig.wait(30)
    for name, r in (("idle host", idle), ("rig running (no EEG)", loaded)):
        lat = r["lateness_us"]
        print(f"{name:22s} {r['scheduling']:14s} loss {100 * r['loss_fraction']:.3f}% "
              f"(overwritten {r['overwritten']}, late {r['late_read']} of {r['ticks']}) | "
              f"wake lateness us p50 {lat['p50']} p99 {lat['p99']} p99.9 {lat['p999']} "
              f"max {lat['max']}")
    verdict = WakeFloor.from_result(args.fs_hz, args.seconds, idle).plus(
        WakeFloor.from_result(args.fs_hz, args.seconds, loaded, conditions="beside the rig"))
    print("verdict:", verdict.sentence())
    if args.json:
        print(json.dumps({"idle_loss_fraction": idle["loss_fraction"],
                          "loaded_loss_fraction": loaded["loss_fraction"],
                          "idle_p999_us": idle["lateness_us"]["p999"],
                          "loaded_p999_us": loaded["lateness_us"]["p999"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
