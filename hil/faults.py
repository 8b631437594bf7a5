"""Fault injection on the whole rig: run it in-process for N seconds, break things on cue.

:func:`run_with_faults` opens the simulated rig (``edge.rig.open_rig``: the real drivers
on the bench's seams), builds the session ``mmme-edge run`` builds
(:func:`edge.runtime.build_session`: tally, clock keeper, the recorder when asked,
processing with a :class:`~edge.processing.LocalOutlet` unless [mqtt] is on), runs the
systemd :class:`~edge.service.Watchdog` logic on the streams, and calls each
:class:`Fault`'s action at its time. Every ``sample_every_s`` it notes what a person or
the health message would see (per-stream received counts, the drivers' counters, the
hub's ``connected``, the watchdog's ``stalled``, the clock keeper's state, the health
body). It returns a :class:`FaultRun`.

Fault helpers for what the bench has no one-call switch for:

- :func:`corrupt_hub` turns on the hub emulator's byte corruption and logs the sequence
  number of every frame it damaged, so "every clean frame delivered" is checkable.
- :func:`step_hub_clock` steps the hub MCU's clock (its microsecond timestamps jump)
  while its sample pace carries on (the emulator's public ``step_clock`` hook, which keeps
  its truth table exact with a :class:`~hil.sim.crystal.SteppedCrystal`).
- :func:`cpu_hogs` starts busy-loop child processes (CPU starvation) and ends them by pid.
- EEG faults, direct SPI (``sim.eeg_link = "spi"``): into the acquisition process through
  :meth:`edge.acquisition.ProcessDriver.inject` (e.g. ``"stick_drdy"``). Behind the
  bridge (the default): the bridge emulator is ``rig.bench.eeg_bridge`` in this process,
  with its public hooks (``corrupt_responses``, ``reset``, ``stop_answering``, ...).
"""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hil.sim.crystal import SteppedCrystal
from sensors import hub_protocol as hp
from sensors.blocks import monotonic_ns


@dataclass
class Fault:
    """``action(rig)`` is called ``at_s`` seconds after the runtime started."""

    at_s: float
    name: str
    action: Callable[[Any], Any]


@dataclass
class Snapshot:
    """What could be seen at ``t_s`` (seconds since the runtime started)."""

    t_s: float
    received: dict[str, int]
    dropped: dict[str, int]  # the summary's figure: max(tally gap, device + queue counters)
    counters: dict[str, dict[str, int]]
    hub_connected: bool | None
    watchdog_stalled: bool
    watchdog_pets: int
    clock: dict[str, dict[str, Any]]
    health: dict[str, Any] | None = None


@dataclass
class FaultRun:
    """The outcome of :func:`run_with_faults`."""

    duration_s: float
    fault_times: dict[str, float]  # fault name -> when it was injected (s since start)
    timeline: list[Snapshot]
    summary: dict[str, Any]  # edge.runtime.summarise(), as the CLI prints it
    counters: dict[str, dict[str, int]]  # rig.counter_detail per stream, at the end
    clock: dict[str, dict[str, Any]]  # ClockKeeper.state() at the end
    outlet_counts: dict[str, int]  # what the LocalOutlet saw, per kind
    outlet_messages: list[tuple[str, dict[str, Any]]]
    processing: dict[str, int]
    errors: list[str]  # runtime + processing errors
    watchdog: dict[str, Any]
    recorder: dict[str, Any] | None = None  # Recorder.close() figures
    extra: dict[str, Any] = field(default_factory=dict)

    def rate(self, stream: str, t0_s: float, t1_s: float) -> float:
        """Received items per second between the snapshots nearest ``t0_s`` and ``t1_s``."""
        a = min(self.timeline, key=lambda s: abs(s.t_s - t0_s))
        b = min(self.timeline, key=lambda s: abs(s.t_s - t1_s))
        if b.t_s <= a.t_s:
            return 0.0
        return (b.received.get(stream, 0) - a.received.get(stream, 0)) / (b.t_s - a.t_s)

    def first(self, pred: Callable[[Snapshot], bool], after_s: float = 0.0) -> float | None:
        """Time of the first snapshot at or after ``after_s`` for which ``pred`` holds."""
        for s in self.timeline:
            if s.t_s >= after_s and pred(s):
                return s.t_s
        return None


def sim_config(*, eeg: bool = True, hub: bool = True, camera: bool = True,
               record: bool = False, camera_store: str = "none", min_free_mb: int | None = None,
               **sim: Any) -> Any:
    """The shipped sim config, every device simulated, with devices switched on or off
    (``min_free_mb=0``: no low-space stop, the disk may run full)."""
    from edge import config

    cfg = config.load(config.example_path("sim")).with_all_simulated()
    return dataclasses.replace(
        cfg,
        rig={**cfg.rig, "record": record, "camera_store": camera_store,
             "min_free_mb": cfg.rig["min_free_mb"] if min_free_mb is None else min_free_mb},
        eeg={**cfg.eeg, "enabled": eeg}, hub={**cfg.hub, "enabled": hub},
        camera={**cfg.camera, "enabled": camera}, sim={**cfg.sim, **sim},
    )


def run_with_faults(duration_s: float, faults: Iterable[Fault] = (), *, cfg: Any = None,
                    record_dir: str | Path | None = None, sinks: Iterable[Any] = (),
                    sample_every_s: float = 0.25, processing: bool = True,
                    on_open: Callable[[Any], Any] | None = None,
                    at_end: Callable[[Any], Any] | None = None,
                    stall_s: float = 3.0) -> FaultRun:
    """Run the rig for ``duration_s`` with the real runtime and sinks, injecting ``faults``.

    The chain of sinks is the one ``mmme-edge run`` builds
    (:func:`edge.runtime.session.build_session`); ``sinks`` are extra probes fed after
    the keeper (they may read it); each may have a ``bind(rig, keeper)`` method, called
    before the run. Results go to a :class:`~edge.processing.LocalOutlet`, or to the
    broker when ``cfg`` enables [mqtt]. ``on_open(rig)`` runs once the rig is open,
    before it starts (set up faults scheduled in scenario time there); ``at_end(rig)``
    after the runtime stopped, before the rig closes (read the bench's truth there): its
    result is ``FaultRun.extra["at_end"]``.
    """
    from edge.processing import LocalOutlet
    from edge.rig import open_rig
    from edge.runtime import build_session, summarise
    from edge.service import Notifier, StreamProgress, Watchdog

    cfg = cfg if cfg is not None else sim_config()
    pending = sorted(faults, key=lambda f: f.at_s)
    rig = open_rig(cfg, duration_s=duration_s + 10.0)
    session = None
    try:
        if on_open is not None:
            on_open(rig)
        session = build_session(
            cfg, rig, record_dir=record_dir, record=record_dir is not None,
            outlet=None if cfg.mqtt["enabled"] else LocalOutlet(limit=5000),
            processing=processing, probes=sinks)
        tally, keeper, runtime = session.tally, session.keeper, session.runtime
        progress = StreamProgress(lambda: {n: t.received for n, t in tally.tallies.items()},
                                  rig.stream_names(), stall_s=stall_s)
        dog = Watchdog(Notifier(address=""), progress, interval_s=0.5)
        fault_times: dict[str, float] = {}
        timeline: list[Snapshot] = []
        if rig.bench is not None:
            # The hub emulator cannot encode a negative MCU time: START before scenario
            # t = 0 (bench t0_ns, LEAD_IN_S after the bench was built) kills its thread.
            time.sleep(max(rig.bench.t0_ns - monotonic_ns(), 0) / 1e9 + 0.05)
        t0 = time.monotonic()
        session.start()
        dog.start()
        stalled_ever = False
        try:
            next_snap = t0
            last_health: dict[str, Any] = {}  # previous figures, for this run's rates
            while (now := time.monotonic()) - t0 < duration_s:
                while pending and now - t0 >= pending[0].at_s:
                    f = pending.pop(0)
                    f.action(rig)
                    fault_times[f.name] = time.monotonic() - t0
                session.step(0.005)
                if now >= next_snap:
                    next_snap += sample_every_s
                    stalled_ever = stalled_ever or dog.stalled
                    timeline.append(_snapshot(now - t0, tally, rig, runtime, keeper,
                                              dog, session.health(last_health)))
        finally:
            dog.stop(None)
            session.stop()
        wall = time.monotonic() - t0
        end_result = at_end(rig) if at_end is not None else None
        summary = summarise(tally, rig, runtime, 0.0, wall, 0.0, keeper)
        errors = session.errors
        session.close()
        controls, proc_sink, outlet = session.controls, session.processing, session.outlet
        return FaultRun(
            duration_s=wall, fault_times=fault_times, timeline=timeline, summary=summary,
            counters={n: rig.counter_detail(n) for n in rig.stream_names()},
            clock=keeper.state(), outlet_counts=dict(getattr(outlet, "counts", {})),
            outlet_messages=list(getattr(outlet, "messages", [])),
            processing=dict(proc_sink.counters) if proc_sink is not None else {},
            errors=errors,
            watchdog={"pets": dog.pets, "ready": dog.ready_sent, "stalled": dog.stalled,
                      "stalled_ever": stalled_ever},
            recorder=controls.recorder_stats[-1] if controls.recorder_stats else None,
            extra={"tallies": {n: dataclasses.asdict(t) for n, t in tally.tallies.items()},
                   "queue_dropped": {n: q.dropped_weight for n, q in runtime.queues.items()},
                   "markers": len(tally.markers), "at_end": end_result,
                   "sinks": runtime.sink_report(),
                   "recordings": list(controls.closed_recordings)},
        )
    finally:
        if session is not None:
            session.close()  # once: a no-op after the close above
        else:
            rig.close()


def _snapshot(t_s: float, tally: Any, rig: Any, runtime: Any, keeper: Any, dog: Any,
              health: dict[str, Any] | None) -> Snapshot:
    received, dropped = {}, {}
    for name in rig.stream_names():
        t = tally.tallies.get(name)
        q = runtime.queues.get(name)
        received[name] = t.received if t is not None else 0
        gap = t.dropped if t is not None else 0
        dropped[name] = max(gap, rig.dropped(name) + (q.dropped_weight if q else 0))
    return Snapshot(
        t_s=t_s, received=received, dropped=dropped,
        counters={n: rig.counter_detail(n) for n in rig.stream_names()},
        hub_connected=rig.hub.connected if rig.hub is not None else None,
        watchdog_stalled=dog.stalled, watchdog_pets=dog.pets,
        clock={n: keeper.summary(n) for n in rig.stream_names()},
        health=health,
    )


# ---------------------------------------------------------------------- hub faults


@dataclass
class CorruptionLog:
    """Sequence numbers of the DATA frames the emulator damaged on the wire."""

    seqs: set[int] = field(default_factory=set)
    bytes_hit: int = 0


def corrupt_hub(hub_emu: Any, rate: float, log: CorruptionLog | None = None) -> CorruptionLog:
    """``hub_emu.corrupt(rate)``, with every damaged frame's sequence number logged.

    DATA frames go out in batches of equal-length frames, so a flipped byte at offset
    ``o`` of a batch belongs to frame ``o // len``.
    """
    log = log if log is not None else CorruptionLog()
    flen = hp.OVERHEAD + hp.data_payload_len(5)

    def logged(clean: bytes, damaged: bytes) -> None:
        a = np.frombuffer(clean, dtype=np.uint8)
        b = np.frombuffer(damaged, dtype=np.uint8)
        if a.size % flen == 0:
            frames = a.reshape(-1, flen)
            seq = frames[:, hp.HEADER_LEN:hp.HEADER_LEN + 4].copy().view("<u4").ravel()
            hit = np.unique(np.flatnonzero(a != b) // flen)
            log.seqs.update(int(s) for s in seq[hit])
            log.bytes_hit += int(np.count_nonzero(a != b))

    hub_emu.corrupt(rate, on_corrupted=logged)
    return log


def step_hub_clock(hub_emu: Any, seconds: float) -> int:
    """Step the hub MCU's clock by ``seconds`` (> 0) now; returns the step's host ns.

    ``HubEmulator.step_clock``: its microsecond timestamps jump while its sample pace
    carries on, and its truth table stays exact.
    """
    return int(hub_emu.step_clock(seconds))


# ---------------------------------------------------------------------- CPU starvation

_BUSY = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end:\n    pass\n"


@contextlib.contextmanager
def cpu_hogs(n: int = 2, max_s: float = 60.0) -> Iterator[list[subprocess.Popen]]:
    """``n`` busy-loop child processes (each ends by itself after ``max_s``); on exit
    they are killed by pid."""
    procs = [subprocess.Popen([sys.executable, "-c", _BUSY.format(s=max_s)])
             for _ in range(n)]
    try:
        yield procs
    finally:
        stop_hogs(procs)


def start_hogs(n: int = 2, max_s: float = 60.0) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", _BUSY.format(s=max_s)])
            for _ in range(n)]


def stop_hogs(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(5.0)


__all__ = ["CorruptionLog", "Fault", "FaultRun", "Snapshot", "SteppedCrystal", "corrupt_hub",
           "cpu_hogs", "run_with_faults", "sim_config", "start_hogs", "step_hub_clock",
           "stop_hogs"]
