"""Run a sample driver in its own process.

The ADS1299 holds one frame and overwrites it at the next DRDY: at 1 kHz the reader
has under a millisecond, every millisecond. In the rig's main process that reader
competes for the GIL with the camera, the spotter, the recorder and MQTT, and loses
samples. So the EEG driver runs in a child process with its own interpreter, at
real-time priority where the system allows it (root or CAP_SYS_NICE), and ships its
blocks to the parent through a pipe. The parent sees an ordinary driver.

The child builds the driver itself from a picklable ``factory`` (SPI file descriptors
and simulators do not cross process boundaries).
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing as mp
import time
from collections.abc import Callable
from dataclasses import asdict
from multiprocessing.connection import Connection
from typing import Any

from edge.service import ignore_stop_signals
from edge.wakeup import set_realtime
from sensors.blocks import SampleBlock, StreamCounters, StreamInfo
from sensors.errors import DeviceError, DeviceTimeout

_ERRORS = {cls.__name__: cls for cls in DeviceError.__subclasses__()} | {
    "DeviceError": DeviceError}


def _child(factory: Callable[[], Any], conn: Connection, rt_priority: int | None) -> None:
    """The child's whole life: build, open, then poll until told to stop."""
    ignore_stop_signals()
    try:
        driver = factory()
        driver.open()
    except Exception as exc:
        conn.send(("error", type(exc).__name__, str(exc)))
        return
    sched = set_realtime(rt_priority)
    # Everything built so far lives for the whole run: keep the cyclic GC from walking it,
    # so a collection cannot stall the DRDY reader for milliseconds.
    gc.freeze()
    conn.send(("info", driver.info, sched))
    running = False
    next_report = 0.0
    try:
        while True:
            if conn.poll(0 if running else 0.1):
                cmd = conn.recv()
                if cmd == "start":
                    driver.start()
                    running = True
                elif cmd == "stop":
                    driver.stop()
                    conn.send(("blocks", driver.poll(0.0), asdict(driver.counters)))
                    running = False
                elif cmd == "close":
                    break
                elif isinstance(cmd, tuple) and cmd[0] == "fault":
                    _inject(driver, cmd[1], cmd[2])
            if running:
                blocks = driver.poll(0.02)
                if blocks:
                    conn.send(("blocks", blocks, asdict(driver.counters)))
                elif getattr(driver, "stalled", False) and time.monotonic() >= next_report:
                    # No data is coming: still ship the counters (e.g. drdy_timeouts).
                    next_report = time.monotonic() + 0.5
                    conn.send(("blocks", [], asdict(driver.counters)))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass
    finally:
        with contextlib.suppress(Exception):
            driver.close()
        with contextlib.suppress(Exception):
            conn.send(("closed", asdict(driver.counters)))


def _inject(driver: Any, method: str, args: tuple[Any, ...]) -> None:
    """HIL fault injection: call ``method`` on every emulated chip behind the driver's
    SPI buses (``hil.sim.ads1299.Ads1299Emulator``); real buses lack it and ignore it."""
    for bus in getattr(driver, "_spi", ()):
        fn = getattr(bus, method, None)
        if callable(fn):
            fn(*args)


class ProcessDriver:
    """A sample driver living in a child process; same lifecycle as the driver."""

    def __init__(self, factory: Callable[[], Any], name: str,
                 rt_priority: int | None = None, open_timeout_s: float = 30.0) -> None:
        self.name = name
        self._factory = factory
        self._rt = rt_priority
        self._open_timeout_s = open_timeout_s
        self.info: StreamInfo | None = None
        self.counters = StreamCounters()
        self.scheduling = ""
        self._proc: mp.process.BaseProcess | None = None
        self._conn: Connection | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def open(self) -> None:
        ctx = mp.get_context("spawn")  # no fork of a threaded parent
        parent, child = ctx.Pipe(duplex=True)
        self._proc = ctx.Process(target=_child, args=(self._factory, child, self._rt),
                                 name=f"acq-{self.name}", daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent
        if not parent.poll(self._open_timeout_s):
            self.close()
            raise DeviceTimeout(f"{self.name}: acquisition process did not start")
        try:
            msg = parent.recv()
        except (EOFError, OSError):
            self.close()
            raise DeviceError(f"{self.name}: acquisition process died while opening") from None
        if msg[0] == "error":
            self.close()
            raise _ERRORS.get(msg[1], DeviceError)(msg[2])
        _, self.info, self.scheduling = msg

    def start(self) -> None:
        self._send("start")

    def stop(self) -> None:
        self._send("stop")

    def poll(self, timeout_s: float) -> list[SampleBlock]:
        """Blocks the child has sent (waits up to ``timeout_s`` for the first)."""
        conn = self._conn
        if conn is None:
            time.sleep(timeout_s)
            return []
        out: list[SampleBlock] = []
        try:
            wait = timeout_s
            while conn.poll(wait):
                msg = conn.recv()
                if msg[0] == "blocks":
                    out.extend(msg[1])
                    self._update_counters(msg[2])
                elif msg[0] == "closed":
                    self._update_counters(msg[1])
                wait = 0.0
        except (EOFError, OSError):
            self.counters.errors += 1
            self._conn = None
        return out

    def inject(self, method: str, *args: Any) -> None:
        """HIL only: call ``method(*args)`` on the emulated chips in the child process
        (e.g. ``"stick_drdy"`` / ``"release_drdy"``); a no-op on real hardware."""
        self._send(("fault", method, args))

    def _update_counters(self, d: dict[str, Any]) -> None:
        self.counters = StreamCounters(**d)

    def _send(self, cmd: Any) -> None:
        if self._conn is not None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self._conn.send(cmd)

    def close(self) -> None:
        self._send("close")
        if self._proc is not None:
            self._proc.join(3.0)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(3.0)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
