"""The rig at run time: one acquisition thread per device, one dispatcher, the sinks.

driver.poll / source.read  ->  DropQueue (bounded, counted)  ->  dispatcher  ->  sinks
(tally, recorder, clock, features, spotter, ...). Drivers are synchronous; this module
owns the threads. It knows nothing of simulation: ``edge.rig`` hands it devices.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil

from edge.config import RigConfig
from edge.controls import Controls
from edge.queues import DropQueue
from sensors.blocks import Frame, Marker, SampleBlock, monotonic_ns

# A waiting DRDY thread must get the GIL back well inside one 1 ms sample period.
SWITCH_INTERVAL_S = 0.0002


def limit_native_pools() -> None:
    """No native worker pools beside the rig's own threads.

    OpenCV's parallel_for pool (used by the spotter's and the simulated camera's cv2
    calls) keeps its worker spinning in ``sched_yield`` between jobs: on a 2-core board
    that thread alone took ~8-17 % of a core (the summary's "other") for jobs of a few
    hundred microseconds. One thread runs them in the caller instead. (The fusion
    interpreter is loaded with ``num_threads=1``; OpenBLAS' idle workers sleep.)
    """
    try:
        import cv2
    except ImportError:  # no OpenCV: nothing to limit
        return
    cv2.setNumThreads(1)


def freeze_startup_objects() -> None:
    """Keep the cyclic GC off everything built before the run (modules, model, rings).

    A full collection walks every tracked object while holding the GIL: with ~100k of
    them it stalled every thread for up to 42 ms on the bench VM, while the camera's
    capture ring filled (6 buffers last 30 ms at 200 fps). Frozen objects are never
    walked again, so later collections only see what the run itself allocates.
    """
    gc.collect()
    gc.freeze()


class Sink(Protocol):
    def on_block(self, block: SampleBlock) -> None: ...
    def on_frame(self, frame: Frame) -> None: ...
    def on_marker(self, marker: Marker) -> None: ...


@dataclass
class Tally:
    """What one stream delivered, judged by the device's own counter (drift-proof)."""

    first: int | None = None
    last: int | None = None
    received: int = 0

    def add(self, first: int, last: int, n: int) -> None:
        if self.first is None:
            self.first = first
        self.last = last if self.last is None else max(self.last, last)
        self.received += n

    @property
    def expected(self) -> int:
        return 0 if self.first is None or self.last is None else self.last - self.first + 1

    @property
    def dropped(self) -> int:
        return max(self.expected - self.received, 0)


@dataclass
class StreamTally:
    """The tally sink: per-stream expected/received/dropped and the markers seen."""

    tallies: dict[str, Tally] = field(default_factory=dict)
    markers: list[Marker] = field(default_factory=list)
    max_markers: int = 1000

    def _t(self, name: str) -> Tally:
        return self.tallies.setdefault(name, Tally())

    def on_block(self, block: SampleBlock) -> None:
        if len(block):
            self._t(block.stream).add(int(block.index[0]), int(block.index[-1]), len(block))

    def on_frame(self, frame: Frame) -> None:
        self._t("camera").add(frame.seq, frame.seq, 1)

    def on_marker(self, marker: Marker) -> None:
        if len(self.markers) < self.max_markers:
            self.markers.append(marker)


class _Pump(threading.Thread):
    """Pulls from one device forever, pushing what it gets into a bounded queue."""

    def __init__(self, name: str, pull: Callable[[float], Iterable[Any]], out: DropQueue,
                 stop: threading.Event, errors: list[str]) -> None:
        super().__init__(name=f"acq-{name}", daemon=True)
        self._pull, self._out, self._halt, self._errors = pull, out, stop, errors

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                for item in self._pull(0.05):
                    self._out.put(item)
            except Exception as exc:  # a driver bug must show, not kill the rig silently
                self._errors.append(f"{self.name}: {type(exc).__name__}: {exc}")
                time.sleep(0.2)


def _frames(source: Any) -> Callable[[float], list[Frame]]:
    def pull(timeout_s: float) -> list[Frame]:
        frame = source.read(timeout_s)
        return [] if frame is None else [frame]

    return pull


class Runtime:
    """Starts the devices' pumps and feeds every sink from one dispatcher loop."""

    def __init__(self, rig: Any, sinks: list[Sink], queue_blocks: int = 512,
                 queue_frames: int = 64) -> None:
        self.rig = rig
        self.sinks = sinks
        self.stop_event = threading.Event()
        self.errors: list[str] = []
        self.queues: dict[str, DropQueue] = {}
        self._pumps: list[_Pump] = []
        for name, driver in rig.sample_drivers().items():
            q: DropQueue = DropQueue(queue_blocks, weight=len)
            self.queues[name] = q
            self._pumps.append(_Pump(name, driver.poll, q, self.stop_event, self.errors))
        if rig.camera is not None:
            q = DropQueue(queue_frames)
            self.queues["camera"] = q
            self._pumps.append(
                _Pump("camera", _frames(rig.camera), q, self.stop_event, self.errors))
        if rig.markers is not None:
            q = DropQueue(256)
            self.queues["markers"] = q
            self._pumps.append(_Pump("markers", rig.markers.poll, q, self.stop_event, self.errors))

    def start(self) -> None:
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        limit_native_pools()
        freeze_startup_objects()
        self.rig.start()
        for p in self._pumps:
            p.start()

    def dispatch(self, timeout_s: float) -> int:
        """Hand everything queued to the sinks; returns how many items moved."""
        moved = 0
        for name, q in self.queues.items():
            items = q.drain()
            moved += len(items)
            for item in items:
                for sink in self.sinks:
                    if name == "camera":
                        sink.on_frame(item)
                    elif name == "markers":
                        sink.on_marker(item)
                    else:
                        sink.on_block(item)
        if not moved:
            time.sleep(timeout_s)
        return moved

    def stop(self) -> None:
        self.rig.stop()  # devices first, so the pumps collect their last samples
        time.sleep(0.1)
        self.stop_event.set()
        for p in self._pumps:
            p.join(timeout=2.0)
        while self.dispatch(0.0):
            pass


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    """The rig process and its live children (the EEG acquisition process)."""
    return [proc, *proc.children(recursive=True)]


def _tree_cpu_s(proc: psutil.Process) -> float:
    total = 0.0
    for p in _tree(proc):
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def _tree_rss_mb(proc: psutil.Process) -> float:
    total = 0
    for p in _tree(proc):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total / 2**20


def _status_line(elapsed_s: float, tally: StreamTally, rig: Any, last: dict[str, int],
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


def _thread_cpu_s(proc: psutil.Process) -> dict[str, float]:
    """CPU seconds per named thread of this process, and per child process."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    with contextlib.suppress(psutil.NoSuchProcess):
        for t in proc.threads():
            name = names.get(t.id, "other")
            out[name] = out.get(name, 0.0) + t.user_time + t.system_time
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            ct = child.cpu_times()
            out[f"process:{child.name()}:{child.pid}"] = ct.user + ct.system
    return out


def summarise(tally: StreamTally, rig: Any, runtime: Runtime, cpu_s: float, wall_s: float,
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
        "errors": runtime.errors[:20],
    }


def _software_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mmme-edge")
    except PackageNotFoundError:
        return "0+unknown"


def _noop(**_kw: Any) -> None:
    pass


def _open_outlet(cfg: RigConfig, rig: Any, model_version: str,
                 on_command: Any = None) -> Any:
    """The MQTT publisher when [mqtt] is enabled, else a local in-memory outlet."""
    from edge.processing import LocalOutlet

    if not cfg.mqtt["enabled"]:
        return LocalOutlet()
    from edge.mqtt.publisher import MqttSettings, Publisher, status_body

    settings = MqttSettings.from_config(cfg.mqtt)
    status = status_body(_software_version(), model_version, cfg.digest(), rig.stream_names())
    return Publisher(settings, cfg.rig["id"], status, on_command=on_command)


def _load_fusion() -> Any:
    try:
        from edge.fusion import FusionModel

        return FusionModel.load()
    except Exception as exc:  # the rig still spots and publishes without the model
        print(f"warning: fusion model not loaded: {exc}", file=sys.stderr)
        return None


def run(cfg: RigConfig, duration_s: float = 0.0, as_json: bool = False, quiet: bool = False,
        record_dir: str | None = None, ground_truth: str | None = None) -> int:
    """Run the rig until ``duration_s`` passes (0: until interrupted)."""
    from edge.clock.keeper import ClockKeeper
    from edge.processing import Processing
    from edge.rig import open_rig

    rig = open_rig(cfg, duration_s=duration_s)
    if ground_truth and rig.bench is not None:
        rig.bench.write_ground_truth(ground_truth)
    tally = StreamTally()
    # The clock keeper comes before the recorder, which writes its clock states.
    keeper = ClockKeeper.from_rig(rig, camera_fps=float(cfg.camera["fps"]))
    sinks: list[Sink] = [tally, keeper]
    out_dir = Path(record_dir or cfg.rig["data_dir"])

    def open_recording(session: str | None = None, subject: str | None = None) -> Any:
        from edge.recording.sink import open_recording_sink

        return open_recording_sink(out_dir, rig, cfg, clock=keeper, session=session,
                                   subject=subject)

    fusion = _load_fusion()
    controls = Controls(sinks, open_recording,
                        on_state=lambda **kw: getattr(outlet, "update_status", _noop)(**kw))
    outlet = _open_outlet(cfg, rig, getattr(fusion, "version", "none"), controls.handle)
    if cfg.rig["record"]:
        controls.handle_now("start_recording")
    proc = psutil.Process(os.getpid())
    last_health: dict[str, Any] = {}  # this run's previous health figures, for rates

    def health() -> dict[str, Any]:
        from fleet.offload import read_state  # what `mmme-fleet offload` last wrote

        body = _health(tally, rig, proc, outlet, controls.recording, keeper, last_health)
        offload = read_state(out_dir)
        if offload is not None:
            body["offload"] = offload
        return body

    def record_event(kind: str, payload: dict[str, Any], t_ns: int) -> None:
        if controls.recording is not None:
            controls.recording.recorder.write_event(kind, payload, t_ns)

    infos = {i.name: i for i in rig.stream_infos()}
    processing = Processing(
        infos, float(cfg.camera["fps"]), outlet, fusion=fusion,
        mains_hz=float(cfg.features["mains_hz"]), health=health,
        record_event=record_event, remap=keeper.remap,
    )
    sinks.append(processing)
    runtime = Runtime(rig, sinks)
    if hasattr(outlet, "start"):
        outlet.start()
    cpu0 = _tree_cpu_s(proc)
    threads0 = _thread_cpu_s(proc)
    t0 = time.monotonic()
    out = sys.stderr if as_json else sys.stdout
    last: dict[str, int] = {}
    next_status = t0 + 1.0
    rss_peak = 0.0
    runtime.start()
    dog = _watchdog(tally, rig)
    try:
        while duration_s <= 0 or time.monotonic() - t0 < duration_s:
            runtime.dispatch(0.005)
            controls.apply_pending()
            processing.tick()
            now = time.monotonic()
            if now >= next_status:
                next_status += 1.0
                rss_now = _tree_rss_mb(proc)
                rss_peak = max(rss_peak, rss_now)
                if not quiet:
                    print(_status_line(now - t0, tally, rig, last, rss_now), file=out,
                          flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        threads1 = _thread_cpu_s(proc)  # before the threads end and take their figures along
        t_threads = time.monotonic()
        dog.stop()
        runtime.stop()
        try:
            keeper.flush()  # the last frames' pulses and the final clock states
        except Exception as exc:  # never lose the recording's close over it
            runtime.errors.append(f"clock: {type(exc).__name__}: {exc}")
        processing.close()
        wall = time.monotonic() - t0
        cpu = _tree_cpu_s(proc) - cpu0
        rss_peak = max(rss_peak, _tree_rss_mb(proc))
        if hasattr(outlet, "stop"):
            outlet.stop()
        controls.apply_pending()
        if controls.recording is not None:
            controls.handle_now("stop_recording")
        rig.close()
    summary = summarise(tally, rig, runtime, cpu, wall, rss_peak, keeper)
    span = max(t_threads - t0, 1e-9)
    summary["cpu_percent_by_thread"] = {
        k: round(100.0 * (v - threads0.get(k, 0.0)) / span, 1)
        for k, v in sorted(threads1.items(), key=lambda kv: -(kv[1] - threads0.get(kv[0], 0.0)))
        if v - threads0.get(k, 0.0) > 0.001 * span}
    summary["events"] = {"me": processing.counters["me"],
                         "emotion": processing.counters["emotion"]}
    summary["spotter"] = processing.spotter_figures()
    summary["errors"] += processing.errors[:10]
    if controls.closed_recordings:
        summary["recording"] = controls.closed_recordings[-1]
        summary["recordings"] = controls.closed_recordings
        c = controls.recorder_counters[-1]
        summary["recorder"] = {k: c[k] for k in (
            "written_bytes", "queue_high_water", "dropped_queue", "dropped_frames",
            "dropped_error", "write_errors", "busy_s")}
    if not quiet:
        for e in summary["errors"][:5]:
            print(f"error: {e}", file=out)
    if as_json:
        print(json.dumps(summary), flush=True)
    else:
        print(_human_summary(summary), flush=True)
    return 0


def _watchdog(tally: StreamTally, rig: Any) -> Any:
    """systemd: READY once every stream flows, WATCHDOG only while they keep flowing."""
    from edge.service import Notifier, StreamProgress, Watchdog

    flowing = StreamProgress(lambda: {n: t.received for n, t in tally.tallies.items()},
                             rig.stream_names(), stall_s=3.0)
    status = {"last": {}}
    return Watchdog(Notifier(), flowing,
                    describe=lambda: _status_line(0.0, tally, rig, status["last"])).start()


def _health(tally: StreamTally, rig: Any, proc: psutil.Process, outlet: Any, recorder: Any,
            keeper: Any, last: dict[str, Any]) -> dict[str, Any]:
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
        "rss_mb": round(_tree_rss_mb(proc), 1),
        "temperature_c": _cpu_temperature_c(),
        "disk_free_mb": round(psutil.disk_usage(".").free / 2**20, 1),
    }
    if hasattr(outlet, "outbox"):
        body["outbox_backlog"] = len(outlet.outbox)
        body["outbox_dropped"] = outlet.outbox.dropped
    if recorder is not None:
        body["recorder"] = recorder.recorder.status
    return body


def _cpu_temperature_c() -> float | None:
    temps = getattr(psutil, "sensors_temperatures", lambda: {})() or {}
    for entries in temps.values():
        for e in entries:
            if e.current:
                return float(e.current)
    return None


def _human_summary(summary: dict[str, Any]) -> str:
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
    if "recording" in summary:
        lines.append(f"  recording: {summary['recording']}")
    return "\n".join(lines)


__all__ = ["Runtime", "StreamTally", "monotonic_ns", "run"]
