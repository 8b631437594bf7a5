"""Driver for the peripheral sensor hub (PPG, RSP, SKT, EDA, ECG) over serial.

Speaks docs/hub-protocol.md through a pyserial port (``serial.serial_for_url``: a
device path, a udev name, or a pyserial URL). ``open()`` raises a clear
:class:`sensors.errors.DeviceError` when the hub is absent or answers wrongly; after
that, ``poll()`` never raises for I/O errors: a lost port sets ``connected`` False,
is counted, and is reopened every ``reconnect_interval_s`` under the same path, then
re-identified and, if it was streaming, restarted.

``host_t_ns`` of a sample is the arrival time of the read that completed its frame
(every sample of one read shares it); ``edge.clock.model`` maps ``device_t`` (MCU us) to host
time from the sync pulses in ``trigger`` bit 0.

Threads: ``poll`` runs on the stream's pump thread while ``start``/``stop`` come from the
rig's; one lock serialises them, since the parser and the reply list are one reader's
state (two readers would parse the same bytes twice).
"""

from __future__ import annotations

import contextlib
import select
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import serial

from sensors import hub_protocol as hp
from sensors.blocks import STATUS_HUB, SampleBlock, StreamCounters, StreamInfo, monotonic_ns
from sensors.errors import DeviceError, DeviceTimeout, WrongDevice
from sensors.serial_link import IO_ERRORS, close_port, open_port, reconnect_due

_READ_CHUNK = 65536


@dataclass(frozen=True)
class HubSettings:
    port: str  # "/dev/serial/by-id/...", "/dev/ttyACM0" or a pyserial URL
    baud: int = 921_600  # ignored by USB CDC; 43 kB/s at 1 kHz needs >= 460 800 on a UART
    fs_hz: int = 1000  # 250..2000
    reply_timeout_s: float = 0.5  # per command (IDENTIFY is sent twice within it)
    reconnect_interval_s: float = 0.5
    max_pending_samples: int = 60_000  # samples held between polls before the oldest go
    read_max_bytes: int = 1 << 18  # per poll: bounds the time one poll spends reading


class Hub:
    """The hub driver: open, start, poll, stop, close; ``info``, ``counters``, ``connected``."""

    def __init__(self, settings: HubSettings) -> None:
        self.settings = settings
        self.info: StreamInfo | None = None
        self.identity: hp.HubIdentity | None = None
        self.counters = StreamCounters()
        self.connected = False
        self._port: serial.SerialBase | None = None
        self._parser = hp.HubParser(n_channels=None)
        self._pending: deque[SampleBlock] = deque()
        self._pending_n = 0
        self._replies: list[hp.Message] = []
        self._cmd_seq = 0
        self._want_streaming = False
        self._next_attempt = 0.0
        self._host_lost = 0
        self._scale = np.zeros(0)
        self._offset = np.zeros(0)
        self._rx_bytes = 0
        self._lock = threading.RLock()

    # ------------------------------------------------------------ lifecycle
    def open(self) -> None:
        """Open the port, identify the hub, set its rate; raise DeviceError on failure."""
        with self._lock:
            self._open_port()
            try:
                self._identify()
                self._configure()
            except DeviceError:
                self._close_port()
                raise
            self.connected = True

    def start(self) -> None:
        with self._lock:
            self._want_streaming = True
            self._command(hp.START)

    def stop(self) -> None:
        with self._lock:
            self._want_streaming = False
            if self.connected:
                with contextlib.suppress(DeviceError):
                    self._command(hp.STOP)

    def close(self) -> None:
        with self._lock:
            if self._want_streaming and self.connected:
                self.stop()
            self._close_port()
            self.connected = False

    def poll(self, timeout_s: float) -> list[SampleBlock]:
        """Samples received since the last poll, waiting up to ``timeout_s`` for the first."""
        with self._lock:
            if not self.connected:
                self._reconnect_when_due(timeout_s)
                if self.connected:
                    self._read(0.0)
            else:
                # _read drains the port; with samples already pending, do not wait.
                self._read(0.0 if self._pending else timeout_s)
            out = list(self._pending)
            self._pending.clear()
            self._pending_n = 0
            return out

    # ------------------------------------------------------------ port
    def _open_port(self) -> None:
        s = self.settings
        self._port = open_port("hub", s.port, s.baud, s.reply_timeout_s)
        with contextlib.suppress(*IO_ERRORS):
            self._port.reset_input_buffer()
        self._parser.clear_buffer()
        self._rx_bytes = 0

    def _close_port(self) -> None:
        close_port(self._port)
        self._port = None

    def _lost(self) -> None:
        """The port failed under us: count it, close it, retry later."""
        self.connected = False
        self._close_port()
        self._bump("disconnects")
        self._next_attempt = time.monotonic() + self.settings.reconnect_interval_s

    def _reconnect_when_due(self, timeout_s: float) -> None:
        if not reconnect_due(self._next_attempt, timeout_s):
            return
        self._next_attempt = time.monotonic() + self.settings.reconnect_interval_s
        try:
            self._open_port()
            self._identify()
            self._configure()
            self.connected = True
            if self._want_streaming:
                self._command(hp.START)
        except DeviceError:
            self.connected = False
            self._close_port()
            self._bump("reconnect_failures")
            return
        self._bump("reconnects")

    # ------------------------------------------------------------ reading
    def _read(self, timeout_s: float) -> None:
        """Read what the port has (waiting up to timeout_s for the first byte) and parse it."""
        port = self._port
        if port is None:
            return
        try:
            if timeout_s > 0:
                self._wait_readable(port, timeout_s)  # returns at once when bytes wait
            total = 0
            while total < self.settings.read_max_bytes:
                data = port.read(_READ_CHUNK)
                if not data:
                    break
                total += len(data)
                self._ingest(data, monotonic_ns())
                if len(data) < _READ_CHUNK:
                    break  # the port had no more: a further read would come back empty
        except IO_ERRORS:
            self._lost()

    @staticmethod
    def _wait_readable(port: serial.SerialBase, timeout_s: float) -> None:
        try:
            select.select([port.fileno()], [], [], timeout_s)
        except (AttributeError, NotImplementedError, OSError):  # URL handlers without an fd
            deadline = time.monotonic() + timeout_s
            while not port.in_waiting and time.monotonic() < deadline:
                time.sleep(0.002)

    def _ingest(self, data: bytes, host_ns: int) -> None:
        self._rx_bytes += len(data)
        batch = self._parser.feed(data)
        self._replies.extend(batch.messages)
        self._sync_counters()
        if len(batch) == 0 or self.info is None:
            return
        raw = batch.raw
        n = raw.shape[0]
        values = raw * self._scale
        values += self._offset
        host_t = np.empty(n, dtype=np.int64)
        host_t.fill(host_ns)
        block = SampleBlock(
            stream="hub",
            index=batch.seq,
            device_t=batch.t_us,
            host_t_ns=host_t,
            raw=raw,
            values=values,
            trigger=batch.trigger,
            status=batch.status.astype(np.uint32),
        )
        self.counters.samples += n
        self._pending.append(block)
        self._pending_n += n
        while self._pending_n > self.settings.max_pending_samples and len(self._pending) > 1:
            old = self._pending.popleft()  # the caller is not polling: bounded, counted
            self._pending_n -= len(old)
            self._host_lost += len(old)
            self._sync_counters()

    def _sync_counters(self) -> None:
        p = self._parser.counters
        c = self.counters
        c.dropped = p.samples_lost + self._host_lost
        c.errors = p.crc_errors + p.oversize + p.undersize
        c.resyncs = p.resyncs
        c.extra.update(
            crc_errors=p.crc_errors, oversize=p.oversize, undersize=p.undersize,
            bytes_skipped=p.bytes_skipped, seq_gaps=p.seq_gaps, host_overflow=self._host_lost,
            seq_restarts=p.seq_restarts,
        )

    def _bump(self, key: str) -> None:
        self.counters.extra[key] = self.counters.extra.get(key, 0) + 1

    # ------------------------------------------------------------ commands
    def _send(self, ftype: int, rate_hz: int | None = None) -> int:
        self._cmd_seq = (self._cmd_seq + 1) & 0xFFFF
        frame = hp.encode_command(ftype, self._cmd_seq, rate_hz)
        if self._port is None:
            raise DeviceTimeout(f"hub at {self.settings.port!r}: port is not open")
        try:
            self._port.write(frame)
        except IO_ERRORS as exc:
            raise DeviceTimeout(f"hub at {self.settings.port!r}: write failed: {exc}") from exc
        return self._cmd_seq

    def _await(self, cmd_seq: int, kinds: tuple[int, ...], timeout_s: float) -> hp.Message | None:
        deadline = time.monotonic() + timeout_s
        while True:
            for i, m in enumerate(self._replies):
                if m.ftype in kinds and int.from_bytes(m.payload[:2], "little") == cmd_seq:
                    del self._replies[: i + 1]
                    return m
            left = deadline - time.monotonic()
            if left <= 0 or self._port is None:
                return None
            before = self._port
            self._read(min(left, 0.05))
            if self._port is not before:
                raise DeviceTimeout(f"hub at {self.settings.port!r}: port lost during command")

    def _command(self, ftype: int, rate_hz: int | None = None) -> hp.Message:
        name = hp.TYPE_NAMES[ftype]
        seq = self._send(ftype, rate_hz)
        reply = self._await(seq, (hp.ACK, hp.NAK), self.settings.reply_timeout_s)
        if reply is None:
            raise DeviceTimeout(
                f"hub at {self.settings.port!r}: no ACK to {name} within "
                f"{self.settings.reply_timeout_s} s"
            )
        if reply.ftype == hp.NAK:
            code = reply.payload[3]
            raise DeviceError(f"hub at {self.settings.port!r}: {name} refused (NAK code {code})")
        return reply

    def _identify(self) -> None:
        """IDENTIFY (sent twice within the timeout) and check the reply; build ``info``."""
        t = self.settings.reply_timeout_s
        reply = None
        for _ in range(2):
            seq = self._send(hp.IDENTIFY)
            reply = self._await(seq, (hp.INFO,), t / 2)
            if reply is not None:
                break
        port = self.settings.port
        if reply is None:
            if self._rx_bytes:
                raise WrongDevice(
                    f"hub at {port!r}: {self._rx_bytes} bytes but no INFO reply to IDENTIFY "
                    f"within {t} s: not a hub, or wrong baud ({self.settings.baud})?"
                )
            raise DeviceTimeout(f"hub at {port!r}: no reply to IDENTIFY within {t} s")
        if reply.version != hp.PROTOCOL_VERSION:
            raise WrongDevice(
                f"hub at {port!r} speaks hub protocol v{reply.version}; "
                f"this driver speaks v{hp.PROTOCOL_VERSION}"
            )
        try:
            _, ident = hp.decode_info(reply.payload)
        except ValueError as exc:
            raise WrongDevice(f"hub at {port!r}: unreadable INFO reply: {exc}") from exc
        if ident.magic != hp.MAGIC:
            raise WrongDevice(
                f"device at {port!r} identifies as {ident.magic!r}, not a hub ({hp.MAGIC!r})"
            )
        if ident.protocol_version != hp.PROTOCOL_VERSION or not ident.channels:
            raise WrongDevice(
                f"hub at {port!r}: INFO declares protocol v{ident.protocol_version} with "
                f"{len(ident.channels)} channels; this driver speaks v{hp.PROTOCOL_VERSION}"
            )
        if self.identity is not None and ident.boot_id != self.identity.boot_id:
            self._parser.device_restarted()  # its counter restarted: loss there is unknowable
            self._bump("device_restarts")
        self.identity = ident
        self._parser.set_channels(len(ident.channels))
        self._scale = np.asarray(ident.scale, dtype=np.float64)
        self._offset = np.asarray(ident.offset, dtype=np.float64)

    def _configure(self) -> None:
        ident = self.identity
        assert ident is not None
        fs = int(self.settings.fs_hz)
        if not ident.fs_min_hz <= fs <= ident.fs_max_hz:
            raise WrongDevice(
                f"hub at {self.settings.port!r}: fs_hz {fs} outside its range "
                f"{ident.fs_min_hz}..{ident.fs_max_hz}"
            )
        if ident.fs_hz != fs:
            if ident.streaming:
                self._command(hp.STOP)
            self._command(hp.SET_RATE, fs)
        self.info = StreamInfo(
            name="hub", fs_hz=float(fs), channels=ident.channels, units=ident.units,
            scale=ident.scale, offset=ident.offset, device_time_unit="us",
            status_layout=STATUS_HUB,
        )
