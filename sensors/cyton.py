"""OpenBCI Cyton (8 channels) and Cyton + Daisy (16 channels) over serial.

The board is an ADS1299 (two with the Daisy) behind a PIC32 that buffers and sends
every sample itself, over its RFduino radio and the USB dongle's FTDI serial port
(115200 baud 8N1). The host reads a byte stream: no DRDY deadline, nothing to lose on
a busy host as long as the serial buffers hold (seconds at 8 kB/s).

Protocol (OpenBCI "Cyton Data Format" and "Cyton SDK" pages; the command replies are
firmware v3.x's, older firmware is untested):

- Streaming packets of 33 bytes: ``0xA0``, an 8-bit sample number, 8 x 24-bit two's
  complement MSB first, 6 aux bytes, a footer ``0xCX``. Footer ``0xC0``: aux are the
  accelerometer's X, Y, Z as int16 big-endian (0.002 / 16 g per count); ``0xC1``: raw
  aux, which the board's digital read mode (``/3``) fills with the pins D11, D12, D13,
  D17, D18, one byte each. ``0xC2``-``0xC6`` are user-defined or time-stamped variants:
  the EEG is read the same, the aux bytes are not used.
- Counts to microvolts: ``4.5 V / gain / (2^23 - 1)`` per count (default gain 24).
- With the Daisy, packets still come at the board rate, alternating: odd sample numbers
  carry the board's 8 channels, even ones the Daisy's, each the average of the chip's
  current and previous sample. The driver pairs an odd packet with the next even one
  into one 16-channel sample, so the 16-channel stream runs at half the board rate
  (125 Hz at the dongle's 250 Hz). An odd packet whose even partner was lost (or the
  other way round) is a lost 16-channel sample.
- Commands are ASCII: ``v`` soft reset (answers with the board's text, ending ``$$$``),
  ``b`` start, ``s`` stop, ``C`` / ``c`` 16 / 8 channels (the reply ends with the count
  before ``$$$``), ``~N`` sample rate, ``/3`` digital read mode, ``x<ch><pd><gain><input>
  <bias><srb2><srb1>X`` channel settings, ``-`` all inputs on the 1x slow test signal.

Sync: the trigger line's sync pulse goes to the board's D11 pin; in digital read mode it
arrives in aux byte 0, and ``SampleBlock.trigger`` bit 0 = D11 (bits 1-4: D12, D13, D17,
D18). With the Daisy the trigger is the odd (board) packet's.

Losses: the 8-bit sample number is the only sequence the board sends. Every gap in it is
counted (``extra["dropped_packets"]``). A gap of 256 packets or more wraps the counter
and is not visible in it: the driver bounds it with host arrival time, from one drained
read to the next (the newest packet of a drained read is fresh; ``(t - t_prev) * fs``
packets were sent in between): whole wraps that time demands are added
(``extra["wraps_inferred"]``). That bound fails when the host reads nothing for the
whole of such a gap AND the board stops sending (both on one side of the gap): then a
loss of a multiple of 256 packets is unknowable. The packets have no checksum: a bad
header or footer is seen (bytes skipped, resync on the next ``0xA0 .. 0xCX``), a flipped
bit inside the channel data is not. A sample number out of sequence between two
packets that agree with each other is one bad byte, not 255 lost packets
(``extra["bad_counter"]``, the packet is discarded).

Why by hand and not on BrainFlow (which supports the Cyton): it hands over decoded rows
from its own native reader thread, stamped in Unix time; the rig's contract is
CLOCK_MONOTONIC arrival times and the driver's own loss and bad-byte counters, and the
33-byte format is a short numpy parser.
"""

from __future__ import annotations

import contextlib
import re
import select
import threading
import time
from dataclasses import dataclass

import numpy as np
import serial

from sensors.blocks import SampleBlock, StreamCounters, StreamInfo, monotonic_ns
from sensors.errors import DeviceError, DeviceTimeout, WrongDevice
from sensors.serial_link import IO_ERRORS, close_port, open_port, reconnect_due

HEADER = 0xA0
PACKET_BYTES = 33
FOOTER_ACCEL = 0xC0
FOOTER_RAW_AUX = 0xC1
CHANNELS_PER_CHIP = 8
VREF_V = 4.5
ACCEL_G_PER_COUNT = 0.002 / 16
GAIN_CODES = {1: 0, 2: 1, 4: 2, 6: 3, 8: 4, 12: 5, 24: 6}
INPUT_CODES = {"normal": 0, "shorted": 1, "test": 5}
RATE_CODES = {16000: 0, 8000: 1, 4000: 2, 2000: 3, 1000: 4, 500: 5, 250: 6}
CHANNEL_KEYS = "12345678QWERTYUI"  # channel 1..8 on the board, 9..16 on the Daisy
EOT = b"$$$"
DIGITAL_PINS = ("D11", "D12", "D13", "D17", "D18")  # aux bytes 0..4 in digital mode
_READ_CHUNK = 65536


def uv_per_count(gain: int, vref_v: float = VREF_V) -> float:
    """Microvolts per count: VREF / gain / (2^23 - 1)."""
    return vref_v / gain / (2**23 - 1) * 1e6


def channel_command(channel: int, gain: int, inputs: str, bias: bool, srb1: bool,
                    power_down: bool = False) -> bytes:
    """``x<ch><pd><gain><input><bias><srb2><srb1>X`` for channel 1..16. With SRB1 all N
    inputs share the reference (SRB1 on, SRB2 off); else each channel's P input is
    against SRB2, the board's default."""
    return b"x%s%d%d%d%d%d%dX" % (
        CHANNEL_KEYS[channel - 1].encode(), int(power_down), GAIN_CODES[gain],
        INPUT_CODES[inputs], int(bias), int(not srb1), int(srb1))


@dataclass(frozen=True)
class Packets:
    """Parsed packets, in arrival order."""

    counter: np.ndarray  # (n,) uint8 sample number
    counts: np.ndarray  # (n, 8) int32
    aux: np.ndarray  # (n, 6) uint8
    footer: np.ndarray  # (n,) uint8

    def __len__(self) -> int:
        return int(self.counter.shape[0])


def decode_packets(rows: np.ndarray) -> Packets:
    """``(n, 33)`` uint8 packets (framing already checked) into their fields."""
    rows = np.asarray(rows, dtype=np.uint8)
    w = rows[:, 2:26].reshape(-1, 8, 3).astype(np.int32)
    counts = (w[..., 0] << 16) | (w[..., 1] << 8) | w[..., 2]
    counts = (counts ^ 0x800000) - 0x800000
    return Packets(rows[:, 1].copy(), counts, rows[:, 26:32].copy(), rows[:, 32].copy())


def accel_g(aux: np.ndarray) -> np.ndarray:
    """Accelerometer X, Y, Z in g from ``0xC0`` packets' aux bytes (int16 big-endian)."""
    a = np.asarray(aux, dtype=np.uint8).reshape(-1, 3, 2).astype(np.int16)
    return ((a[..., 0] << 8) | a[..., 1]).astype(np.int16) * ACCEL_G_PER_COUNT


def digital_trigger(aux: np.ndarray, footer: np.ndarray) -> np.ndarray:
    """Trigger bits from digital-mode aux bytes: bit i = pin DIGITAL_PINS[i] high.
    Packets of another kind (footer not ``0xC1``) carry no pins: 0."""
    pins = (np.asarray(aux)[:, :5] != 0).astype(np.uint8)
    bits = (pins << np.arange(5, dtype=np.uint8)).sum(axis=1).astype(np.uint8)
    return np.where(np.asarray(footer) == FOOTER_RAW_AUX, bits, 0).astype(np.uint8)


class PacketParser:
    """Finds 33-byte packets in a byte stream; counts and skips bad bytes; never raises.

    In sync, packets are taken 33 bytes at a time (vectorised). A packet whose header or
    footer is wrong loses sync: the parser skips to the next ``0xA0`` whose footer 32
    bytes on is ``0xCX`` and which the next packet's header confirms (or the end of the
    buffer, not yet confirmable).
    """

    def __init__(self, max_buffer: int = 1 << 20) -> None:
        self._buf = bytearray()
        self._max = max_buffer
        self.bytes_skipped = 0
        self.resyncs = 0

    def clear(self) -> None:
        self._buf.clear()

    def feed(self, data: bytes) -> np.ndarray:
        """Append ``data``; return every complete packet as ``(n, 33)`` uint8 rows."""
        self._buf += data
        out: list[np.ndarray] = []
        while len(self._buf) >= PACKET_BYTES:
            arr = np.frombuffer(bytes(self._buf), dtype=np.uint8)  # a copy: _buf shrinks below
            if arr[0] == HEADER and arr[PACKET_BYTES - 1] & 0xF0 == 0xC0:
                m = len(arr) // PACKET_BYTES
                rows = arr[: m * PACKET_BYTES].reshape(m, PACKET_BYTES)
                ok = (rows[:, 0] == HEADER) & ((rows[:, -1] & 0xF0) == 0xC0)
                k = m if ok.all() else int(np.argmin(ok))
                out.append(rows[:k].copy())
                del self._buf[: k * PACKET_BYTES]
                if k == m:
                    break
                continue
            self._resync(arr)
            if len(self._buf) and self._buf[0] != HEADER:
                break  # nothing that could start a packet: wait for more bytes
        if len(self._buf) > self._max:  # never grows without bound on garbage
            self.bytes_skipped += len(self._buf) - PACKET_BYTES
            del self._buf[: len(self._buf) - PACKET_BYTES]
        return np.concatenate(out) if out else np.zeros((0, PACKET_BYTES), np.uint8)

    def _resync(self, arr: np.ndarray) -> None:
        """Drop bytes up to the next plausible packet start (or keep a possible tail)."""
        n = len(arr)
        head = arr[1 : n - PACKET_BYTES + 1] == HEADER
        foot = (arr[PACKET_BYTES:] & 0xF0) == 0xC0
        cand = np.flatnonzero(head & foot) + 1
        nxt = cand + PACKET_BYTES
        confirmed = (nxt >= n) | (arr[np.minimum(nxt, n - 1)] == HEADER)
        cand = cand[confirmed]
        if cand.size:
            skip = int(cand[0])
        else:  # keep a tail that may still become a packet
            tail = np.flatnonzero(arr[max(n - PACKET_BYTES + 1, 1):] == HEADER)
            skip = (max(n - PACKET_BYTES + 1, 1) + int(tail[0])) if tail.size else n
        self.bytes_skipped += skip
        self.resyncs += 1
        del self._buf[:skip]


@dataclass(frozen=True)
class CytonSettings:
    port: str  # "/dev/ttyUSB0", a udev name or a pyserial URL
    channels: tuple[str, ...] = ("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2")
    fs_hz: int = 250  # the board's packet rate; 16 channels stream at half of it
    gain: int = 24
    inputs: str = "normal"  # "normal", "shorted", "test"
    bias: bool = True
    srb1: bool = True
    baud: int = 115_200
    reply_timeout_s: float = 3.0  # the soft reset's text takes about a second on a board
    stall_after_s: float = 0.5
    reconnect_interval_s: float = 0.5
    read_max_bytes: int = 1 << 18

    def __post_init__(self) -> None:
        if len(self.channels) not in (8, 16):
            raise ValueError(f"channels: 8 (Cyton) or 16 (with Daisy), not {len(self.channels)}")
        if self.fs_hz not in RATE_CODES:
            raise ValueError(f"fs_hz: must be one of {sorted(RATE_CODES)}, not {self.fs_hz!r}")
        if self.gain not in GAIN_CODES:
            raise ValueError(f"gain: must be one of {sorted(GAIN_CODES)}, not {self.gain!r}")
        if self.inputs not in INPUT_CODES:
            raise ValueError(f"inputs: must be one of {sorted(INPUT_CODES)}")

    @property
    def daisy(self) -> bool:
        return len(self.channels) == 16


class Cyton:
    """The Cyton as one ``eeg`` stream of ``SampleBlock`` s; driver lifecycle as ADS1299."""

    def __init__(self, settings: CytonSettings) -> None:
        self.settings = settings
        n = len(settings.channels)
        self._scale = uv_per_count(settings.gain)
        self._fs_packets = float(settings.fs_hz)
        self.info = StreamInfo(
            name="eeg", fs_hz=settings.fs_hz / (2 if settings.daisy else 1),
            channels=tuple(settings.channels), units=("uV",) * n,
            scale=(self._scale,) * n, offset=(0.0,) * n, device_time_unit="sample")
        self.counters = StreamCounters(extra={
            "dropped_packets": 0, "wraps_inferred": 0, "bad_counter": 0, "bytes_skipped": 0,
            "unpaired": 0, "stalls": 0, "disconnects": 0, "reconnects": 0,
            "reconnect_failures": 0})
        self.connected = False
        self.identity = ""
        self.digital_aux = False
        self.accel_g = np.zeros(3)
        self._port: serial.SerialBase | None = None
        self._parser = PacketParser()
        self._running = False
        self._pending: list[SampleBlock] = []
        self._last_counter: int | None = None
        self._last_packet = -1  # unwrapped packet index of the last good packet
        self._last_sample = -1  # stream sample index last delivered (-1: none this run)
        self._last_read_ns = 0
        self._last_read_drained = False
        self._half: tuple[int, np.ndarray, int, int] | None = None  # daisy: odd packet
        self._held: np.ndarray | None = None  # a last packet out of sequence, judged next
        self._resume_from_ns = 0  # after a reconnect: host time of the last packet before
        self._next_attempt = 0.0
        self._last_data_ns = 0
        self._stalled = False
        # poll runs on the stream's pump thread, start/stop come from the rig's: one
        # reader's state (port, parser, pending), so one lock (as the hub driver).
        self._lock = threading.RLock()

    # ------------------------------------------------------------ lifecycle
    def open(self) -> None:
        """Open the port, soft-reset and identify the board, configure; DeviceError on failure."""
        with self._lock:
            self._open_port()
            try:
                self._configure()
            except BaseException:
                self._close_port()
                raise
            self.connected = True

    def _open_port(self) -> None:
        s = self.settings
        self._port = open_port("cyton", s.port, s.baud, s.reply_timeout_s)

    def _configure(self) -> None:
        """Soft reset, identify, channel count, rate, digital mode, channel settings."""
        s = self.settings
        self._write(b"s")  # a board left streaming by a crashed run
        time.sleep(0.05)
        self._discard_input()
        self.identity = self._command(b"v", "soft reset (v)")
        self._check_identity(self.identity)
        want = 16 if s.daisy else 8
        reply = self._command(b"C" if s.daisy else b"c", "channel count (C/c)")
        got = re.search(r"(\d+)\s*\$\$\$$", reply)
        if got is None or int(got.group(1)) != want:
            raise WrongDevice(f"cyton at {s.port!r}: asked for {want} channels, the board "
                              f"answered {reply!r}" + (" (no Daisy attached?)"
                                                       if s.daisy else ""))
        reply = self._command(b"~%d" % RATE_CODES[s.fs_hz], "sample rate (~)")
        if f"{s.fs_hz}Hz" not in reply.replace(" ", ""):
            raise WrongDevice(f"cyton at {s.port!r}: rate {s.fs_hz} Hz refused: {reply!r}")
        # Digital read mode puts the sync line (D11) into the aux bytes; firmware
        # before v3 has no board modes: then no sync pulses reach the clock.
        self.digital_aux = "Success" in self._command(b"/3", "digital mode (/3)")
        for ch in range(1, want + 1):
            inputs = "normal" if s.inputs == "test" else s.inputs
            reply = self._command(channel_command(ch, s.gain, inputs, s.bias, s.srb1),
                                  f"channel {ch} settings (x..X)")
            if "Failure" in reply:
                raise DeviceError(f"cyton at {s.port!r}: channel {ch} settings refused: "
                                  f"{reply!r}")
        if s.inputs == "test":
            self._command(b"-", "test signal (-)")

    def start(self) -> None:
        with self._lock:
            if self._port is None:
                raise DeviceError("cyton: start() before open()")
            self._last_sample = -1
            self._resume_from_ns = 0
            self._begin()
            self._running = True

    def _begin(self) -> None:
        """``b``: the board's sample number starts again at 0."""
        self._discard_input()
        self._parser.clear()
        self._last_counter = None
        self._half = None
        self._held = None
        self._write(b"b")
        self._last_data_ns = self._last_read_ns = monotonic_ns()
        self._last_read_drained = True

    def poll(self, timeout_s: float) -> list[SampleBlock]:
        """Packets received since the last poll, waiting up to ``timeout_s`` for the first."""
        with self._lock:
            if self._port is None and self._running:
                self._reconnect_when_due(timeout_s)
            elif self._port is None:
                time.sleep(max(timeout_s, 0.0))
            else:
                self._read(0.0 if self._pending else timeout_s)
            if self._running:
                stalled = monotonic_ns() - self._last_data_ns > self.settings.stall_after_s * 1e9
                if stalled and not self._stalled:
                    self.counters.extra["stalls"] += 1
                self._stalled = stalled
            out, self._pending = self._pending, []
            return out

    @property
    def stalled(self) -> bool:
        """True while started and no packet came for ``stall_after_s``."""
        return self._running and self._stalled

    def stop(self) -> None:
        """``s``; packets already on their way come out of the next poll."""
        with self._lock:
            if self._running and self._port is not None:
                with contextlib.suppress(DeviceError):
                    self._write(b"s")
                deadline = time.monotonic() + 0.1
                while time.monotonic() < deadline and self._port is not None:
                    self._read(0.02)
                self._ingest(b"", monotonic_ns(), drained=False, final=True)
            self._running = False

    def close(self) -> None:
        with self._lock:
            if self._running:
                self.stop()
            self._running = False
            self._close_port()
            self.connected = False

    # ------------------------------------------------------------ a lost port
    def _lost(self) -> None:
        """The port failed under us (dongle pulled): count it, close it, retry later."""
        self.connected = False
        self._close_port()
        self.counters.extra["disconnects"] += 1
        self._resume_from_ns = self._last_data_ns
        self._next_attempt = time.monotonic() + self.settings.reconnect_interval_s

    def _reconnect_when_due(self, timeout_s: float) -> None:
        if not reconnect_due(self._next_attempt, timeout_s):
            return
        self._next_attempt = time.monotonic() + self.settings.reconnect_interval_s
        try:
            self._open_port()
            self._configure()
            self._begin()
        except DeviceError:
            self._close_port()
            self.counters.extra["reconnect_failures"] += 1
            return
        self.connected = True
        self.counters.extra["reconnects"] += 1

    # ------------------------------------------------------------ commands
    def _write(self, data: bytes) -> None:
        if self._port is None:
            raise DeviceTimeout(f"cyton at {self.settings.port!r}: port is not open")
        try:
            self._port.write(data)
        except IO_ERRORS as exc:
            raise DeviceTimeout(f"cyton at {self.settings.port!r}: write failed: {exc}") from exc

    def _command(self, cmd: bytes, what: str) -> str:
        """Send ``cmd`` and return the board's text up to and including ``$$$``."""
        self._write(cmd)
        port = self._port
        assert port is not None
        text = bytearray()
        deadline = time.monotonic() + self.settings.reply_timeout_s
        while EOT not in text:
            left = deadline - time.monotonic()
            if left <= 0:
                if text:
                    raise WrongDevice(f"cyton at {self.settings.port!r}: {what}: no '$$$' "
                                      f"after {bytes(text[-80:])!r}: not a Cyton, or wrong baud?")
                raise DeviceTimeout(f"cyton at {self.settings.port!r}: no reply to {what} "
                                    f"within {self.settings.reply_timeout_s} s")
            self._wait_readable(port, min(left, 0.05))
            try:
                text += port.read(4096)
            except IO_ERRORS as exc:
                raise DeviceTimeout(f"cyton at {self.settings.port!r}: read failed: {exc}") from exc
        return text[: text.index(EOT) + 3].decode("ascii", errors="replace")

    def _check_identity(self, text: str) -> None:
        port = self.settings.port
        if "OpenBCI" not in text:
            raise WrongDevice(f"device at {port!r} is not an OpenBCI board: {text[:80]!r}")
        ids = re.findall(r"ADS1299 Device ID: 0x([0-9A-Fa-f]{2})", text)
        if not ids or any(int(i, 16) != 0x3E for i in ids):
            raise WrongDevice(f"cyton at {port!r}: ADS1299 ID(s) {ids or 'missing'}, expected "
                              f"3E: {text[:120]!r}")
        if self.settings.daisy and len(ids) < 2:
            raise WrongDevice(f"cyton at {port!r}: 16 channels configured, but the board "
                              f"reports no Daisy: {text[:120]!r}")

    def _discard_input(self) -> None:
        if self._port is not None:
            with contextlib.suppress(*IO_ERRORS):
                self._port.reset_input_buffer()

    def _close_port(self) -> None:
        close_port(self._port)
        self._port = None

    @staticmethod
    def _wait_readable(port: serial.SerialBase, timeout_s: float) -> None:
        try:
            select.select([port.fileno()], [], [], timeout_s)
        except (AttributeError, NotImplementedError, OSError):  # URL handlers without an fd
            time.sleep(min(timeout_s, 0.002))

    # ------------------------------------------------------------ reading
    def _read(self, timeout_s: float) -> None:
        port = self._port
        if port is None:
            return
        try:
            if timeout_s > 0:
                self._wait_readable(port, timeout_s)
            chunks: list[bytes] = []
            total, drained = 0, False
            while total < self.settings.read_max_bytes:
                data = port.read(_READ_CHUNK)
                total += len(data)
                chunks.append(data)
                if len(data) < _READ_CHUNK:
                    drained = True
                    break
        except IO_ERRORS:
            self._lost()
            return
        if total:
            self._ingest(b"".join(chunks), monotonic_ns(), drained)

    def _ingest(self, data: bytes, host_ns: int, drained: bool, final: bool = False) -> None:
        rows = self._parser.feed(data)
        c = self.counters
        c.extra["bytes_skipped"] = self._parser.bytes_skipped
        c.resyncs = self._parser.resyncs
        if len(rows):
            self._last_data_ns = host_ns
        if self._held is not None:
            rows = np.concatenate((self._held[None, :], rows))
            self._held = None
        if not len(rows):
            return
        counter = rows[:, 1]
        keep = self._plausible(counter)
        if not keep.all():
            bad = int((~keep).sum())
            c.extra["bad_counter"] += bad
            c.errors += bad
            rows = rows[keep]
        if len(rows) and not final and self._out_of_sequence_last(rows[:, 1]):
            # Judged with the packet after it, in the next read: one bad byte or a gap?
            self._held = rows[-1].copy()
            rows = rows[:-1]
        if not len(rows):
            return
        p = decode_packets(rows)
        packet = self._unwrap(p.counter, host_ns)
        self._last_read_ns, self._last_read_drained = host_ns, drained
        accel = p.footer == FOOTER_ACCEL
        if accel.any():
            self.accel_g = accel_g(p.aux[accel][-1:])[0]
        trig = digital_trigger(p.aux, p.footer)
        if self.settings.daisy:
            self._emit_daisy(packet, p.counts, trig, p.footer, host_ns)
        else:
            self._emit(packet, p.counts, trig, p.footer.astype(np.uint32), host_ns)

    def _out_of_sequence_last(self, counter: np.ndarray) -> bool:
        prev = int(counter[-2]) if len(counter) > 1 else self._last_counter
        return prev is not None and (int(counter[-1]) - prev) % 256 != 1

    def _plausible(self, counter: np.ndarray) -> np.ndarray:
        """False for a sample number that breaks the sequence while its neighbours agree
        with each other (one bad byte in a packet whose framing survived)."""
        c = counter.astype(np.int64)
        prev = np.concatenate(([self._last_counter if self._last_counter is not None
                                else (c[0] - 1)], c[:-1]))
        nxt = np.concatenate((c[1:], [c[-1] + 1 if c.size < 2 else -1]))
        out_of_seq = (c - prev) % 256 != 1
        neighbours_agree = (nxt - prev) % 256 == 2
        bad = out_of_seq & neighbours_agree
        bad[-1] = False  # the last one has no right neighbour yet: judged as it comes
        return ~bad

    def _unwrap(self, counter: np.ndarray, host_ns: int) -> np.ndarray:
        """Unwrapped packet indices; counts lost packets (see the module docstring)."""
        c = counter.astype(np.int64)
        if self._last_counter is None and self._resume_from_ns:
            # After a reconnect the board started again at 0: place its first packet by
            # host time since the last packet before the loss (parity kept for the Daisy).
            gap = round((host_ns - self._resume_from_ns) * 1e-9 * self._fs_packets)
            base = self._last_packet + max(gap, 1)
            base += (base - int(c[0])) % 2
            self.counters.extra["dropped_packets"] += base - self._last_packet - 1
            self._resume_from_ns = 0
            prev_c, prev_idx = int(c[0]) - 1, base - 1
        elif self._last_counter is None:  # first packet of a run: index % 256 == its number
            base = (self._last_packet // 256 + 1) * 256 + int(c[0])
            prev_c, prev_idx = int(c[0]) - 1, base - 1
        else:
            prev_c, prev_idx = self._last_counter, self._last_packet
        step = (c - np.concatenate(([prev_c], c[:-1]))) % 256
        step[step == 0] = 256  # the same number twice in a row: at least a whole wrap
        if self._last_counter is not None and self._last_read_drained:
            elapsed = (host_ns - self._last_read_ns) * 1e-9 * self._fs_packets
            wraps = max(0, round((elapsed - float(step.sum())) / 256.0))
            if wraps:
                step[int(np.argmax(step))] += 256 * wraps
                self.counters.extra["wraps_inferred"] += wraps
        lost = int(step.sum()) - len(step)
        if lost:
            self.counters.extra["dropped_packets"] += lost
        idx = prev_idx + np.cumsum(step)
        self._last_counter, self._last_packet = int(c[-1]), int(idx[-1])
        return idx

    def _emit(self, index: np.ndarray, counts: np.ndarray, trig: np.ndarray,
              status: np.ndarray, host_ns: int) -> None:
        n = len(index)
        if not n:
            return
        first = self._last_sample + 1 if self._last_sample >= 0 else int(index[0])
        self.counters.dropped += int(index[0]) - first + int((np.diff(index) - 1).sum())
        self._last_sample = int(index[-1])
        self.counters.samples += n
        host = np.full(n, host_ns, dtype=np.int64)
        self._pending.append(SampleBlock(
            stream="eeg", index=index.copy(), device_t=index.copy(), host_t_ns=host,
            raw=counts.astype(np.int32), values=counts * self._scale, trigger=trig,
            status=status.astype(np.uint32)))

    def _emit_daisy(self, packet: np.ndarray, counts: np.ndarray, trig: np.ndarray,
                    footer: np.ndarray, host_ns: int) -> None:
        """Pair each odd (board) packet with the next even (Daisy) one."""
        if self._half is not None:
            i0, c0, t0, f0 = self._half
            packet = np.concatenate(([i0], packet))
            counts = np.concatenate((c0[None, :], counts))
            trig = np.concatenate(([t0], trig)).astype(np.uint8)
            footer = np.concatenate(([f0], footer)).astype(np.uint8)
            self._half = None
        odd = packet % 2 == 1
        pair = odd[:-1] & (packet[1:] == packet[:-1] + 1)
        a = np.flatnonzero(pair)
        if odd[-1]:  # its partner is still on the way
            self._half = (int(packet[-1]), counts[-1].copy(), int(trig[-1]), int(footer[-1]))
        used = len(a) * 2 + (1 if odd[-1] else 0)
        self.counters.extra["unpaired"] += len(packet) - used
        if not len(a):
            return
        sample = packet[a] // 2
        both = np.concatenate((counts[a], counts[a + 1]), axis=1)
        status = footer[a].astype(np.uint32) | (footer[a + 1].astype(np.uint32) << 8)
        self._emit(sample, both, trig[a], status, host_ns)
