"""One session: the chain of sinks a rig feeds, built in one place, and ``run()``.

:func:`build_session` assembles the tally, the clock keeper, probes, processing
(features, spotter, fusion) with its outlet, and the controls that open and close the
recording sink. ``run()`` (``mmme-edge run``), :func:`hil.faults.run_with_faults` and
``mmme-edge selftest`` all build their chain here, so none of them wires sinks by hand.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from edge.config import RigConfig
from edge.controls import Controls
from edge.runtime.engine import Runtime, StreamTally
from edge.runtime.report import (
    health_body,
    human_summary,
    status_line,
    summarise,
    thread_cpu_s,
    tree_cpu_s,
    tree_rss_mb,
)
from edge.service import StopSignals

if TYPE_CHECKING:
    from edge.clock.keeper import ClockKeeper
    from edge.processing import Processing
    from edge.rig import Rig


def software_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mmme-edge")
    except PackageNotFoundError:
        return "0+unknown"


def open_outlet(cfg: RigConfig, rig: Rig, model_version: str,
                on_command: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None
                ) -> Any:
    """The MQTT publisher when [mqtt] is enabled, else a local in-memory outlet."""
    from edge.processing import LocalOutlet

    if not cfg.mqtt["enabled"]:
        return LocalOutlet()
    from edge.mqtt.publisher import MqttSettings, Publisher, status_body

    settings = MqttSettings.from_config(cfg.mqtt)
    status = status_body(software_version(), model_version, cfg.digest(), rig.stream_names())
    return Publisher(settings, cfg.rig["id"], status, on_command=on_command)


def load_fusion() -> Any:
    try:
        from edge.fusion import FusionModel

        return FusionModel.load()
    except Exception as exc:  # the rig still spots and publishes without the model
        print(f"warning: fusion model not loaded: {exc}", file=sys.stderr)
        return None


@dataclass
class Session:
    """A rig's sinks, its engine and its controls, with one start and one shutdown."""

    cfg: RigConfig
    rig: Rig
    tally: StreamTally
    keeper: ClockKeeper
    controls: Controls
    outlet: Any
    processing: Processing | None
    runtime: Runtime
    data_dir: Path | None = None  # recordings; `mmme-fleet offload` leaves its state there
    proc: psutil.Process = field(default_factory=lambda: psutil.Process(os.getpid()))
    _health_last: dict[str, Any] = field(default_factory=dict)
    _closed: bool = False

    @property
    def errors(self) -> list[str]:
        """Engine and processing errors, in that order."""
        return [*self.runtime.errors, *(self.processing.errors if self.processing else [])]

    def health(self, last: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ``health`` body; ``last`` keeps a caller's own previous figures for rates."""
        body = health_body(self.tally, self.rig, self.proc, self.outlet,
                           self.controls.recording, self.keeper,
                           self._health_last if last is None else last, self.runtime)
        if self.data_dir is not None:
            from fleet.offload import read_state  # recordings home: what it last wrote

            offload = read_state(self.data_dir)
            if offload is not None:
                body["offload"] = offload
        return body

    def record_event(self, kind: str, payload: dict[str, Any], t_ns: int) -> None:
        if self.controls.recording is not None:
            self.controls.recording.recorder.write_event(kind, payload, t_ns)

    def start(self) -> None:
        if hasattr(self.outlet, "start"):
            self.outlet.start()
        self.runtime.start()

    def step(self, timeout_s: float = 0.005) -> int:
        """One turn of the dispatcher loop: sinks, pending commands, processing's tick."""
        moved = self.runtime.dispatch(timeout_s)
        self.controls.apply_pending()
        if self.processing is not None:
            try:
                self.processing.tick()
            except Exception as exc:  # counted as the processing sink's failure
                self.runtime.note_failure(self.processing, exc)
        return moved

    def stop(self) -> None:
        """Stop the data flow: devices, pumps, the last items, the keeper, processing.

        Each step is guarded, so a failing one cannot keep the recording from closing.
        """
        guard = self.runtime.guard
        guard("runtime", self.runtime.stop)
        guard("clock", self.keeper.flush)  # the last frames' pulses and final clock states
        if self.processing is not None:
            guard("processing", self.processing.close)

    def close(self) -> None:
        """After :meth:`stop`: the outlet, commands still waiting, the recording, the rig."""
        if self._closed:
            return
        self._closed = True
        guard = self.runtime.guard
        if hasattr(self.outlet, "stop"):
            guard("outlet", self.outlet.stop)
        guard("controls", self.controls.apply_pending)
        if self.controls.recording is not None:
            guard("recording", lambda: self.controls.handle_now("stop_recording"))
        guard("rig", self.rig.close)


def build_session(cfg: RigConfig, rig: Rig, *, record_dir: str | Path | None = None,
                  record: bool | None = None, outlet: Any = None, fusion: Any = None,
                  processing: bool = True, probes: Iterable[Any] = ()) -> Session:
    """The rig's chain of sinks, in the order each item reaches them: tally, clock keeper,
    the recording (opened now by the controls when ``record``, default
    ``cfg.rig["record"]``; later ones join at the end), ``probes``, processing.

    ``outlet`` defaults to the MQTT publisher when [mqtt] is enabled (commands go to the
    controls), else a :class:`~edge.processing.LocalOutlet`. A probe with a
    ``bind(rig, keeper)`` method gets it called first; probes come after the keeper, so
    they may read it.
    """
    from edge.clock.keeper import ClockKeeper
    from edge.processing import Processing
    from edge.recording.sink import open_recording_sink

    tally = StreamTally()
    # The clock keeper comes before the recorder, which writes its clock states.
    keeper = ClockKeeper.from_rig(rig, camera_fps=float(cfg.camera["fps"]))
    sinks: list[Any] = [tally, keeper]
    out_dir = Path(record_dir or cfg.rig["data_dir"])

    # The parts call back into the outlet (status) and the session (health, events to the
    # recording), which exist only once they are built: they reach them through ``late``.
    late: dict[str, Any] = {}

    def face_box() -> Any:  # the face store's crop follows the spotter's tracked face
        proc = late.get("processing")
        return proc.face_box() if proc is not None else None

    def open_recording(session: str | None = None, subject: str | None = None) -> Any:
        return open_recording_sink(out_dir, rig, cfg, clock=keeper, session=session,
                                   subject=subject, face_box=face_box)

    controls = Controls(sinks, open_recording, on_state=lambda **kw: getattr(
        late["outlet"], "update_status", _noop)(**kw),
        deliver=lambda method, items: late["session"].runtime.deliver(method, items))
    if outlet is None:
        outlet = open_outlet(cfg, rig, getattr(fusion, "version", "none"), controls.handle)
    late["outlet"] = outlet
    if cfg.rig["record"] if record is None else record:
        controls.handle_now("start_recording")  # the recorder right after the keeper
    for p in probes:
        if hasattr(p, "bind"):
            p.bind(rig, keeper)
        sinks.append(p)
    proc_sink = None
    if processing:
        infos = {i.name: i for i in rig.stream_infos()}
        proc_sink = Processing(
            infos, float(cfg.camera["fps"]), outlet, fusion=fusion,
            mains_hz=float(cfg.features["mains_hz"]),
            eeg_channels=tuple(cfg.features["eeg_channels"]),
            ppg_inverted=bool(cfg.features["ppg_inverted"]),
            health=lambda: late["session"].health(),
            record_event=lambda *a: late["session"].record_event(*a), remap=keeper.remap)
        sinks.append(proc_sink)
        late["processing"] = proc_sink
    late["session"] = session = Session(cfg, rig, tally, keeper, controls, outlet, proc_sink,
                                        Runtime(rig, sinks), data_dir=out_dir)
    return session


def _noop(**_kw: Any) -> None:
    pass


def run(cfg: RigConfig, duration_s: float = 0.0, as_json: bool = False, quiet: bool = False,
        record_dir: str | None = None, ground_truth: str | None = None) -> int:
    """Run the rig until ``duration_s`` passes (0: until interrupted)."""
    from edge.rig import open_rig

    rig = open_rig(cfg, duration_s=duration_s)
    try:
        if ground_truth and rig.bench is not None:
            rig.bench.write_ground_truth(ground_truth)
        s = build_session(cfg, rig, record_dir=record_dir, fusion=load_fusion())
    except BaseException:
        rig.close()
        raise
    proc = s.proc
    cpu0 = tree_cpu_s(proc)
    threads0 = thread_cpu_s(proc)
    sim0 = rig.simulator_cpu_s()
    t0 = time.monotonic()
    out = sys.stderr if as_json else sys.stdout
    last: dict[str, int] = {}
    next_status = t0 + 1.0
    rss_peak = 0.0
    with StopSignals() as stop:  # SIGTERM (systemctl stop), Ctrl-C: a clean stop
        s.start()
        dog = watchdog(s.tally, rig)
        try:
            while not stop.requested and (duration_s <= 0 or time.monotonic() - t0 < duration_s):
                s.step(0.005)
                now = time.monotonic()
                if now >= next_status:
                    next_status += 1.0
                    rss_now = tree_rss_mb(proc)
                    rss_peak = max(rss_peak, rss_now)
                    if not quiet:
                        print(status_line(now - t0, s.tally, rig, last, rss_now), file=out,
                              flush=True)
        except KeyboardInterrupt:
            pass
        finally:
            threads1 = thread_cpu_s(proc)  # before the threads end and take their figures along
            sim1 = rig.simulator_cpu_s()
            t_threads = time.monotonic()
            s.runtime.guard("watchdog", dog.stop)
            s.stop()
            wall = time.monotonic() - t0
            cpu = tree_cpu_s(proc) - cpu0
            rss_peak = max(rss_peak, tree_rss_mb(proc))
            s.close()
    summary = summarise(s.tally, rig, s.runtime, cpu, wall, rss_peak, s.keeper)
    span = max(t_threads - t0, 1e-9)
    if rig.bench is not None:  # the simulators' share is not the rig's: both are shown
        sim_pct = round(100.0 * (sim1 - sim0) / span, 1)
        summary["cpu_percent_simulators"] = sim_pct
        summary["cpu_percent_rig"] = round(summary["cpu_percent"] - sim_pct, 1)
    summary["cpu_percent_by_thread"] = {
        k: round(100.0 * (v - threads0.get(k, 0.0)) / span, 1)
        for k, v in sorted(threads1.items(), key=lambda kv: -(kv[1] - threads0.get(kv[0], 0.0)))
        if v - threads0.get(k, 0.0) > 0.001 * span}
    processing, controls = s.processing, s.controls
    assert processing is not None
    summary["events"] = {"me": processing.counters["me"],
                         "emotion": processing.counters["emotion"]}
    summary["spotter"] = processing.spotter_figures()
    summary["errors"] += processing.errors[:10]
    summary.update(rig.notes())  # what the bench replayed, if it did
    if controls.closed_recordings:
        summary["recording"] = controls.closed_recordings[-1]
        summary["recordings"] = controls.closed_recordings
        c = controls.recorder_stats[-1] or controls.recorder_counters[-1]
        summary["recorder"] = {k: c[k] for k in (
            "written_bytes", "queue_high_water", "dropped_queue", "dropped_frames",
            "dropped_error", "write_errors", "busy_s", "dropped_low_space", "store",
            "video", "storage") if k in c}
    if not quiet:
        for e in summary["errors"][:5]:
            print(f"error: {e}", file=out)
    if as_json:
        print(json.dumps(summary), flush=True)
    else:
        print(human_summary(summary), flush=True)
    return 0


def watchdog(tally: StreamTally, rig: Rig) -> Any:
    """systemd: READY once every stream flows, WATCHDOG only while they keep flowing."""
    from edge.service import Notifier, StreamProgress, Watchdog

    flowing = StreamProgress(lambda: {n: t.received for n, t in tally.tallies.items()},
                             rig.stream_names(), stall_s=3.0)
    status: dict[str, dict[str, int]] = {"last": {}}
    return Watchdog(Notifier(), flowing,
                    describe=lambda: status_line(0.0, tally, rig, status["last"])).start()
