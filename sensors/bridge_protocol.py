"""The EEG bridge's SPI protocol (docs/eeg-bridge-protocol.md): framing, commands, decoding.

Pure functions and constants, shared by the host driver (``sensors.eeg_bridge``) and the
emulator (``hil.sim.eeg_bridge``). The document is the specification; this module follows
it field for field. CRC-32 is zlib's (CRC-32/ISO-HDLC, check value 0xCBF43926): the one
the firmware's CRC unit computes with input/output reflection and a final XOR.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from sensors.ads1299 import FRAME_BYTES

PROTOCOL_MAJOR, PROTOCOL_MINOR = 1, 0
MAGIC = b"MMEB"
SYNC_REQUEST, SYNC_RESPONSE = 0xA5, 0x5A
CRC_CHECK = 0xCBF43926  # crc32(b"123456789")

# Commands.
IDENTIFY, STATUS, CLEAR_FLAGS = 0x01, 0x02, 0x03
REG_XFER = 0x10
SET_RATE, START, STOP = 0x20, 0x21, 0x22
READ_FIFO = 0x30
COMMANDS = {IDENTIFY: "IDENTIFY", STATUS: "STATUS", CLEAR_FLAGS: "CLEAR_FLAGS",
            REG_XFER: "REG_XFER", SET_RATE: "SET_RATE", START: "START", STOP: "STOP",
            READ_FIFO: "READ_FIFO"}

# Result codes (response byte 2).
OK, BAD_CRC, BAD_COMMAND, BAD_ARGUMENT, NOT_STOPPED = 0, 1, 2, 3, 4
RESULTS = {OK: "ok", BAD_CRC: "request CRC wrong", BAD_COMMAND: "unknown command",
           BAD_ARGUMENT: "bad argument", NOT_STOPPED: "not allowed while running"}

# Status flags.
FLAG_RUNNING, FLAG_BOOTED, FLAG_FIFO_FULL, FLAG_DRDY_TIMEOUT = 0x01, 0x02, 0x04, 0x08

TOPOLOGY_SEPARATE_CS, TOPOLOGY_DAISY = 0, 1

REQUEST_HEADER = struct.Struct("<BBBBH")  # sync, command, tag, reserved, payload length
RESPONSE_HEADER = struct.Struct("<BBBBH")  # sync, command echo, tag echo, result, length
CRC_BYTES = 4
STATUS_WORD = struct.Struct("<HHIIIIIII")  # 32 bytes, see BridgeStatus
IDENTITY = struct.Struct("<4sBBHBBII8s")  # 26 bytes, see Identity
FIFO_HEADER = struct.Struct("<HH")  # frames valid, reserved (after the status word)
RECORD_HEADER = 8  # u32 sequence, u32 MCU microseconds
MAX_CHIPS = 8


class LinkError(Exception):
    """A bridge exchange failed on the link (drivers count these; they are not raised out)."""


class NotReady(LinkError):
    """The response read found no sync byte: the bridge has not answered (yet)."""


class CrcMismatch(LinkError):
    """A response arrived with a wrong CRC: bytes were corrupted on the wire."""


class Stale(LinkError):
    """A well-formed response to another request (a request lost on the wire): resend."""


class Rejected(LinkError):
    """The bridge answered with a result other than OK."""

    def __init__(self, command: int, result: int) -> None:
        self.command, self.result = command, result
        super().__init__(f"{COMMANDS.get(command, hex(command))}: "
                         f"{RESULTS.get(result, f'result {result}')}")


def crc32(data: bytes | bytearray | memoryview) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def request(command: int, payload: bytes = b"", tag: int = 0) -> bytes:
    """A request frame: A5, command, tag, 0, u16 length, payload, CRC-32 of all before it."""
    head = REQUEST_HEADER.pack(SYNC_REQUEST, command, tag & 0xFF, 0, len(payload)) + payload
    return head + crc32(head).to_bytes(4, "little")


def response(command: int, tag: int, result: int, payload: bytes = b"") -> bytes:
    """A response frame: 5A, command echo, tag echo, result, u16 length, payload, CRC-32."""
    head = RESPONSE_HEADER.pack(SYNC_RESPONSE, command, tag & 0xFF, result,
                                len(payload)) + payload
    return head + crc32(head).to_bytes(4, "little")


def response_bytes(payload_len: int) -> int:
    """How many bytes the host clocks to read a response with ``payload_len`` bytes."""
    return RESPONSE_HEADER.size + payload_len + CRC_BYTES


def parse_request(data: bytes) -> tuple[int, int, bytes] | None:
    """(command, tag, payload) of a request, or None when the CRC or framing is wrong."""
    if len(data) < REQUEST_HEADER.size + CRC_BYTES or data[0] != SYNC_REQUEST:
        return None
    _, cmd, tag, _, n = REQUEST_HEADER.unpack_from(data)
    end = REQUEST_HEADER.size + n
    if len(data) < end + CRC_BYTES:
        return None
    if crc32(data[:end]) != int.from_bytes(data[end:end + CRC_BYTES], "little"):
        return None
    return cmd, tag, bytes(data[REQUEST_HEADER.size:end])


def parse_response(data: bytes, command: int, tag: int) -> bytes:
    """The payload of a response read; raises NotReady, CrcMismatch, Stale or Rejected."""
    if len(data) < RESPONSE_HEADER.size + CRC_BYTES or data[0] != SYNC_RESPONSE:
        raise NotReady(f"no response (first byte 0x{data[0] if data else 0:02X})")
    _, cmd, rtag, result, n = RESPONSE_HEADER.unpack_from(data)
    end = RESPONSE_HEADER.size + n
    if end + CRC_BYTES > len(data):
        raise CrcMismatch(f"length field {n} exceeds the {len(data)} bytes read")
    if crc32(data[:end]) != int.from_bytes(data[end:end + CRC_BYTES], "little"):
        raise CrcMismatch("response CRC wrong")
    if cmd != command or rtag != tag & 0xFF:
        raise Stale(f"response to 0x{cmd:02X} tag {rtag}, expected 0x{command:02X} tag {tag}")
    if result != OK:
        raise Rejected(command, result)
    return bytes(data[RESPONSE_HEADER.size:end])


@dataclass(frozen=True)
class Identity:
    """IDENTIFY's answer."""

    protocol_major: int
    protocol_minor: int
    firmware: int
    n_chips: int
    topology: int  # TOPOLOGY_SEPARATE_CS or TOPOLOGY_DAISY
    fifo_frames: int
    timer_hz: int  # the free-running counter's nominal rate: 1_000_000
    uid: bytes

    def pack(self) -> bytes:
        return IDENTITY.pack(MAGIC, self.protocol_major, self.protocol_minor, self.firmware,
                             self.n_chips, self.topology, self.fifo_frames, self.timer_hz,
                             self.uid)

    @classmethod
    def unpack(cls, data: bytes) -> Identity:
        if len(data) < IDENTITY.size:
            raise ValueError(f"IDENTIFY: {len(data)} bytes, expected {IDENTITY.size}")
        magic, *rest = IDENTITY.unpack_from(data)
        if magic != MAGIC:
            raise ValueError(f"IDENTIFY: magic {magic!r}, expected {MAGIC!r}")
        return cls(*rest)


@dataclass(frozen=True)
class BridgeStatus:
    """The 32-byte status word (STATUS, and the head of every READ_FIFO answer)."""

    flags: int
    resets: int  # bridge resets since power-on (no-init RAM); a change means a reset
    fifo_level: int  # frames in the FIFO now (after this read's frames left it)
    overflow_frames: int  # frames dropped with the FIFO full, since START
    drdy_missed: int  # DRDY periods the bridge did not service, since START
    next_seq: int  # the sequence number the next frame will carry
    now_us: int  # the free-running counter when this word was built
    rx_crc_errors: int  # requests the bridge refused for a wrong CRC, since power-on

    def pack(self) -> bytes:
        return STATUS_WORD.pack(self.flags, 0, self.resets, self.fifo_level,
                                self.overflow_frames, self.drdy_missed,
                                self.next_seq & 0xFFFFFFFF, self.now_us & 0xFFFFFFFF,
                                self.rx_crc_errors)

    @classmethod
    def unpack(cls, data: bytes, offset: int = 0) -> BridgeStatus:
        flags, _, *rest = STATUS_WORD.unpack_from(data, offset)
        return cls(flags, *rest)

    @property
    def running(self) -> bool:
        return bool(self.flags & FLAG_RUNNING)

    @property
    def booted(self) -> bool:
        return bool(self.flags & FLAG_BOOTED)


def record_bytes(n_chips: int) -> int:
    """One FIFO record: u32 sequence, u32 microseconds, then 27 bytes per chip."""
    return RECORD_HEADER + FRAME_BYTES * n_chips


def fifo_payload_bytes(max_frames: int, n_chips: int) -> int:
    return STATUS_WORD.size + FIFO_HEADER.size + max_frames * record_bytes(n_chips)


def frames_per_read(max_xfer_bytes: int, n_chips: int) -> int:
    """The most records one READ_FIFO answer can carry within ``max_xfer_bytes``."""
    room = max_xfer_bytes - response_bytes(fifo_payload_bytes(0, n_chips))
    return max(1, room // record_bytes(n_chips))


def fifo_payload(status: BridgeStatus, records: np.ndarray, max_frames: int) -> bytes:
    """READ_FIFO's payload: status, count, the records, zero padding up to ``max_frames``."""
    n, width = records.shape
    pad = bytes((max_frames - n) * width)
    return status.pack() + FIFO_HEADER.pack(n, 0) + records.tobytes() + pad


def decode_fifo(payload: bytes, n_chips: int
                ) -> tuple[BridgeStatus, np.ndarray, np.ndarray, np.ndarray]:
    """READ_FIFO's payload -> (status, seq (n,) int64, t_us (n,) int64, frames (n, 27 * chips))."""
    status = BridgeStatus.unpack(payload)
    n, _ = FIFO_HEADER.unpack_from(payload, STATUS_WORD.size)
    width = record_bytes(n_chips)
    start = STATUS_WORD.size + FIFO_HEADER.size
    if start + n * width > len(payload):
        raise CrcMismatch(f"READ_FIFO: {n} records do not fit {len(payload)} bytes")
    rec = np.frombuffer(payload, dtype=np.uint8, count=n * width, offset=start).reshape(n, width)
    head = rec[:, :RECORD_HEADER].copy().view("<u4")
    return status, head[:, 0].astype(np.int64), head[:, 1].astype(np.int64), rec[:, RECORD_HEADER:]


def pack_records(seq: np.ndarray, t_us: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """(n,) seq, (n,) t_us, (n, 27 * chips) frames -> (n, record_bytes) uint8 records."""
    n = frames.shape[0]
    head = np.empty((n, 2), dtype="<u4")
    head[:, 0] = np.asarray(seq, dtype=np.int64) & 0xFFFFFFFF
    head[:, 1] = np.asarray(t_us, dtype=np.int64) & 0xFFFFFFFF
    return np.concatenate([head.view(np.uint8).reshape(n, RECORD_HEADER),
                           np.asarray(frames, dtype=np.uint8)], axis=1)
