"""The report of a run: status lines, the ``health`` body, the summary at the end.

Read-only views of the tally, the rig's counters, the clock keeper and the engine's
queues and sink failures; nothing here changes what the rig does.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any

import psutil

from edge.runtime.engine import Runtime, StreamTally, Tally

if TYPE_CHECKING:
    from edge.rig import Rig


def process_tree(proc: psutil.Process) -> list[psutil.Process]:
    """The rig process and its live children (the EEG acquisition process)."""
    return [proc, *proc.children(recursive=True)]


def tree_cpu_s(proc: psutil.Process) -> float:
    total = 0.0
    for p in process_tree(proc):
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def tree_rss_mb(proc: psutil.Process) -> float:
    total = 0
    for p in process_tree(proc):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total / 2**20


def status_line(elapsed_s: float, tally: StreamTally, rig: Rig, last: dict[str, int],
                rss_mb: float | None = None) -> str:
    parts = [f"t={elapsed_s:6.1f}s"]
    for name, t in sorted(tally.tallies.items()):
        rate = t.received - last.get(name, 0)
        last[name] = t.received
        unit = "fps" if name == "camera" else "Hz"
        parts.append(f"{name} {rate:5d} {unit} drops {max(t.dropped, rig.dropped(name))}")
    if tally.markers:
        m = tally.markers[-1]
        parts.append(f"marker {m.code}")
    if rss_mb is not None:
        parts.append(f"rss {rss_mb:.1f} MB")
    return " | ".join(parts)


def named_thread_cpu_s(proc: psutil.Process) -> dict[str, float]:
    """CPU seconds per thread name of this process (``proc``); threads that Python did not
    start (native pools) are "other"."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    with contextlib.suppress(psutil.NoSuchProcess):
        for t in proc.threads():
            name = names.get(t.id, "other")
            out[name] = out.get(name, 0.0) + t.user_time + t.system_time
    return out


def process_cpu_s(proc: psutil.Process) -> float:
    """CPU seconds a whole process has used (user and system); raises NoSuchProcess."""
    ct = proc.cpu_times()
    return ct.user + ct.system


def thread_cpu_s(proc: psutil.Process) -> dict[str, float]:
    """CPU seconds per named thread of this process, and per child process."""
    out = named_thread_cpu_s(proc)
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            out[f"process:{child.name()}:{child.pid}"] = process_cpu_s(child)
    return out


def summarise(tally: StreamTally, rig: Rig, runtime: Runtime, cpu_s: float, wall_s: float,
              rss_mb: float, keeper: Any = None) -> dict[str, Any]:
    streams = {}
    for name in rig.stream_names():
        t = tally.tallies.get(name, Tally())
        q = runtime.queues.get(name)
        lost_in_queue = q.dropped_weight if q else 0
        # Device-side losses show as counter gaps at the consumer too: count them once.
        streams[name] = {
            "expected": t.expected,
            "received": t.received,
            "dropped": max(t.dropped, rig.dropped(name) + lost_in_queue),
            "detail": rig.counter_detail(name),
        }
        if keeper is not None:  # the stream's clock: uncertainty, drift, pulse pairs
            streams[name]["sync"] = keeper.summary(name)
    return {
        "streams": streams,
        "markers": len(tally.markers),
        "cpu_percent": round(100.0 * cpu_s / wall_s, 1) if wall_s else 0.0,
        "cpu_count": psutil.cpu_count(),
        "rss_mb": round(rss_mb, 1),
        "duration_s": round(wall_s, 2),
        "sinks": runtime.sink_report(),
        "errors": runtime.errors[:20],
    }


def health_body(tally: StreamTally, rig: Rig, proc: psutil.Process, outlet: Any,
                recording: Any, keeper: Any, last: dict[str, Any],
                runtime: Runtime | None = None) -> dict[str, Any]:
    """The ``health`` message's body; ``last`` keeps the previous call's figures for rates."""
    now = time.monotonic()
    dt = now - last.get("t", now)
    before = last.setdefault("received", {})
    streams = {}
    for name in rig.stream_names():
        t = tally.tallies.get(name, Tally())
        rate = (t.received - before.get(name, 0)) / dt if dt > 0 else 0.0
        before[name] = t.received
        sync = keeper.summary(name)
        streams[name] = {"rate_hz": round(rate, 1), "dropped": int(t.dropped),
                         "flowing": rate > 0 or dt == 0,
                         "sync_uncertainty_ms": sync.get("uncertainty_ms"),
                         "sync_quality": sync.get("quality")}
    last["t"] = now
    body: dict[str, Any] = {
        "streams": streams,
        "cpu_percent": round(proc.cpu_percent(None), 1),
        "rss_mb": round(tree_rss_mb(proc), 1),
        "temperature_c": cpu_temperature_c(),
        "disk_free_mb": round(psutil.disk_usage(".").free / 2**20, 1),
    }
    if hasattr(outlet, "outbox"):
        body["outbox_backlog"] = len(outlet.outbox)
        body["outbox_dropped"] = outlet.outbox.dropped
    if recording is not None:
        body["recorder"] = recording.recorder.status
        body["storage"] = recording.recorder.storage()
    if runtime is not None:
        body["sinks"] = runtime.sink_report()
    return body


def cpu_temperature_c() -> float | None:
    temps = getattr(psutil, "sensors_temperatures", lambda: {})() or {}
    for entries in temps.values():
        for e in entries:
            if e.current:
                return float(e.current)
    return None


def human_summary(summary: dict[str, Any]) -> str:
    lines = [f"ran {summary['duration_s']} s, CPU {summary['cpu_percent']}% of one core, "
             f"peak RSS {summary['rss_mb']} MB, {summary['markers']} markers"]
    for name, s in summary["streams"].items():
        sync = s.get("sync") or {}
        unc = sync.get("uncertainty_ms")
        clock = (f" | clock {sync.get('quality')} +-{unc:.3f} ms, "
                 f"{sync.get('drift_ppm'):+.1f} ppm" if unc is not None
                 else f" | clock {sync.get('quality', 'none')}")
        lines.append(f"  {name:7s} expected {s['expected']:8d} received {s['received']:8d} "
                     f"dropped {s['dropped']}{clock if sync else ''}")
    for name, f in (summary.get("sinks") or {}).items():
        lines.append(f"  sink {name} failed {f['failures']} times (reset {f['resets']}x), "
                     f"last: {f['last_error']}")
    if "recording" in summary:
        lines.append(f"  recording: {summary['recording']}")
    return "\n".join(lines)
