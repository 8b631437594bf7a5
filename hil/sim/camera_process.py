"""The simulated camera's sensor in a process of its own, as a real sensor is hardware.

:class:`CameraProcess` is a ``sensors.seams.FrameDriver``: a :class:`~hil.sim.camera.SimCamera`
built from a picklable recipe renders in a spawned child at the sensor's pace and sends
each frame over a pipe. In the rig's process, rendering 150 to 200 frames a second holds
the GIL from the rig's own threads (a fifth of a core at 320x240, more at 640x480), and
a reader that falls behind has to render every frame it catches up on. In its own
process a late reader only finds frames waiting, as with picamera2; a reader late by
more than the sensor's ring still loses frames, counted there as ``overrun``.
Its fault hooks stay in the child, so fault tests use the in-process camera.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from hil.sim import device_process
from sensors.blocks import Frame, StreamCounters

POLL_S = 0.02  # how often the child looks for a command while no frame is due


def _serve(factory: Callable[[], Any], conn: Connection) -> None:
    cam = device_process.build(factory, conn)
    if cam is None:
        return
    running = False
    try:
        while True:
            if conn.poll(0 if running else None):
                msg = conn.recv()
                if msg[0] == "start":
                    cam.t0_ns = msg[1] if msg[1] is not None else cam.t0_ns
                    cam.start()
                    running = True
                elif msg[0] == "stop":
                    cam.stop()
                    running = False
                    conn.send(("stopped", _counts(cam.counters)))
                else:
                    break
                continue
            frame = cam.read(POLL_S)
            if frame is not None:  # blocks while the pipe is full: a late reader's cost
                conn.send(("frame", frame, _counts(cam.counters)))
    except (EOFError, OSError):  # the rig went away: so does the sensor
        pass
    finally:
        cam.close()


def _counts(c: StreamCounters) -> tuple[int, dict[str, int]]:
    return c.dropped, dict(c.extra)


class CameraProcess:
    """``FrameDriver`` whose sensor is ``factory()`` (a SimCamera) in a child process."""

    def __init__(self, factory: Callable[[], Any], t0_ns: int | None = None,
                 name: str = "sim-camera") -> None:
        self.t0_ns = t0_ns  # the scenario's zero; a replay sets it again before start
        self.counters = StreamCounters()
        self.counters.extra.update({"overrun": 0, "sensor_drop": 0})
        self._proc, self._conn = device_process.spawn(_serve, factory, name)
        self._reading = threading.Lock()  # the pump reads while stop() drains: one at a time

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def start(self) -> None:
        self._send(("start", self.t0_ns))

    def stop(self) -> None:
        """Stop the sensor. Frames still in the pipe, and frames the sensor overwrote after
        the reader's last read, are not counted: the run was over for them, as for the
        in-process camera, which nobody reads once the pumps have stopped."""
        if not self._send(("stop",)):
            return
        while (msg := self._recv(2.0)) is not None and msg[0] != "stopped":
            pass

    def read(self, timeout_s: float) -> Frame | None:
        msg = self._recv(max(timeout_s, 0.0))
        if msg is None or msg[0] != "frame":
            return None
        self._take_counts(msg[2])
        self.counters.samples += 1
        return msg[1]

    def close(self) -> None:
        self._send(("close",))
        device_process.stop(self._proc, self._conn)

    def _take_counts(self, counts: tuple[int, dict[str, int]]) -> None:
        self.counters.dropped = counts[0]
        self.counters.extra.update(counts[1])

    def _send(self, msg: tuple[Any, ...]) -> bool:
        try:
            self._conn.send(msg)
        except (OSError, ValueError):  # the process is gone (or closed): nothing to tell it
            return False
        return True

    def _recv(self, timeout_s: float) -> tuple[Any, ...] | None:
        with self._reading, contextlib.suppress(EOFError, OSError, ValueError):
            if self._conn.poll(timeout_s):
                return self._conn.recv()
        return None
