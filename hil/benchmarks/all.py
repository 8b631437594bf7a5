"""``mmme-hil bench all`` (also ``make bench``): every benchmark, one table, one JSON file.

Runs each bench as its own process with the arguments below, takes the JSON object on
its last line, prints one table and writes everything to ``artifacts/bench/all.json``.
Ratios against reference tools are the benches' own (features vs NeuroKit2, outbox vs
plain paho, recorder vs the rig's data rate).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hil.benchmarks import REGISTRY


def run_bench(name: str, args: list[str]) -> dict[str, Any]:
    t = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "hil.cli", "bench", name, *args],
                          capture_output=True, text=True, timeout=3600)
    took = round(time.monotonic() - t, 1)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr or proc.stdout)[-500:], "seconds": took}
    try:
        return {**json.loads(lines[-1]), "seconds": took}
    except json.JSONDecodeError:
        return {"error": f"no JSON line: {lines[-1][:200]}", "seconds": took}


def _fmt(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items() if not isinstance(v, dict | list))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mmme-hil bench all", description=__doc__.splitlines()[0])
    p.add_argument("--only", default=",".join(REGISTRY), help="comma-separated subset")
    p.add_argument("--out", type=Path, default=Path("artifacts/bench/all.json"))
    args = p.parse_args(argv)
    results = {}
    for name in args.only.split(","):
        print(f"running bench {name} ...", file=sys.stderr, flush=True)
        results[name] = run_bench(name, list(REGISTRY[name].all_args))
    print(f"{'bench':10s} result")
    for name, r in results.items():
        print(f"{name:10s} {_fmt(r)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"written to {args.out}")
    return 0
