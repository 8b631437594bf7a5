"""The serving plumbing every serial emulator shares: a real pseudo-terminal under a stable
symlink name (like a udev name), pulled and replugged like a USB cable, served by one
thread that answers what the host writes and sends what is due every ``send_period_s``.

A device subclass says only what is its own: :meth:`PtyDevice._on_bytes` (bytes from the
host), :meth:`PtyDevice._on_tick` (what the device makes by now) and
:meth:`PtyDevice._on_plug` (state a fresh link starts from). All three run under
``_lock``, as does everything that touches the fds (they are closed only under it).
"""

from __future__ import annotations

import contextlib
import os
import select
import tempfile
import threading
import time
import tty
from pathlib import Path
from typing import TypeVar

_D = TypeVar("_D", bound="PtyDevice")


class PtyDevice:
    """A device on the master side of a pty; the driver under test opens ``port``."""

    def __init__(self, send_period_s: float) -> None:
        self.send_period_s = send_period_s
        self._lock = threading.Lock()
        self._outbox = bytearray()  # bytes queued for the host, written as the pty takes them
        self._answering = True
        self._plugged = False
        self._master = self._slave = -1

    def _serve(self, prefix: str, name: str, thread_name: str) -> None:
        """Create the pty under ``<tmpdir>/<name>`` and start serving it (end of __init__)."""
        self._dir = tempfile.mkdtemp(prefix=prefix)
        self.port = str(Path(self._dir) / name)
        self._plug()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ hooks
    def _on_bytes(self, data: bytes) -> None:
        """Bytes the host wrote (only while answering)."""
        raise NotImplementedError

    def _on_tick(self) -> None:
        """Queue in ``_outbox`` what the device has made by now."""
        raise NotImplementedError

    def _on_plug(self) -> None:
        """A new link: no half-received command survives it."""

    # ------------------------------------------------------------ the cable
    def unplug(self) -> None:
        """Pull the cable: the pty goes away (reads fail with EIO), the name vanishes and
        what was queued for the host is lost. The device itself runs on."""
        with self._lock:
            self._plugged = False
            self._close_pty()
            self._unlink_port()
            self._outbox.clear()

    def replug(self) -> None:
        """A new pty appears under the same ``port`` name."""
        with self._lock:
            if not self._plugged:
                self._plug()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        with self._lock:
            self._close_pty()
            self._unlink_port()
        with contextlib.suppress(OSError):
            os.rmdir(self._dir)

    def __enter__(self: _D) -> _D:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline: a byte pipe like a USB serial port
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        tmp = self.port + ".new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.port)  # atomic: the name never points nowhere while plugged
        self._plugged = True
        self._on_plug()

    def _close_pty(self) -> None:
        for fd in (self._master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = -1

    def _unlink_port(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.port)

    # ------------------------------------------------------------ the device's loop
    def _run(self) -> None:
        next_send = time.monotonic()
        while not self._stop.is_set():
            master = self._master
            wait = max(next_send - time.monotonic(), 0.0)
            if master >= 0:
                try:
                    ready, _, _ = select.select([master], [], [], wait)
                except (OSError, ValueError):  # closed under us by unplug()
                    ready = []
                if ready:
                    self._receive(master)
            else:
                time.sleep(wait)
            if time.monotonic() >= next_send:
                next_send = max(next_send + self.send_period_s,
                                time.monotonic() - self.send_period_s)
                with self._lock:
                    self._on_tick()
                    self._flush()

    def _receive(self, master: int) -> None:
        with self._lock:  # fds are closed only under the lock: this one is still ours
            if master != self._master:  # unplugged meanwhile
                return
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO while no host has the slave open
                data = b""
            if data and self._answering:
                self._on_bytes(data)
                self._flush()
        if not data:
            time.sleep(0.001)  # the master polls readable while it has no reader

    def _flush(self) -> None:
        if not self._outbox or self._master < 0:
            return
        try:
            n = os.write(self._master, self._outbox)
        except BlockingIOError:
            return
        except OSError:  # nobody has the port open (EIO): bytes go nowhere, like a UART
            n = len(self._outbox)
        del self._outbox[:n]
