"""What the ``cmd`` topic can do to a running rig, carried out on the dispatcher thread.

The MQTT thread calls :meth:`Controls.handle`; the action is queued and the dispatcher
runs it between two dispatches (:meth:`apply_pending`), so sinks are only ever touched
from one thread. The caller waits for the result (bounded) to put it in the ack.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge.mqtt.commands import CommandError
from sensors.blocks import Marker, monotonic_ns

ACTION_TIMEOUT_S = 3.0


@dataclass
class _Action:
    cmd: str
    args: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] | None = None
    error: str | None = None


class Controls:
    """Recording on/off, session and subject, software markers."""

    def __init__(self, sinks: list[Any], open_recording: Callable[[str, str], Any],
                 recording: Any | None = None, on_state: Callable[..., None] | None = None,
                 session: str = "ses01", subject: str = "sub01",
                 deliver: Callable[[str, list[Any]], None] | None = None) -> None:
        self._sinks = sinks
        # How a software marker reaches the sinks: the runtime's guarded fan-out, when given.
        self._deliver = deliver
        self._open_recording = open_recording
        self.recording = recording
        self.session, self.subject = session, subject
        self._on_state = on_state or (lambda **_: None)
        self._queue: queue.Queue[_Action] = queue.Queue(maxsize=32)
        self.closed_recordings: list[str] = []
        self.recorder_counters: list[dict[str, Any]] = []  # per closed recording
        self.recorder_stats: list[dict[str, Any]] = []  # Recorder.close() per recording

    # -- MQTT thread -----------------------------------------------------------------------
    def handle(self, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        action = _Action(cmd, args)
        try:
            self._queue.put_nowait(action)
        except queue.Full:
            raise CommandError("busy: too many commands waiting") from None
        if not action.done.wait(ACTION_TIMEOUT_S):
            raise CommandError("the rig did not carry out the command in time")
        if action.error is not None:
            raise CommandError(action.error)
        return action.result or {}

    # -- dispatcher thread -----------------------------------------------------------------
    def handle_now(self, cmd: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """Carry out a command on the calling (dispatcher) thread, e.g. at start and stop."""
        return getattr(self, f"_do_{cmd}")(args or {})

    def apply_pending(self) -> None:
        while True:
            try:
                action = self._queue.get_nowait()
            except queue.Empty:
                return
            try:
                action.result = getattr(self, f"_do_{action.cmd}")(action.args)
            except CommandError as exc:
                action.error = str(exc)
            except Exception as exc:  # the ack says what broke; the rig carries on
                action.error = f"{type(exc).__name__}: {exc}"
            action.done.set()

    def _do_start_recording(self, _args: dict[str, Any]) -> dict[str, Any]:
        if self.recording is not None:
            raise CommandError(f"already recording to {Path(self.recording.path).name}")
        self.recording = self._open_recording(self.session, self.subject)
        self._sinks.append(self.recording)
        self._on_state(recording=True)
        return {"recording": True, "file": Path(self.recording.path).name}

    def _do_stop_recording(self, _args: dict[str, Any]) -> dict[str, Any]:
        if self.recording is None:
            raise CommandError("not recording")
        rec, self.recording = self.recording, None
        self._sinks.remove(rec)
        self.recorder_stats.append(rec.close())
        self.closed_recordings.append(str(rec.path))
        self.recorder_counters.append(asdict(rec.recorder.counters))
        self._on_state(recording=False)
        return {"recording": False, "file": Path(rec.path).name}

    def _do_set_session(self, args: dict[str, Any]) -> dict[str, Any]:
        self.session, self.subject = str(args["session"]), str(args["subject"])
        self._on_state(session=self.session, subject=self.subject)
        return {"session": self.session, "subject": self.subject,
                "applies_to": "the next recording" if self.recording else "recordings"}

    def _do_insert_marker(self, args: dict[str, Any]) -> dict[str, Any]:
        marker = Marker(int(args["code"]), monotonic_ns())
        if self._deliver is not None:
            self._deliver("on_marker", [marker])
        else:
            for sink in self._sinks:
                sink.on_marker(marker)
        return {"code": marker.code, "t_ns": marker.t_ns}
