"""The peripheral hub's serial protocol (docs/hub-protocol.md): encoder and streaming parser.

Framing is sync word + fixed header + length + CRC-16/CCITT-FALSE, all little-endian::

    A5 5A | version u8 | type u8 | payload_len u16 | payload | crc u16 (over version..payload)

Sync + length (not COBS) because data frames have a fixed size: the parser finds every
sync candidate with one numpy comparison, checks headers and CRCs for all candidates of a
batch at once (column-wise table CRC over an (n_frames, frame_len) byte matrix) and
decodes data frames through a structured dtype. COBS needs a sequential byte walk.

The parser never raises on bad bytes; it counts them (:class:`ParserCounters`).
"""

from __future__ import annotations

import struct
import time
from binascii import crc_hqx
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

SYNC = b"\xa5\x5a"
SYNC0, SYNC1 = 0xA5, 0x5A
PROTOCOL_VERSION = 1
HEADER_LEN = 6  # sync(2) version(1) type(1) payload_len(2)
CRC_LEN = 2
OVERHEAD = HEADER_LEN + CRC_LEN
MAX_PAYLOAD = 1024
MAGIC = b"MMHB"
MAX_CHANNELS = 16

# Host -> MCU commands.
IDENTIFY = 0x01
START = 0x02
STOP = 0x03
SET_RATE = 0x04
PING = 0x05
# MCU -> host.
DATA = 0x80
ACK = 0x81
NAK = 0x82
INFO = 0x83

COMMANDS = (IDENTIFY, START, STOP, SET_RATE, PING)
TYPE_NAMES = {
    IDENTIFY: "IDENTIFY", START: "START", STOP: "STOP", SET_RATE: "SET_RATE", PING: "PING",
    DATA: "DATA", ACK: "ACK", NAK: "NAK", INFO: "INFO",
}

# NAK codes.
NAK_UNKNOWN = 1  # unknown command type
NAK_BAD_ARG = 2  # argument out of range (SET_RATE outside fs_min..fs_max)
NAK_BUSY = 3  # not allowed while streaming (SET_RATE)
NAK_BAD_LEN = 4  # payload length wrong for the command

# Status word bits in DATA frames.
STATUS_TX_OVERFLOW = 1 << 0  # the MCU dropped frames before this one (the seq gap says how many)
STATUS_SATURATED = 1 << 1  # an ADC channel clipped in this sample
STATUS_ECG_LEAD_OFF = 1 << 2
STATUS_EDA_OPEN = 1 << 3  # no skin contact on the EDA electrodes
STATUS_SKT_FAULT = 1 << 4
STATUS_LOW_BATTERY = 1 << 5

# Trigger byte bits in DATA frames (sampled at the same instant as the analog channels).
TRIG_SYNC = 1 << 0  # TRIG input: the host's sync pulse line

DATA_FIXED = 15  # seq u32, t_us u64, status u16, trigger u8
ACK_LEN = 11  # cmd_seq u16, cmd_type u8, t_us u64
NAK_LEN = 4  # cmd_seq u16, cmd_type u8, code u8
INFO_MIN = 25
CMD_LEN = {IDENTIFY: 2, START: 2, STOP: 2, SET_RATE: 4, PING: 2}


def data_payload_len(n_channels: int) -> int:
    return DATA_FIXED + 4 * n_channels


@lru_cache(maxsize=32)
def data_dtype(n_channels: int) -> np.dtype:
    """A whole DATA frame as a packed little-endian structured dtype."""
    return np.dtype(
        [
            ("sync", "<u2"), ("version", "u1"), ("type", "u1"), ("length", "<u2"),
            ("seq", "<u4"), ("t_us", "<u8"), ("status", "<u2"), ("trigger", "u1"),
            ("raw", "<i4", (n_channels,)), ("crc", "<u2"),
        ]
    )


# ---------------------------------------------------------------- CRC-16/CCITT-FALSE
# poly 0x1021, init 0xFFFF, no reflection, xorout 0; check("123456789") == 0x29B1.

def _crc_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint16)
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021) if c & 0x8000 else (c << 1)
        table[i] = c & 0xFFFF
    return table


_CRC_TABLE = _crc_table()


def _crc_table16() -> np.ndarray:
    """Register after shifting 16 zero bits through it: lets us consume two bytes per step."""
    c = np.arange(65536, dtype=np.uint32)
    for _ in range(16):
        c = np.where(c & 0x8000, (c << 1) ^ 0x1021, c << 1) & 0xFFFF
    return c.astype(np.uint16)


_CRC_TABLE16 = _crc_table16()


# Below this many rows, crc16_rows runs binascii.crc_hqx (the same CRC) once per row.
_CRC_SCALAR_ROWS = 128


def crc16_rows(rows: np.ndarray) -> np.ndarray:
    """CRC-16/CCITT-FALSE of every row of a (k, L) uint8 matrix, vectorised over rows.

    Two bytes per numpy step: for a 16-bit register, new = T16[crc ^ (b0 << 8 | b1)].
    """
    k, n = rows.shape
    if k <= _CRC_SCALAR_ROWS:  # few rows: one C call per row beats 20 numpy steps
        flat = np.ascontiguousarray(rows, dtype=np.uint8).tobytes()
        mv = memoryview(flat)
        return np.array([crc_hqx(mv[i : i + n], 0xFFFF) for i in range(0, k * n, n)],
                        dtype=np.uint16)
    crc = np.full(k, 0xFFFF, dtype=np.uint16)
    m = n // 2
    if m:
        words = np.ascontiguousarray(rows[:, : 2 * m]).view(">u2").astype(np.uint16)
        for j in range(m):
            crc = _CRC_TABLE16[crc ^ words[:, j]]
    if n % 2:
        crc = (crc << np.uint16(8)) ^ _CRC_TABLE[(crc >> np.uint16(8)) ^ rows[:, -1]]
    return crc


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE of one byte string."""
    return crc_hqx(data, 0xFFFF)


# ---------------------------------------------------------------- encoder

def encode_frame(ftype: int, payload: bytes, version: int = PROTOCOL_VERSION) -> bytes:
    body = struct.pack("<BBH", version, ftype, len(payload)) + payload
    return SYNC + body + struct.pack("<H", crc16(body))


def encode_command(ftype: int, cmd_seq: int, rate_hz: int | None = None) -> bytes:
    payload = struct.pack("<H", cmd_seq & 0xFFFF)
    if ftype == SET_RATE:
        payload += struct.pack("<H", int(rate_hz or 0))
    return encode_frame(ftype, payload)


def encode_ack(cmd_seq: int, cmd_type: int, t_us: int) -> bytes:
    return encode_frame(ACK, struct.pack("<HBQ", cmd_seq & 0xFFFF, cmd_type, t_us))


def encode_nak(cmd_seq: int, cmd_type: int, code: int) -> bytes:
    return encode_frame(NAK, struct.pack("<HBB", cmd_seq & 0xFFFF, cmd_type, code))


def encode_data(
    seq: np.ndarray, t_us: np.ndarray, status: np.ndarray, trigger: np.ndarray, raw: np.ndarray
) -> bytes:
    """Many DATA frames at once (vectorised): ``raw`` (k, n_channels) int32, seq mod 2**32."""
    raw = np.asarray(raw, dtype=np.int32)
    k, n_ch = raw.shape
    frames = np.zeros(k, dtype=data_dtype(n_ch))
    frames["sync"] = SYNC0 | (SYNC1 << 8)
    frames["version"] = PROTOCOL_VERSION
    frames["type"] = DATA
    frames["length"] = data_payload_len(n_ch)
    frames["seq"] = np.asarray(seq, dtype=np.int64) & 0xFFFFFFFF
    frames["t_us"] = t_us
    frames["status"] = status
    frames["trigger"] = trigger
    frames["raw"] = raw
    rows = frames.view(np.uint8).reshape(k, -1)
    frames["crc"] = crc16_rows(rows[:, 2:-CRC_LEN])
    return frames.tobytes()


@dataclass(frozen=True)
class HubIdentity:
    """The INFO reply: what the hub is and what its channels mean."""

    channels: tuple[str, ...]
    units: tuple[str, ...]
    scale: tuple[float, ...]  # physical = raw * scale + offset
    offset: tuple[float, ...]
    fs_hz: int = 1000
    fs_min_hz: int = 250
    fs_max_hz: int = 2000
    magic: bytes = MAGIC
    protocol_version: int = PROTOCOL_VERSION
    fw_version: int = 0x0100  # major << 8 | minor
    boot_id: int = 0  # random per MCU power-up: a change means the MCU restarted
    serial: int = 0
    streaming: bool = False


def encode_info(cmd_seq: int, ident: HubIdentity, version: int = PROTOCOL_VERSION) -> bytes:
    head = struct.pack(
        "<H4sBBHIIHHHB", cmd_seq & 0xFFFF, ident.magic, ident.protocol_version,
        len(ident.channels), ident.fw_version, ident.boot_id, ident.serial,
        ident.fs_hz, ident.fs_min_hz, ident.fs_max_hz, int(ident.streaming),
    )
    parts = [head]
    for name, unit, sc, off in zip(ident.channels, ident.units, ident.scale, ident.offset,
                                   strict=True):
        nb, ub = name.encode("ascii"), unit.encode("ascii")
        parts.append(struct.pack("<B", len(nb)) + nb + struct.pack("<B", len(ub)) + ub)
        parts.append(struct.pack("<dd", sc, off))
    return encode_frame(INFO, b"".join(parts), version=version)


def decode_info(payload: bytes) -> tuple[int, HubIdentity]:
    """(cmd_seq, identity) from an INFO payload; raises ValueError when it does not parse."""
    try:
        (cmd_seq, magic, ver, n_ch, fw, boot, serial, fs, fs_min, fs_max, flags) = (
            struct.unpack_from("<H4sBBHIIHHHB", payload, 0)
        )
        pos = INFO_MIN
        chans, units, scale, offset = [], [], [], []
        for _ in range(n_ch):
            ln = payload[pos]
            chans.append(payload[pos + 1 : pos + 1 + ln].decode("ascii"))
            pos += 1 + ln
            lu = payload[pos]
            units.append(payload[pos + 1 : pos + 1 + lu].decode("ascii"))
            pos += 1 + lu
            sc, off = struct.unpack_from("<dd", payload, pos)
            scale.append(sc)
            offset.append(off)
            pos += 16
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"INFO payload does not parse: {exc}") from exc
    ident = HubIdentity(
        channels=tuple(chans), units=tuple(units), scale=tuple(scale), offset=tuple(offset),
        fs_hz=fs, fs_min_hz=fs_min, fs_max_hz=fs_max, magic=magic, protocol_version=ver,
        fw_version=fw, boot_id=boot, serial=serial, streaming=bool(flags & 1),
    )
    return cmd_seq, ident


# ---------------------------------------------------------------- parser

@dataclass(frozen=True)
class Message:
    """A non-DATA frame that passed its CRC (ACK, NAK, INFO, or a command on the MCU side)."""

    ftype: int
    payload: bytes
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class ParsedBatch:
    """What one ``feed`` completed: DATA frames as arrays, other frames as messages."""

    seq: np.ndarray  # (k,) int64 sequence counter extended past 2**32 (never wraps)
    t_us: np.ndarray  # (k,) int64 MCU microseconds
    status: np.ndarray  # (k,) uint16
    trigger: np.ndarray  # (k,) uint8
    raw: np.ndarray  # (k, n_channels) int32
    messages: list[Message] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.seq.shape[0])


@dataclass
class ParserCounters:
    frames: int = 0  # frames delivered (any type)
    data_frames: int = 0
    crc_errors: int = 0  # well-formed header, CRC mismatch
    oversize: int = 0  # header valid but payload_len above the type's limit
    undersize: int = 0  # header valid but payload_len below the type's limit
    resyncs: int = 0  # runs of bytes skipped between valid frames
    bytes_skipped: int = 0  # every byte not inside a delivered frame
    seq_gaps: int = 0  # jumps forward in the DATA sequence counter
    samples_lost: int = 0  # sum of those jumps (samples the MCU took but we never got)
    seq_restarts: int = 0  # counter went backwards (MCU restart) : loss unknowable there
    foreign_version: int = 0  # valid INFO frames of another protocol version
    buffer_overflows: int = 0  # bytes dropped because the input buffer hit its bound


def _limits(n_channels: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Per frame type: minimum and maximum payload_len; (1, 0) marks unknown types."""
    lo = np.ones(256, dtype=np.int64)
    hi = np.zeros(256, dtype=np.int64)
    for t, n in CMD_LEN.items():
        lo[t] = hi[t] = n
    lo[ACK] = hi[ACK] = ACK_LEN
    lo[NAK] = hi[NAK] = NAK_LEN
    lo[INFO], hi[INFO] = INFO_MIN, MAX_PAYLOAD
    if n_channels is None:
        lo[DATA], hi[DATA] = data_payload_len(1), data_payload_len(MAX_CHANNELS)
    else:
        lo[DATA] = hi[DATA] = data_payload_len(n_channels)
    return lo, hi


class HubParser:
    """Streaming parser: ``feed(bytes) -> ParsedBatch``; never raises on bad bytes.

    Semantics are those of a sequential walk: at the next sync word, a header with
    version 1, a known type and a payload length within the type's limits starts a
    candidate; a candidate whose CRC matches is a frame and the walk jumps past it; any
    rejected candidate (bad length or CRC) moves the walk one byte on, so a clean frame
    hidden behind a corrupted length is never lost. The implementation evaluates all
    candidates of a feed at once.
    """

    def __init__(self, n_channels: int | None = 5, max_buffer: int = 1 << 20) -> None:
        self.counters = ParserCounters()
        self._buf = bytearray()
        self._max_buffer = max_buffer
        self._in_skip = False  # the previous feed ended inside a run of skipped bytes
        self._last_seq32: int | None = None
        self._last_ext = -1
        self._restart_pending = False
        self.set_channels(n_channels)

    def set_channels(self, n_channels: int | None) -> None:
        """Fix the DATA layout (after INFO); None accepts 1..16 channels until then."""
        self.n_channels = n_channels
        self._lo, self._hi = _limits(n_channels)
        if n_channels is None:
            self._data_len = 0  # no fast path until the layout is known
            return
        plen = data_payload_len(n_channels)
        self._data_len = plen + OVERHEAD
        self._data_hdr = SYNC + struct.pack("<BBH", PROTOCOL_VERSION, DATA, plen)
        self._data_dtype = data_dtype(n_channels)

    @property
    def buffered(self) -> int:
        """Bytes held back, waiting for the rest of a frame."""
        return len(self._buf)

    def clear_buffer(self) -> None:
        """Forget buffered partial bytes (new connection); sequence state is kept."""
        self._buf.clear()
        self._in_skip = False

    def device_restarted(self) -> None:
        """The MCU restarted (new boot_id): continue the extended index without a gap."""
        self._restart_pending = True

    def feed(self, data: bytes) -> ParsedBatch:
        c = self.counters
        self._buf += data
        if len(self._buf) > self._max_buffer:
            over = len(self._buf) - self._max_buffer
            del self._buf[:over]
            c.buffer_overflows += over
            c.bytes_skipped += over
        if self._data_len:
            batch = self._feed_fast()
            if batch is not None:
                return batch
        padded = np.frombuffer(bytes(self._buf) + bytes(HEADER_LEN), dtype=np.uint8)
        n = len(self._buf)
        arr = padded[:n]
        if n < 2:
            return self._batch([], [], arr)
        cand = np.flatnonzero((arr[:-1] == SYNC0) & (arr[1:] == SYNC1))
        hdr_ok = cand + HEADER_LEN <= n
        h = np.where(hdr_ok, cand, 0)
        ver = padded[h + 2].astype(np.int64)
        ftype = padded[h + 3].astype(np.int64)
        plen = padded[h + 4].astype(np.int64) | (padded[h + 5].astype(np.int64) << 8)
        lo, hi = self._lo[ftype], self._hi[ftype]
        foreign = (ver != PROTOCOL_VERSION) & (ftype == INFO)
        lo = np.where(foreign, 7, lo)
        hi = np.where(foreign, MAX_PAYLOAD, hi)
        known = ((ver == PROTOCOL_VERSION) & (lo <= hi)) | foreign
        # Keep real candidates: valid header, or a header not yet fully received.
        keep = ~hdr_ok | known
        cand, hdr_ok, plen, lo, hi = cand[keep], hdr_ok[keep], plen[keep], lo[keep], hi[keep]
        over = hdr_ok & (plen > hi)
        under = hdr_ok & (plen < lo)
        flen = plen + OVERHEAD
        complete = hdr_ok & ~over & ~under & (cand + flen <= n)
        crc_ok = np.zeros(cand.size, dtype=bool)
        for L in np.unique(flen[complete]).tolist():
            sel = np.flatnonzero(complete & (flen == L))
            rows = arr[cand[sel, None] + np.arange(L)]
            got = rows[:, -2].astype(np.uint16) | (rows[:, -1].astype(np.uint16) << 8)
            crc_ok[sel] = crc16_rows(rows[:, 2:-CRC_LEN]) == got
        acc = self._non_overlapping(cand[crc_ok], flen[crc_ok])
        acc_start = cand[crc_ok][acc]
        acc_end = acc_start + flen[crc_ok][acc]
        # Candidates inside an accepted frame were never visited by the walk.
        j = np.searchsorted(acc_start, cand, side="right") - 1
        if acc_end.size:
            inside = (j >= 0) & (cand < acc_end[np.clip(j, 0, None)])
        else:
            inside = np.zeros(cand.size, dtype=bool)
        pending = ~inside & (~hdr_ok | (~over & ~under & ~complete))
        stop = int(cand[pending][0]) if pending.any() else None
        if stop is None:
            last_end = int(acc_end[-1]) if acc_end.size else 0
            cut = n - 1 if (arr[-1] == SYNC0 and n - 1 >= last_end) else n
        else:
            cut = stop
        before = cand < cut
        rejected = ~inside & ~crc_ok & before
        c.oversize += int(np.count_nonzero(rejected & over))
        c.undersize += int(np.count_nonzero(rejected & under))
        c.crc_errors += int(np.count_nonzero(rejected & complete))
        in_cut = acc_start < cut
        acc_start, acc_end = acc_start[in_cut], acc_end[in_cut]
        self._count_skips(acc_start, acc_end, cut)
        batch = self._decode(arr, acc_start, acc_end)
        del self._buf[:cut]
        return batch

    def _feed_fast(self) -> ParsedBatch | None:
        """The steady stream: the buffer is back-to-back clean DATA frames, then at most
        the start of the next one. Returns None (nothing consumed) unless every frame's
        header and CRC match, in which case the general walk would give the same result:
        each frame is accepted at its start, no byte is skipped, the tail is pending.
        """
        buf = self._buf
        L = self._data_len
        k, tail = divmod(len(buf), L)
        if k == 0:
            return None
        hdr = self._data_hdr
        end = k * L
        if tail and buf[end : end + min(tail, HEADER_LEN)] != hdr[: min(tail, HEADER_LEN)]:
            return None  # whatever follows is not simply the next frame's beginning
        data = bytes(buf[:end]) if tail else bytes(buf)
        if not all(map(data.startswith, [hdr] * k, range(0, end, L))):
            return None
        frames = np.frombuffer(data, dtype=self._data_dtype)
        rows = np.frombuffer(data, dtype=np.uint8).reshape(k, L)
        if not np.array_equal(crc16_rows(rows[:, 2:-CRC_LEN]), frames["crc"]):
            return None
        del buf[:end]
        c = self.counters
        c.frames += k
        c.data_frames += k
        self._in_skip = False
        return self._data_batch(frames, [])

    def _data_batch(self, frames: np.ndarray, msgs: list[Message]) -> ParsedBatch:
        """A batch from decoded DATA frames (structured rows of ``data_dtype``)."""
        return ParsedBatch(
            seq=self._extend_seq(frames["seq"]),
            t_us=frames["t_us"].astype(np.int64),
            status=frames["status"].copy(),
            trigger=frames["trigger"].copy(),
            raw=frames["raw"].astype(np.int32),
            messages=msgs,
        )

    @staticmethod
    def _non_overlapping(start: np.ndarray, length: np.ndarray) -> np.ndarray:
        """Indices of valid frames the walk keeps (a CRC-valid frame nested in another is not)."""
        if start.size < 2 or np.all(start[1:] >= (start + length)[:-1]):
            return np.arange(start.size)
        keep, end = [], -1  # rare path: nested valid frames
        for i, (s, ln) in enumerate(zip(start.tolist(), length.tolist(), strict=True)):
            if s >= end:
                keep.append(i)
                end = s + ln
        return np.asarray(keep, dtype=np.int64)

    def _count_skips(self, start: np.ndarray, end: np.ndarray, cut: int) -> None:
        c = self.counters
        c.bytes_skipped += cut - int(np.sum(end - start))
        if start.size == 0:
            if cut > 0:
                c.resyncs += 0 if self._in_skip else 1
                self._in_skip = True
            return
        gaps = np.empty(start.size + 1, dtype=np.int64)
        gaps[0] = start[0]
        gaps[1:-1] = start[1:] - end[:-1]
        gaps[-1] = cut - end[-1]
        runs = int(np.count_nonzero(gaps > 0))
        if gaps[0] > 0 and self._in_skip:
            runs -= 1  # continues the run the previous feed ended in
        c.resyncs += runs
        self._in_skip = bool(gaps[-1] > 0)

    def _decode(self, arr: np.ndarray, start: np.ndarray, end: np.ndarray) -> ParsedBatch:
        c = self.counters
        c.frames += int(start.size)
        ftype = arr[start + 3] if start.size else np.zeros(0, dtype=np.uint8)
        is_data = ftype == DATA
        msgs = []
        for s, e in zip(start[~is_data].tolist(), end[~is_data].tolist(), strict=True):
            msgs.append(Message(int(arr[s + 3]), arr[s + HEADER_LEN : e - CRC_LEN].tobytes(),
                                int(arr[s + 2])))
        c.foreign_version += sum(m.version != PROTOCOL_VERSION for m in msgs)
        d_start = start[is_data]
        if d_start.size == 0:
            return self._batch([], msgs, arr)
        L = int(end[is_data][0] - d_start[0])
        same = (end[is_data] - d_start) == L  # always true once n_channels is fixed
        d_start = d_start[same]
        rows = arr[d_start[:, None] + np.arange(L)]
        frames = np.ascontiguousarray(rows).view(data_dtype((L - OVERHEAD - DATA_FIXED) // 4))
        frames = frames.reshape(-1)
        c.data_frames += int(frames.size)
        return self._data_batch(frames, msgs)

    def _extend_seq(self, seq32: np.ndarray) -> np.ndarray:
        """Unwrap the u32 counter, count gaps; a backwards step continues the index by one."""
        c = self.counters
        if not self._restart_pending:
            # Common case: each counter one above the last, no wrap inside the batch.
            lst = seq32.tolist()
            first, k = lst[0], len(lst)
            if (self._last_seq32 is None or (first - self._last_seq32) & 0xFFFFFFFF == 1) and (
                lst[-1] - first == k - 1 and (k <= 2 or lst == list(range(first, first + k)))
            ):
                base = self._last_ext + (first if self._last_seq32 is None else 0)
                self._last_seq32 = lst[-1]
                self._last_ext = base + k
                return np.arange(base + 1, base + 1 + k, dtype=np.int64)
        seq32 = seq32.astype(np.int64)
        prev = np.empty_like(seq32)
        prev[1:] = seq32[:-1]
        prev[0] = seq32[0] - 1 if self._last_seq32 is None else self._last_seq32
        step = (seq32 - prev) & 0xFFFFFFFF
        restart = (step == 0) | (step >= 1 << 31)
        if self._restart_pending:
            restart[0] = True
            self._restart_pending = False
            c.seq_restarts -= 1  # announced by the driver, counted there
        gap = ~restart & (step > 1)
        c.seq_gaps += int(np.count_nonzero(gap))
        c.samples_lost += int(np.sum(step[gap] - 1))
        c.seq_restarts += int(np.count_nonzero(restart))
        step = np.where(restart, 1, step)
        if self._last_seq32 is None:
            step[0] = seq32[0] + 1  # the first sample ever: index = its counter
        ext = self._last_ext + np.cumsum(step)
        self._last_seq32 = int(seq32[-1])
        self._last_ext = int(ext[-1])
        return ext

    def _batch(self, _unused: list, msgs: list[Message], arr: np.ndarray) -> ParsedBatch:
        n_ch = self.n_channels or 0
        return ParsedBatch(
            seq=np.zeros(0, dtype=np.int64), t_us=np.zeros(0, dtype=np.int64),
            status=np.zeros(0, dtype=np.uint16), trigger=np.zeros(0, dtype=np.uint8),
            raw=np.zeros((0, n_ch), dtype=np.int32), messages=msgs,
        )


def measure_throughput(n_frames: int = 200_000, chunk: int = 4096, n_channels: int = 5) -> float:
    """Parser throughput in DATA frames per second of process CPU time (one core)."""
    rng = np.random.default_rng(0)
    seq = np.arange(n_frames)
    stream = encode_data(seq, seq * 1000, np.zeros(n_frames, np.uint16),
                         np.zeros(n_frames, np.uint8),
                         rng.integers(-(2**31), 2**31 - 1, (n_frames, n_channels), dtype=np.int32))
    parser = HubParser(n_channels)
    t0 = time.process_time()
    for i in range(0, len(stream), chunk):
        parser.feed(stream[i : i + chunk])
    dt = time.process_time() - t0
    assert parser.counters.data_frames == n_frames
    return n_frames / dt


if __name__ == "__main__":
    for chunk in (430, 4096, 65536):  # ~10 ms at 1 kHz, ~100 ms, ~1.5 s of data per feed
        print(f"chunk {chunk:6d} B: {measure_throughput(chunk=chunk):,.0f} frames/s (one core)")
