"""The engine: one acquisition thread per device, one dispatcher, the tally.

driver.poll / source.read  ->  DropQueue (bounded, counted)  ->  dispatcher  ->  sinks
(tally, recorder, clock, features, spotter, ...). Drivers are synchronous; this module
owns the threads. It knows nothing of simulation: ``edge.rig`` hands it devices.

Every sink call is guarded: a sink that raises is counted (:class:`SinkFailures`) and
the item still reaches every other sink, so one broken stage cannot stop the recorder
or the rig; after ``RESET_AFTER`` failures in a row the sink's ``reset()`` is called.
"""

from __future__ import annotations

import dataclasses
import gc
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from edge.queues import DropQueue
from sensors.blocks import Frame, Marker, SampleBlock

if TYPE_CHECKING:
    from edge.rig import Rig

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


def coalesce(blocks: list[SampleBlock]) -> list[SampleBlock]:
    """One stream's backlog as few blocks as it can be: each run of blocks whose sample
    indices follow on becomes one block. A sink's cost is mostly per call (small numpy
    calls), so a dispatcher that fell behind catches up in a few calls instead of
    hundreds, while the camera's shorter queue waits; a gap still starts a new block."""
    out: list[SampleBlock] = []
    run: list[SampleBlock] = []
    for b in blocks:
        if run and not (len(b) and len(run[-1]) and int(b.index[0]) == int(run[-1].index[-1]) + 1):
            out.append(_joined(run))
            run = []
        run.append(b)
    if run:
        out.append(_joined(run))
    return out


def _joined(run: list[SampleBlock]) -> SampleBlock:
    if len(run) == 1:
        return run[0]
    arrays = {f.name: np.concatenate([getattr(b, f.name) for b in run])
              for f in dataclasses.fields(SampleBlock) if f.name != "stream"}
    return SampleBlock(stream=run[0].stream, **arrays)


# A sink that failed this many items in a row gets its state reset (when it can).
RESET_AFTER = 50


@runtime_checkable
class Sink(Protocol):
    """What the dispatcher feeds: every block, frame and marker, in order, one thread."""

    def on_block(self, block: SampleBlock) -> None: ...
    def on_frame(self, frame: Frame) -> None: ...
    def on_marker(self, marker: Marker) -> None: ...


@runtime_checkable
class ResettableSink(Sink, Protocol):
    """A sink that can drop its state and start over after repeated failures."""

    def reset(self) -> None: ...


def sink_name(sink: object) -> str:
    """The name a sink's failures are counted under (``name`` attribute or class name)."""
    name = getattr(sink, "name", None)
    return name if isinstance(name, str) and name else type(sink).__name__


@dataclass
class SinkFailures:
    """One sink's failures: how many, the last error, how often its state was reset."""

    failures: int = 0
    in_a_row: int = 0
    resets: int = 0
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"failures": self.failures, "resets": self.resets,
                "last_error": self.last_error}


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

    def __init__(self, rig: Rig, sinks: list[Any], queue_blocks: int = 512,
                 queue_frames: int = 64, reset_after: int = RESET_AFTER) -> None:
        self.rig = rig
        self.sinks = sinks  # a list the controls may add to and remove from
        self.stop_event = threading.Event()
        self.errors: list[str] = []
        self.sink_failures: dict[str, SinkFailures] = {}
        self.reset_after = reset_after
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
            if not items:
                continue
            moved += len(items)
            if name == "camera":
                self.deliver("on_frame", items)
            elif name == "markers":
                self.deliver("on_marker", items)
            else:
                self.deliver("on_block", coalesce(items))
        if not moved:
            time.sleep(timeout_s)
        return moved

    def deliver(self, method: str, items: list[Any]) -> None:
        """Each item to every sink's ``method``, in order (the keeper first), each call
        guarded: an item reaches every sink even when one of them raises, so what was
        drained is never lost to another stage's bug."""
        calls = [(sink, getattr(sink, method)) for sink in self.sinks]
        for item in items:
            for sink, call in calls:
                try:
                    call(item)
                except Exception as exc:
                    self.note_failure(sink, exc)
                else:
                    if self.sink_failures:
                        self._ok(sink)

    def _ok(self, sink: object) -> None:
        f = self.sink_failures.get(sink_name(sink))
        if f is not None:
            f.in_a_row = 0

    def note_failure(self, sink: object, exc: Exception) -> None:
        """Count one failure of ``sink``; reset its state after ``reset_after`` in a row."""
        f = self.sink_failures.setdefault(sink_name(sink), SinkFailures())
        f.failures += 1
        f.in_a_row += 1
        f.last_error = f"{type(exc).__name__}: {exc}"[:300]
        if f.in_a_row >= self.reset_after:
            f.in_a_row = 0
            if isinstance(sink, ResettableSink):
                f.resets += 1
                try:
                    sink.reset()
                except Exception as reset_exc:  # counted, the rig carries on
                    f.last_error = (f"reset: {type(reset_exc).__name__}: {reset_exc}")[:300]

    def sink_report(self) -> dict[str, dict[str, Any]]:
        """Per failing sink: failures, resets, last error (for the summary and health)."""
        return {n: f.as_dict() for n, f in self.sink_failures.items() if f.failures}

    def stop(self) -> None:
        """Devices first, so the pumps collect their last samples; then drain every queue."""
        self.guard("stop devices", self.rig.stop)
        time.sleep(0.1)
        self.stop_event.set()
        for p in self._pumps:
            p.join(timeout=2.0)
        while self.dispatch(0.0):
            pass

    def guard(self, step: str, fn: Callable[[], Any]) -> Any:
        """Run one step of start-up or shutdown; a failure is noted and the next step runs."""
        try:
            return fn()
        except Exception as exc:
            self.errors.append(f"{step}: {type(exc).__name__}: {exc}")
            return None


__all__ = ["RESET_AFTER", "SWITCH_INTERVAL_S", "ResettableSink", "Runtime", "Sink",
           "SinkFailures", "StreamTally", "Tally", "freeze_startup_objects",
           "limit_native_pools", "sink_name"]
