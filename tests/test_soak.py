"""Opt-in soak (``make soak``): 30 minutes of the whole simulated rig.

Zero lost samples from the 1 kHz streams and the camera, and memory growth under 10 MB
after the first five minutes (the warm-up: ring buffers, caches and the allocator
settle), with swings bounded by the buffers' budgets. RSS is read from the rig's own
live status lines, once a second.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SOAK_S = int(os.environ.get("MMME_SOAK_S", "1800"))  # shorter for a quick look
WARMUP_S = 300


@pytest.mark.soak
@pytest.mark.timeout(SOAK_S + 600)
def test_thirty_minutes_lose_nothing_and_memory_stays_flat(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli", "run", "--sim", "--duration", str(SOAK_S),
         "--json", "--record-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=SOAK_S + 300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    rss = [(float(t), float(m)) for t, m in
           re.findall(r"t=\s*([\d.]+)s .*rss ([\d.]+) MB", proc.stderr)]
    after = [m for t, m in rss if t >= WARMUP_S]
    # Growth is what stays: the median of the last minutes against the median of the
    # first minutes after warm-up. RSS also swings while it runs (each recorder flush
    # holds ~3 copies of a 0.5 s chunk, ~17 MB at 150 fps, freed 0.1 s later; queues
    # fill in bursts): a 1 s sample that lands in a swing is not growth, but the swing
    # must stay inside what the bounded buffers can hold (spotter queue 23 MB, recorder
    # chunk copies 17 MB, camera queue 5 MB).
    k = min(300, max(len(after) // 3, 1))
    base = float(np.median(after[:k]))
    growth = float(np.median(after[-k:])) - base
    swing = max(after) - base
    dropped = {name: s["dropped"] for name, s in summary["streams"].items()}
    print(f"\nSOAK dropped {dropped}, RSS after warm-up: median {base:.1f} MB, growth "
          f"{growth:+.1f} MB (median of the last {k} s vs the first {k} s), highest "
          f"{max(after):.1f} MB (+{swing:.1f}), CPU {summary['cpu_percent']}%")
    # Which bounded queue held memory, if one did.
    print(f"spotter {summary.get('spotter')}\nrecorder {summary.get('recorder')}")
    for name, s in summary["streams"].items():
        assert s["dropped"] == 0, (name, s)
    assert growth < 10.0
    assert swing < 50.0
