"""Running under systemd (Type=notify, WatchdogSec=): sd_notify without a dependency.

systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket) and, with
WatchdogSec=, ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``). We send datagrams of
``KEY=VALUE`` lines: ``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ``STOPPING=1``. Outside
systemd (no NOTIFY_SOCKET) every call is a no-op, so the same code runs from a shell.

:class:`StopSignals` turns ``systemctl stop`` (SIGTERM) and Ctrl-C (SIGINT) into a request
the run loop sees between two dispatch steps, so the recording is finished and nothing
drained is dropped; Python's default would end the process mid-write. Child processes
(the EEG acquisition, simulated devices) call :func:`ignore_stop_signals`: systemd signals
the whole control group at once, and the parent stops them in order instead.

The :class:`Watchdog` pets only while every stream flows: a stalled driver then stops
the petting, and systemd kills and restarts the service (Restart=on-failure). READY=1 is
sent only once every stream has flowed, so ``systemctl start`` waits for real data.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from types import FrameType, TracebackType

log = logging.getLogger(__name__)

DEFAULT_CHECK_S = 1.0  # how often flowing() is asked when systemd set no watchdog


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """While entered (main thread only): the first SIGTERM or SIGINT sets
    :attr:`requested`; a second one raises KeyboardInterrupt, for a stop that hangs."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # else Python refuses
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum


def ignore_stop_signals() -> None:
    """In a child process: leave stopping to the parent, which ends it over its pipe (and
    a child whose parent died ends on the pipe's EOF)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class Notifier:
    """sd_notify over the NOTIFY_SOCKET datagram socket; never raises."""

    def __init__(self, address: str | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = address if address is not None else env.get("NOTIFY_SOCKET", "")
        self.sent = 0
        self.last_error = ""
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields in one datagram; False when disabled or failed."""
        if not self.enabled:
            return False
        data = "\n".join(fields).encode()
        # '@' marks an abstract socket: its real name starts with a NUL byte.
        addr = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._sock.setblocking(False)  # never stall a stream for systemd
                self._sock.sendto(data, addr)
            except OSError as exc:
                self.last_error = f"sd_notify to {self.address}: {exc}"
                return False
            self.sent += 1
            return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    """Half of WATCHDOG_USEC (as sd_watchdog_enabled advises), or None when systemd
    set no watchdog for this process."""
    env = os.environ if env is None else env
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None  # meant for another process (e.g. our parent)
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


class Watchdog:
    """Sends READY=1 once ``all_streams_flowing()`` first holds, then WATCHDOG=1 every
    interval, but only while it still holds. A thread of its own; start()/stop()."""

    def __init__(self, notifier: Notifier, all_streams_flowing: Callable[[], bool],
                 interval_s: float | None = None, describe: Callable[[], str] | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.notifier = notifier
        self.flowing = all_streams_flowing
        self.interval_s = interval_s if interval_s is not None else watchdog_interval_s(env)
        self.describe = describe
        self.checks = 0  # how many times flowing() was asked (tests wait on this)
        self.pets = 0
        self.ready_sent = False
        self.stalled = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stop(self, status: str | None = "stopping") -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        self.notifier.stopping(status)

    def _check(self) -> bool:
        try:
            return bool(self.flowing())
        except Exception as exc:  # a broken check must read as "not flowing", not kill us
            log.warning("all_streams_flowing raised %s: %s", type(exc).__name__, exc)
            return False
        finally:
            self.checks += 1

    def _run(self) -> None:
        # Ask often enough to announce readiness promptly, pet at the systemd interval.
        period_s = min(self.interval_s or DEFAULT_CHECK_S, 0.25)
        last_pet_ns = 0
        while not self._stop.is_set():
            flowing = self._check()
            now_ns = time.monotonic_ns()
            if flowing and not self.ready_sent:
                self.notifier.ready(self._text("running"))
                self.ready_sent = True
            if flowing and self.stalled:
                self.stalled = False
                self.notifier.status(self._text("running again"))
            if not flowing and self.ready_sent and not self.stalled:
                self.stalled = True  # stop petting: systemd restarts us at WatchdogSec
                self.notifier.status(self._text("stalled: a stream stopped flowing"))
            due = self.interval_s is not None and (
                now_ns - last_pet_ns >= int(self.interval_s * 1e9))
            if flowing and due:
                self.notifier.watchdog()
                self.pets += 1
                last_pet_ns = now_ns
            self._stop.wait(period_s)

    def _text(self, fallback: str) -> str:
        if self.describe is None:
            return fallback
        try:
            return self.describe()
        except Exception:
            return fallback


class StreamProgress:
    """An ``all_streams_flowing`` for the runtime: True while every named stream's
    counter advanced within the last ``stall_s`` (host time), e.g. received samples."""

    def __init__(self, counts: Callable[[], Mapping[str, int]], streams: Iterable[str],
                 stall_s: float = 3.0) -> None:
        self.counts = counts
        self.streams = list(streams)
        self.stall_ns = int(stall_s * 1e9)
        self._last: dict[str, tuple[int, int]] = {}  # stream -> (count, changed_ns)

    def __call__(self) -> bool:
        now_ns = time.monotonic_ns()
        counts = self.counts()
        flowing = True
        for name in self.streams:
            n = int(counts.get(name, 0))
            prev = self._last.get(name)
            if prev is None or n != prev[0]:
                self._last[name] = (n, now_ns)
            count, changed_ns = self._last[name]
            if count == 0 or now_ns - changed_ns > self.stall_ns:
                flowing = False
        return flowing

    def stalled(self) -> list[str]:
        """Names of the streams that are not flowing as of the last call."""
        now_ns = time.monotonic_ns()
        return [n for n in self.streams
                if n not in self._last or self._last[n][0] == 0
                or now_ns - self._last[n][1] > self.stall_ns]


__all__ = ["Notifier", "StreamProgress", "Watchdog", "watchdog_interval_s"]
