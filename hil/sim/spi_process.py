"""An emulated SPI device in a process of its own, as the real one is a chip of its own.

:class:`SpiDeviceProcess` builds the emulator from a picklable recipe in a spawned child
and implements ``sensors.seams.SpiBus`` by sending each transfer over a pipe; the driver
in the rig's process is the same as on hardware. The 64-channel bench puts the EEG
bridge's MCU there: emulating eight chips costs a third of a core in small numpy calls,
which in the rig's process hold the GIL from the camera's reader (7 % of the frames lost
in a 60-s run). In its own process it is also off the rig's books, as the real MCU is.
Its fault hooks stay in the child, so fault tests use the in-process emulator.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from hil.sim import device_process

XFER_TIMEOUT_S = 5.0  # a live emulator answers in well under a millisecond


def _serve(factory: Callable[[], Any], conn: Connection) -> None:
    device = device_process.build(factory, conn)
    if device is None:
        return
    try:
        while True:
            msg = conn.recv()
            if msg[0] != "xfer":
                break
            try:
                conn.send(("ok", device.xfer(msg[1])))
            except Exception as exc:  # the driver sees it as the bus failing
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    except (EOFError, OSError):  # the rig went away: so does the device
        pass
    finally:
        device.close()


class SpiDeviceProcess:
    """``sensors.seams.SpiBus`` whose device is ``factory()`` in a child process."""

    def __init__(self, factory: Callable[[], Any], name: str = "sim-spi") -> None:
        self._proc, self._conn = device_process.spawn(_serve, factory, name)
        self._lock = threading.Lock()  # one transfer at a time, as on one chip select

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def xfer(self, data: bytes) -> bytes:
        with self._lock:
            try:
                self._conn.send(("xfer", bytes(data)))
            except (OSError, ValueError):
                raise OSError(f"{self._proc.name}: the device process is gone") from None
            msg = self._recv(XFER_TIMEOUT_S, "did not answer")
        if msg[0] == "error":
            raise OSError(f"{self._proc.name}: {msg[1]}")
        return msg[1]

    def _recv(self, timeout_s: float, what: str) -> tuple[Any, ...]:
        try:
            if self._conn.poll(timeout_s):
                return self._conn.recv()
        except (EOFError, OSError, ValueError):
            pass
        raise OSError(f"{self._proc.name}: the device process {what}")

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(("close",))
            device_process.stop(self._proc, self._conn)
