"""A simulated device in a process of its own: the bridge's MCU, the camera's sensor.

The device is built in a spawned child from a picklable recipe; the parent waits until
it is built, or raises what went wrong as the OSError a missing device gives.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from edge.service import ignore_stop_signals

START_TIMEOUT_S = 30.0  # spawn + imports (numpy, scipy) on a loaded Pi


def spawn(serve: Callable[[Callable[[], Any], Connection], None], factory: Callable[[], Any],
          name: str) -> tuple[BaseProcess, Connection]:
    """Start ``serve(factory, conn)`` in a child; return once the device is built."""
    ctx = mp.get_context("spawn")  # no fork of a threaded parent
    conn, child = ctx.Pipe(duplex=True)
    proc = ctx.Process(target=serve, args=(factory, child), name=name, daemon=True)
    proc.start()
    child.close()
    msg = conn.recv() if conn.poll(START_TIMEOUT_S) else ("error", "did not start")
    if msg[0] != "ready":
        proc.kill()  # it ignores SIGTERM
        proc.join(2.0)
        conn.close()
        raise OSError(f"{name}: {msg[1]}")
    return proc, conn


def build(factory: Callable[[], Any], conn: Connection) -> Any | None:
    """In the child: the device, with "ready" sent; or None, with the error sent."""
    ignore_stop_signals()  # the rig stops its devices in order
    try:
        device = factory()
    except Exception as exc:  # the parent raises it as the device's open error
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return None
    conn.send(("ready",))
    return device


def stop(proc: BaseProcess, conn: Connection) -> None:
    """After the close message: wait for the child, end it if it hangs."""
    proc.join(2.0)
    if proc.is_alive():
        proc.kill()  # it ignores SIGTERM
        proc.join(2.0)
    conn.close()
