"""``mmme-hil run SCENARIO|REC.mcap``: the whole stack end to end, scored against ground truth.

A private Mosquitto starts; the rig runs as its own process (``mmme-edge run --sim``)
with MQTT on, the scenario given, and its ground truth written out; a dashboard-like
subscriber (its own MQTT session, deduplicating on msg_id) collects what arrives. Given a
recording instead (``.mcap``, e.g. from ``mmme-edge import-mmme``), the rig replays it
(``--replay``) and the truth is the recording's coded intervals on the replay's time line.
Then:

- spotting: MEGC precision/recall/F1 at IoU 0.5 (micro, macro, overall) of the
  ``events/me`` intervals against the scenario's expressions, on host time;
- emotion: UF1 and accuracy of ``events/emotion`` (composite class) over the spotted
  expressions that matched one in the truth;
- latency: from a matched expression's true offset to the arrival of its ``events/me``
  message, and from its physiological window's close (apex + 5 s) to the arrival of its
  ``events/emotion`` message (the window the rig used, ``window.t1_ns`` in the message);
- alignment: markers published on the common clock against the true strobe edges, and
  the clock models' own uncertainty;
- drops: per stream, from the rig's summary.

With ``--json`` the last line is one JSON object with those figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge import config
from edge.evaluation.megc import Interval, match, metrics
from hil.broker import Broker
from hil.subscriber import Collector

CLASSES = ("negative", "positive", "surprise")
SETTLE_S = 3.0  # after the rig exits, for the last messages


def _config_text(scenario: Path, rig_id: str) -> str:
    """The sim config for a scenario run (MQTT is set by the run, on its own broker)."""
    text = config.example_path("sim").read_text()
    text = text.replace('id = "sim-01"', f'id = "{rig_id}"')
    return text.replace("[sim]\n", f'[sim]\nscenario = "{scenario}"\n')


def uf1(truth: list[str], pred: list[str]) -> float:
    """Unweighted F1 over the three composite classes present in the truth."""
    f1s = []
    for c in CLASSES:
        tp = sum(t == c and p == c for t, p in zip(truth, pred, strict=True))
        fp = sum(t != c and p == c for t, p in zip(truth, pred, strict=True))
        fn = sum(t == c and p != c for t, p in zip(truth, pred, strict=True))
        if tp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(f1s)) if f1s else 0.0


def _pcts(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    a = np.asarray(values)
    return {"p50": round(float(np.percentile(a, 50)), 1),
            "p99": round(float(np.percentile(a, 99)), 1),
            "max": round(float(a.max()), 1), "n": len(values)}


def _marker_errors_ms(edges: list[dict[str, Any]], published: list[dict[str, Any]]
                      ) -> list[float]:
    """Each published marker against the nearest true strobe edge with the same code."""
    errs = []
    for m in published:
        same = [e["t_ns"] for e in edges if e["code"] == m["code"]]
        if same:
            errs.append(min(abs(m["marker_t_ns"] - t) for t in same) / 1e6)
    return errs


def score(truth: dict[str, Any], collector: Collector, summary: dict[str, Any]) -> dict[str, Any]:
    t0 = int(truth["t0_ns"])
    gt = [Interval(t0 + e["onset_s"] * 1e9, t0 + e["offset_s"] * 1e9, e["kind"])
          for e in truth["expressions"]]
    arrivals = {m.payload["msg_id"]: m.t_ns for m in collector.messages
                if m.payload and "msg_id" in m.payload}
    me = collector.of("events/me")
    pred = [Interval(p["interval"]["onset_ns"], p["interval"]["offset_ns"], p["kind"])
            for p in me]
    spot = metrics(pred, gt)
    # Matches regardless of kind, for latency and emotion scoring.
    pairs = match([Interval(p.onset, p.offset) for p in pred],
                  [Interval(g.onset, g.offset) for g in gt])
    emotions = {p["me_msg_id"]: p for p in collector.of("events/emotion")}
    me_lat, emo_lat, t_cls, p_cls = [], [], [], []
    for i, j, _ in pairs:
        event = truth["expressions"][j]
        msg = me[i]
        me_lat.append((arrivals[msg["msg_id"]] - (t0 + event["offset_s"] * 1e9)) / 1e6)
        emo = emotions.get(msg["msg_id"])
        if emo is None:
            continue
        # The rig's own physiological window (from its spotted apex) closes at t1_ns.
        emo_lat.append((arrivals[emo["msg_id"]] - emo["window"]["t1_ns"]) / 1e6)
        t_cls.append(event["composite"])
        p_cls.append(emo["predicted"])
    marker_err = _marker_errors_ms(truth.get("marker_edges", []), collector.of("markers"))
    streams = summary.get("streams", {})
    return {
        "spotting": {k: {kk: round(vv, 3) for kk, vv in v.items()} for k, v in spot.items()},
        "f1_overall": round(spot["overall"]["f1"], 3),
        "f1_me": round(spot["micro"]["f1"], 3),
        "emotion_uf1": round(uf1(t_cls, p_cls), 3),
        "emotion_accuracy": round(float(np.mean([a == b for a, b in zip(t_cls, p_cls,
                                                                         strict=True)])), 3)
        if t_cls else None,
        "me_latency_ms": _pcts(me_lat),
        "emotion_latency_ms": _pcts(emo_lat),
        "marker_error_ms_max": round(max(marker_err), 3) if marker_err else None,
        "sync_uncertainty_ms": {n: s.get("sync", {}).get("uncertainty_ms")
                                for n, s in streams.items()},
        "dropped": {n: s["dropped"] for n, s in streams.items()},
        "expected": {n: s["expected"] for n, s in streams.items()},
        "events": {"truth": len(gt), "me": len(me), "emotion": len(emotions),
                   "vitals": len(collector.of("vitals"))},
        "duplicates_removed": collector.duplicates,
        "cpu_percent": summary.get("cpu_percent"),
        "rss_mb": summary.get("rss_mb"),
        "errors": summary.get("errors", []),
    }


def run_scenario(scenario: Path, workdir: Path, duration_s: float | None = None,
                 rig_id: str = "hil-01") -> dict[str, Any]:
    from hil.sim.scenario import Scenario

    length = duration_s or Scenario.load(scenario).duration_s
    return _run(_config_text(scenario.resolve(), rig_id), workdir, rig_id,
                ["--duration", str(length + 1.0)], length)


def run_replay(recording: Path, workdir: Path, rig_id: str = "hil-01") -> dict[str, Any]:
    """A recording replayed through the rig, scored against its own coded intervals."""
    from hil.sim.playback import plan_replay

    rec = str(recording.resolve())
    plan = plan_replay(config.load(config.example_path("sim")).with_replay(recording=rec))
    if plan is None or not plan.truth:
        raise RuntimeError(f"{recording}: no ground_truth intervals to score against")
    text = config.example_path("sim").read_text().replace('id = "sim-01"', f'id = "{rig_id}"')
    return _run(text, workdir, rig_id, ["--replay", rec], plan.run_s)


def _run(cfg_text: str, workdir: Path, rig_id: str, extra: list[str],
         length_s: float) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    with Broker() as broker:
        collector = Collector(broker.port, f"mmme/v1/{rig_id}/#", client_id="hil-dashboard")
        collector.start()
        cfg = workdir / "rig.toml"
        outbox = workdir.resolve() / "outbox.sqlite"
        # Each run its own outbox: a shared one would replay an earlier run's backlog.
        cfg.write_text(cfg_text.replace(
            '[mqtt]\nenabled = false\nhost = "localhost"\nport = 1883',
            f'[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {broker.port}\n'
            f'outbox = "{outbox}"'))
        truth_path = workdir / "truth.json"
        proc = subprocess.run(
            [sys.executable, "-m", "edge.cli", "run", "--sim", "--config", str(cfg), *extra,
             "--json", "--quiet",
             "--record-dir", str(workdir / "rec"), "--ground-truth", str(truth_path)],
            capture_output=True, text=True, timeout=length_s + 120,
        )
        time.sleep(SETTLE_S)
        collector.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"rig exited {proc.returncode}: {proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    truth = json.loads(truth_path.read_text())
    result = score(truth, collector, summary)
    result["recording"] = summary.get("recording")
    return result


def _table(r: dict[str, Any]) -> str:
    lines = ["spotting (MEGC, IoU >= 0.5):"]
    for k, v in r["spotting"].items():
        lines.append(f"  {k:8s} P {v['precision']:.2f} R {v['recall']:.2f} F1 {v['f1']:.2f} "
                     f"(tp {v['tp']}, fp {v['fp']}, fn {v['fn']})")
    lines.append(f"emotion UF1 {r['emotion_uf1']} accuracy {r['emotion_accuracy']}")
    lines.append(f"latency offset->events/me ms {r['me_latency_ms']}")
    lines.append(f"latency window close->events/emotion ms {r['emotion_latency_ms']}")
    lines.append(f"marker error max ms {r['marker_error_ms_max']}, sync uncertainty ms "
                 f"{r['sync_uncertainty_ms']}")
    lines.append(f"dropped {r['dropped']} of {r['expected']}; CPU {r['cpu_percent']}% of one "
                 f"core, RSS {r['rss_mb']} MB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mmme-hil run", description=__doc__.splitlines()[0])
    p.add_argument("scenario", type=Path, help="scenario TOML (e.g. hil/scenarios/"
                   "e2e_short.toml), or a recording (.mcap) with coded intervals to replay")
    p.add_argument("--duration", type=float, default=None, help="override the scenario length")
    p.add_argument("--json", action="store_true")
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args(argv)
    if not args.scenario.exists():
        print(f"mmme-hil: no such scenario: {args.scenario}", file=sys.stderr)
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mmme-e2e-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.scenario.suffix == ".mcap":
        result = run_replay(args.scenario, workdir)
    else:
        result = run_scenario(args.scenario, workdir, args.duration)
    print(_table(result), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result))
    return 0
