"""``mmme-fleet bench`` end to end, small: real publishers and outboxes, a private Mosquitto
and PostgreSQL, two ingest workers, one SIGKILLed midway; nothing missing or doubled,
and the last line of ``--json`` is the one object the issue specifies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_small_fleet_loses_and_doubles_nothing_through_a_killed_worker() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fleet.cli", "bench", "--rigs", "4", "--duration", "8",
         "--backlog", "400", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=240,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"rigs", "ingest_msgs_per_s", "latency_ms_p50", "latency_ms_p99", "missing",
            "duplicated"} <= set(result)
    assert result["rigs"] == 4 and result["killed"] == "w0 (SIGKILL)"
    assert result["missing"] == 0 and result["duplicated"] == 0
    assert result["qos1_published"] > 0 and result["backlog"] == 400
    assert result["ingest_msgs_per_s"] > 0 and 0 < result["latency_ms_p50"] <= result[
        "latency_ms_p99"]
