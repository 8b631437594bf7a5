"""The recording format: MCAP channels, message encodings, and the reader.

Why MCAP (and not XDF or HDF5)
------------------------------
A recording made on a wearable must survive a pulled battery or a SIGKILL. MCAP is an
append-only log of records: the writer only ever appends, groups messages into chunks
(compressed with zstd, each with a CRC of its content) and writes the index and summary
at the end. A file cut anywhere is still readable front to back up to its last intact
chunk, without the summary; a complete file is indexed (per-chunk time ranges, per-channel
message offsets, statistics), so a reader can seek by time or topic. Each channel carries
its schema and metadata, so names, units, scale, offset and rates travel inside the file,
and the foxglove / ``mcap`` CLI tooling can list, check and recover files.

- XDF (LSL's format) is also append-only and multi-stream, but has no per-chunk checksums
  or compression, stores samples as per-sample values with per-chunk timestamps only,
  its tooling is Python/Matlab loaders, and image streams are not a first-class use.
- HDF5 is indexed and fast, but its B-tree metadata is rewritten in place: a crash while
  the file is open can corrupt the whole file (SWMR narrows but does not remove this),
  and appending many small variable-sized messages (markers, status dicts) is awkward.

Channels (one MCAP channel each; ``sequence`` counts per channel across segments)
- ``/stream/<name>``: one message per SampleBlock, binary ``mmme-block-v1`` (below); the
  StreamInfo is the channel's ``stream_info`` metadata and the schema data.
- ``/camera``: one message per Frame. Store ``raw``: binary ``mmme-frame-v1``, raw luma
  bytes (lossless, zstd-compressed with the chunk; PNG or JPEG where configured). Store
  ``lossless``: binary ``mmme-video-v1``, every whole frame through a lossless video codec.
- ``/camera/face`` (store ``face``): ``mmme-video-v1``, the face region of every frame,
  lossless, a fixed-size crop whose place in the frame is in each message; and
  ``/camera/context``: ``mmme-video-v1``, whole frames at a low rate (``rig.context_fps``).
  In ``face`` mode ``/camera/face`` is the full-rate camera stream (frame counter, gaps).
- ``/markers``, ``/clock``, ``/status``, ``/events``: JSON objects. An event of kind
  ``ground_truth`` is a coded interval (``onset_ns``, ``apex_ns``, ``offset_ns``,
  ``emotion``, ``kind`` ...), as ``mmme-edge import-mmme`` writes from a coding file.

``mmme-block-v1``: a 12-byte header ``<4sBBHI`` (b"MMB1", version 1, reserved, n_channels,
n_samples), then little-endian arrays: index int64[n], device_t int64[n], host_t_ns
int64[n], raw int32[n, n_channels] (row-major, the device counts bit-exact),
status uint32[n], trigger uint8[n]. Physical values are ``raw * scale + offset``.

``mmme-frame-v1``: a 28-byte header ``<4sBBBBqqHH`` (b"MMF1", version 1, codec 0 raw /
1 png / 2 jpeg, trigger, reserved, seq, t_ns, height, width), then the image bytes.

``mmme-video-v1``: a 38-byte header ``<4sBBBBqqHHHHHHH`` (b"MMV1", version 1, codec
1 FFV1 / 2 H.264 / 3 HEVC, flags (bit 0 keyframe, bit 1 the face box came from the
tracker), trigger, seq, t_ns, frame height, frame width, x, y, height, width of the
region this image is (the whole frame: 0, 0, frame height, frame width), n = length of
the codec's extradata), then n bytes of extradata (on keyframes), then one packet of the
codec's bitstream. Every keyframe message is self-contained; FFV1 is written with every
frame a keyframe, so each message decodes alone. Inter codecs (x264 lossless, NVENC) put
a keyframe at least every 0.5 s: a reader decodes a topic in order from its last
keyframe, and after a gap in the channel's message sequence (a damaged chunk) waits for
the next one. Why not
Foxglove's ``CompressedVideo``: its formats are h264/h265/vp9/av1 (no FFV1), and it has
no place for the frame counter, trigger or the face region's position.

A recording is one file, plus ``<stem>.segNNN<suffix>`` files when the recorder had to
reopen after a write error or a segment reached its size limit; the reader joins them
and drops repeated messages by (channel, sequence).
"""

from __future__ import annotations

import itertools
import json
import re
import struct
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mcap.exceptions import McapError
from mcap.records import Channel, Chunk, Footer, Header, Message, Metadata, Schema
from mcap.stream_reader import StreamReader, breakup_chunk

from sensors.blocks import Frame, Marker, SampleBlock, StreamInfo

FORMAT_VERSION = 1
PROFILE = "mmme"
META_NAME = "mmme.recording"

BLOCK_ENCODING = "mmme-block-v1"
FRAME_ENCODING = "mmme-frame-v1"
VIDEO_ENCODING = "mmme-video-v1"
JSON_ENCODING = "json"

CAMERA_TOPIC = "/camera"
FACE_TOPIC = "/camera/face"
CONTEXT_TOPIC = "/camera/context"
MARKERS_TOPIC = "/markers"
CLOCK_TOPIC = "/clock"
STATUS_TOPIC = "/status"
EVENTS_TOPIC = "/events"
JSON_TOPICS = (MARKERS_TOPIC, CLOCK_TOPIC, STATUS_TOPIC, EVENTS_TOPIC)

_BLOCK_HEADER = struct.Struct("<4sBBHI")
_BLOCK_MAGIC = b"MMB1"
_FRAME_HEADER = struct.Struct("<4sBBBBqqHH")
_FRAME_MAGIC = b"MMF1"

_VIDEO_HEADER = struct.Struct("<4sBBBBqqHHHHHHH")
_VIDEO_MAGIC = b"MMV1"

CODEC_RAW, CODEC_PNG, CODEC_JPEG = 0, 1, 2
CODECS = {"raw": CODEC_RAW, "png": CODEC_PNG, "jpeg": CODEC_JPEG}
VIDEO_STORES = ("lossless", "face")  # through a lossless video codec (edge.recording.video)
VIDEO_FFV1, VIDEO_H264, VIDEO_HEVC = 1, 2, 3


class RecordingError(ValueError):
    """The file is missing, not a recording, or holds nothing readable."""


# ---------------------------------------------------------------- topics and metadata


def stream_topic(name: str) -> str:
    return f"/stream/{name}"


def stream_info_to_json(info: StreamInfo) -> str:
    return json.dumps(asdict(info), sort_keys=True)


def stream_info_from_json(text: str) -> StreamInfo:
    d = json.loads(text)
    return StreamInfo(
        name=d["name"], fs_hz=float(d["fs_hz"]), channels=tuple(d["channels"]),
        units=tuple(d["units"]), scale=tuple(float(x) for x in d["scale"]),
        offset=tuple(float(x) for x in d["offset"]), device_time_unit=d["device_time_unit"],
        status_layout=str(d.get("status_layout", "")),  # files before it: says nothing
    )


def block_schema(info: StreamInfo) -> bytes:
    """Schema data of a stream channel: the layout in words plus the StreamInfo."""
    return json.dumps({
        "layout": "header <4sBBHI then int64 index, int64 device_t, int64 host_t_ns, "
                  "int32 raw[n, n_channels], uint32 status, uint8 trigger (little-endian)",
        "stream_info": asdict(info),
    }, sort_keys=True).encode()


FRAME_SCHEMA = json.dumps({
    "layout": "header <4sBBBBqqHH (magic, version, codec 0 raw/1 png/2 jpeg, trigger, "
              "reserved, seq, t_ns, height, width) then image bytes",
}).encode()

VIDEO_SCHEMA = json.dumps({
    "layout": "header <4sBBBBqqHHHHHHH (magic MMV1, version, codec 1 ffv1/2 h264/3 hevc, "
              "flags bit0 keyframe bit1 tracked, trigger, seq, t_ns, frame height, frame "
              "width, x, y, height, width, extradata length) then extradata then one packet",
}).encode()

JSON_SCHEMAS: dict[str, dict[str, Any]] = {
    MARKERS_TOPIC: {"type": "object", "title": "mmme.Marker",
                    "properties": {"code": {"type": "integer"}, "t_ns": {"type": "integer"}}},
    CLOCK_TOPIC: {"type": "object", "title": "mmme.ClockUpdate",
                  "properties": {"stream": {"type": "string"}, "t_ns": {"type": "integer"},
                                 "state": {"type": "object"}}},
    STATUS_TOPIC: {"type": "object", "title": "mmme.DeviceStatus",
                   "properties": {"device": {"type": "string"}, "t_ns": {"type": "integer"},
                                  "state": {"type": "object"}}},
    EVENTS_TOPIC: {"type": "object", "title": "mmme.Event",
                   "properties": {"kind": {"type": "string"}, "t_ns": {"type": "integer"},
                                  "payload": {}}},
}


def segment_path(path: Path, k: int) -> Path:
    """Segment 0 is ``path`` itself; later ones sit beside it as ``stem.segNNN.suffix``."""
    return path if k == 0 else path.with_name(f"{path.stem}.seg{k:03d}{path.suffix}")


def segment_paths(path: Path) -> list[Path]:
    pat = re.compile(re.escape(path.stem) + r"\.seg(\d{3,})" + re.escape(path.suffix) + "$")
    extra = sorted(
        (int(m.group(1)), p) for p in path.parent.glob(f"{path.stem}.seg*{path.suffix}")
        if (m := pat.match(p.name))
    )
    first = [path] if path.exists() else []
    return first + [p for _, p in extra]


# ---------------------------------------------------------------- encodings


def encode_block(block: SampleBlock) -> bytes:
    n = len(block)
    raw = np.ascontiguousarray(block.raw, dtype="<i4")
    if raw.ndim != 2 or raw.shape[0] != n:
        raise ValueError(f"block {block.stream}: raw shape {raw.shape} for {n} samples")
    return b"".join((
        _BLOCK_HEADER.pack(_BLOCK_MAGIC, FORMAT_VERSION, 0, raw.shape[1], n),
        np.ascontiguousarray(block.index, dtype="<i8").tobytes(),
        np.ascontiguousarray(block.device_t, dtype="<i8").tobytes(),
        np.ascontiguousarray(block.host_t_ns, dtype="<i8").tobytes(),
        raw.tobytes(),
        np.ascontiguousarray(block.status, dtype="<u4").tobytes(),
        np.ascontiguousarray(block.trigger, dtype="u1").tobytes(),
    ))


@dataclass
class BlockArrays:
    """One decoded block: views into the message bytes (no copy)."""

    index: np.ndarray
    device_t: np.ndarray
    host_t_ns: np.ndarray
    raw: np.ndarray
    status: np.ndarray
    trigger: np.ndarray


def decode_block(data: bytes) -> BlockArrays:
    magic, version, _, n_ch, n = _BLOCK_HEADER.unpack_from(data, 0)
    if magic != _BLOCK_MAGIC or version != FORMAT_VERSION:
        raise ValueError(f"not a block message (magic {magic!r}, version {version})")
    need = _BLOCK_HEADER.size + n * (8 * 3 + 4 * n_ch + 4 + 1)
    if len(data) != need:
        raise ValueError(f"block message is {len(data)} bytes, expected {need}")
    off = _BLOCK_HEADER.size

    def take(dtype: str, count: int) -> np.ndarray:
        nonlocal off
        a = np.frombuffer(data, dtype=dtype, count=count, offset=off)
        off += a.nbytes
        return a

    index, device_t, host_t_ns = take("<i8", n), take("<i8", n), take("<i8", n)
    raw = take("<i4", n * n_ch).reshape(n, n_ch)
    return BlockArrays(index, device_t, host_t_ns, raw, take("<u4", n), take("u1", n))


def encode_frame(frame: Frame, codec: int = CODEC_RAW, jpeg_quality: int = 90) -> bytes:
    luma = np.ascontiguousarray(frame.luma, dtype=np.uint8)
    if luma.ndim != 2:
        raise ValueError(f"frame {frame.seq}: luma must be 2-D, got shape {luma.shape}")
    h, w = luma.shape
    if codec == CODEC_RAW:
        payload: bytes | memoryview = memoryview(luma).cast("B")  # copied once, by the join
    else:
        import cv2  # only when a compressed store is configured

        ext, params = (".png", [cv2.IMWRITE_PNG_COMPRESSION, 1]) if codec == CODEC_PNG else (
            ".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        ok, buf = cv2.imencode(ext, luma, params)
        if not ok:
            raise ValueError(f"frame {frame.seq}: {ext} encoding failed")
        payload = buf.tobytes()
    head = _FRAME_HEADER.pack(_FRAME_MAGIC, FORMAT_VERSION, codec, int(frame.trigger) & 0xFF,
                              0, int(frame.seq), int(frame.t_ns), h, w)
    return b"".join((head, payload))


@dataclass(frozen=True)
class FrameHeader:
    seq: int
    t_ns: int
    trigger: int
    codec: int
    height: int
    width: int


def decode_frame_header(data: bytes) -> FrameHeader:
    magic, version, codec, trigger, _, seq, t_ns, h, w = _FRAME_HEADER.unpack_from(data, 0)
    if magic != _FRAME_MAGIC or version != FORMAT_VERSION:
        raise ValueError(f"not a frame message (magic {magic!r}, version {version})")
    return FrameHeader(seq, t_ns, trigger, codec, h, w)


def decode_frame(data: bytes) -> Frame:
    hd = decode_frame_header(data)
    payload = memoryview(data)[_FRAME_HEADER.size:]
    if hd.codec == CODEC_RAW:
        luma = np.frombuffer(payload, dtype=np.uint8).reshape(hd.height, hd.width)
    else:
        import cv2

        luma = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_GRAYSCALE)
        if luma is None or luma.shape != (hd.height, hd.width):
            raise ValueError(f"frame {hd.seq}: image payload does not decode")
    return Frame(seq=hd.seq, t_ns=hd.t_ns, luma=luma, trigger=hd.trigger)


@dataclass(frozen=True)
class VideoHeader:
    """One encoded image: which frame, which region of it, which codec."""

    seq: int
    t_ns: int
    trigger: int
    codec: int
    keyframe: bool
    tracked: bool
    frame_height: int
    frame_width: int
    x: int
    y: int
    height: int
    width: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """x, y, width, height of the region in frame pixels."""
        return self.x, self.y, self.width, self.height


@dataclass(frozen=True)
class VideoImage:
    """A decoded image of a video topic: a whole frame or the face region of one."""

    header: VideoHeader
    luma: np.ndarray  # (height, width) uint8

    def as_frame(self) -> Frame:
        hd = self.header
        return Frame(seq=hd.seq, t_ns=hd.t_ns, luma=self.luma, trigger=hd.trigger)


def encode_video(hd: VideoHeader, packet: bytes, extradata: bytes = b"") -> bytes:
    flags = (1 if hd.keyframe else 0) | (2 if hd.tracked else 0)
    head = _VIDEO_HEADER.pack(_VIDEO_MAGIC, FORMAT_VERSION, hd.codec, flags, hd.trigger & 0xFF,
                              hd.seq, hd.t_ns, hd.frame_height, hd.frame_width, hd.x, hd.y,
                              hd.height, hd.width, len(extradata))
    return b"".join((head, extradata, packet))


def decode_video(data: bytes) -> tuple[VideoHeader, bytes, memoryview]:
    """Header, extradata (empty unless a keyframe carries it) and the codec packet."""
    (magic, version, codec, flags, trigger, seq, t_ns, fh, fw, x, y, h, w,
     n_extra) = _VIDEO_HEADER.unpack_from(data, 0)
    if magic != _VIDEO_MAGIC or version != FORMAT_VERSION:
        raise ValueError(f"not a video message (magic {magic!r}, version {version})")
    if x + w > fw or y + h > fh or len(data) < _VIDEO_HEADER.size + n_extra:
        raise ValueError(f"video message {seq}: region or length does not fit")
    hd = VideoHeader(seq, t_ns, trigger, codec, bool(flags & 1), bool(flags & 2), fh, fw,
                     x, y, h, w)
    off = _VIDEO_HEADER.size
    return hd, bytes(data[off:off + n_extra]), memoryview(data)[off + n_extra:]


class VideoTopicDecoder:
    """Decodes one video topic in recorded order. A message that cannot be decoded (a
    damaged or missing keyframe before it) is counted in ``bad`` and skipped up to the
    next keyframe; the decoder is rebuilt when a keyframe brings new parameters.

    ``sequence`` is the MCAP channel's message sequence (contiguous per topic): a jump
    means messages are missing (a damaged chunk skipped), so an inter codec's frames up
    to the next keyframe would decode against the wrong reference and are skipped."""

    def __init__(self) -> None:
        self._dec: Any = None
        self._extradata = b""
        self._waiting: dict[int, VideoHeader] = {}
        self._need_key = True
        self._last_sequence: int | None = None
        self.bad = 0

    def decode(self, data: bytes, sequence: int | None = None) -> list[VideoImage]:
        from edge.recording.video import VideoDecoder  # PyAV only for video recordings

        hd, extradata, packet = decode_video(data)
        if (sequence is not None and self._last_sequence is not None
                and sequence != self._last_sequence + 1):
            self._need_key = True
        if sequence is not None:
            self._last_sequence = sequence
        if hd.keyframe:
            extradata = extradata or self._extradata
            key = (hd.codec, hd.width, hd.height, extradata)
            if self._dec is None or self._dec.key != key:
                self._dec = VideoDecoder(hd, extradata)
                self._waiting.clear()
            self._extradata = extradata
            self._need_key = False
        elif self._need_key or self._dec is None:
            self.bad += 1
            return []
        self._waiting[hd.seq] = hd
        try:
            out = self._dec.decode(hd, packet)
        except Exception:  # a damaged packet: wait for the next keyframe
            self.bad += 1
            self._waiting.pop(hd.seq, None)
            self._need_key = True
            return []
        return self._images(out)

    def flush(self) -> list[VideoImage]:
        if self._dec is None:
            return []
        try:
            return self._images(self._dec.flush())
        except Exception:
            return []

    def _images(self, out: list[tuple[int, np.ndarray]]) -> list[VideoImage]:
        imgs = []
        for pts, luma in out:
            hd = self._waiting.pop(pts, None)
            if hd is not None and luma.shape == (hd.height, hd.width):
                imgs.append(VideoImage(hd, luma))
            elif hd is not None:
                self.bad += 1
        return imgs


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)  # never fail a recording over an odd value


def encode_json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, default=_json_default, separators=(",", ":")).encode()


# ---------------------------------------------------------------- reading


@dataclass
class StreamData:
    """One sample stream, all blocks joined in recorded order."""

    info: StreamInfo
    index: np.ndarray
    device_t: np.ndarray
    host_t_ns: np.ndarray
    raw: np.ndarray
    trigger: np.ndarray
    status: np.ndarray

    @property
    def values(self) -> np.ndarray:
        scale = np.asarray(self.info.scale, dtype=np.float64)
        return self.raw.astype(np.float64) * scale + np.asarray(self.info.offset, np.float64)

    def __len__(self) -> int:
        return int(self.index.shape[0])


@dataclass
class SegmentReport:
    path: Path
    complete: bool = False  # the footer was reached
    intact_bytes: int = 0  # file offset after the last record read whole
    stop_reason: str = ""
    bad_chunks: int = 0


@dataclass
class Recording:
    path: Path
    segments: list[SegmentReport]
    meta: dict[str, Any]
    streams: dict[str, StreamData]
    camera: dict[str, Any] | None
    frame_seq: np.ndarray
    frame_t_ns: np.ndarray
    frame_trigger: np.ndarray
    frames: list[Frame] | None
    markers: list[Marker]
    clock: list[dict[str, Any]]
    status: list[dict[str, Any]]
    events: list[dict[str, Any]]
    bad_messages: int = 0
    problems: list[str] = field(default_factory=list)
    # Store "face": the decoded face regions (their headers hold each region's box) and
    # the whole frames kept at the context rate. frame_seq / frame_t_ns above are then
    # the face stream's (the full-rate one).
    faces: list[VideoImage] | None = None
    context: list[Frame] | None = None
    face_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))

    @property
    def complete(self) -> bool:
        return bool(self.segments) and all(s.complete for s in self.segments)


@dataclass
class RawMessage:
    topic: str
    channel: Channel
    message: Message


class _Position:
    """Counts bytes read so a truncated file reports where its intact data ends."""

    def __init__(self, f: Any) -> None:
        self._f = f
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.pos += len(data)
        return data


def _iter_segment(path: Path, report: SegmentReport, meta: dict[str, Any],
                  ) -> Iterator[RawMessage]:
    """Messages of one file in file order; stops cleanly at the first torn record."""
    size = path.stat().st_size
    channels: dict[int, Channel] = {}
    with open(path, "rb") as fh:
        pos = _Position(fh)
        records = StreamReader(pos, emit_chunks=True, record_size_limit=max(size, 1)).records
        first = True
        while True:
            try:
                rec = next(records)
            except StopIteration:
                break
            except (McapError, struct.error, ValueError, OSError, MemoryError) as exc:
                if first:
                    raise RecordingError(f"{path.name}: not an MCAP recording ({exc})") from None
                report.stop_reason = f"truncated or torn after byte {report.intact_bytes}"
                break
            first = False
            report.intact_bytes = pos.pos
            if isinstance(rec, Header):
                if rec.profile != PROFILE:
                    raise RecordingError(f"{path.name}: MCAP profile {rec.profile!r}, "
                                         f"not an mmme recording")
                continue
            if isinstance(rec, Metadata) and rec.name == META_NAME and not meta:
                meta.update(rec.metadata)
            elif isinstance(rec, Footer):
                report.complete = True
                break
            if isinstance(rec, Chunk):
                try:
                    inner = breakup_chunk(rec, validate_crc=True)
                except Exception:  # CRC, zstd or record errors: the chunk is damaged
                    report.bad_chunks += 1  # skip it and keep reading the rest of the file
                    continue
            else:
                inner = [rec]
            for r in inner:
                if isinstance(r, Channel):
                    channels[r.id] = r
                elif isinstance(r, Message) and r.channel_id in channels:
                    ch = channels[r.channel_id]
                    yield RawMessage(ch.topic, ch, r)
                elif isinstance(r, Schema):
                    pass


def iter_messages(path: str | Path, reports: list[SegmentReport] | None = None,
                  meta: dict[str, Any] | None = None) -> Iterator[RawMessage]:
    """Every message of a recording (all segments) once, in recorded order."""
    path = Path(path)
    segs = segment_paths(path)
    if not segs:
        raise RecordingError(f"{path}: no such recording")
    reports = [] if reports is None else reports
    meta = {} if meta is None else meta
    last_seq: dict[str, int] = {}
    readable = 0
    for seg in segs:
        rep = SegmentReport(seg)
        reports.append(rep)
        try:
            for m in _iter_segment(seg, rep, meta):
                # A chunk re-sent after a write error may already be in the previous segment.
                if m.message.sequence <= last_seq.get(m.topic, -1):
                    continue
                last_seq[m.topic] = m.message.sequence
                yield m
            readable += 1
        except RecordingError as exc:
            rep.stop_reason = str(exc)
            if seg == path and len(segs) == 1:
                raise
    if readable == 0:
        raise RecordingError(f"{path}: no readable segment ({reports[0].stop_reason})")


def iter_video(path: str | Path, topic: str) -> Iterator[VideoImage]:
    """Decoded images of one ``mmme-video-v1`` topic, in recorded order."""
    dec = VideoTopicDecoder()
    for m in iter_messages(path):
        if m.topic == topic and m.channel.message_encoding == VIDEO_ENCODING:
            try:
                yield from dec.decode(m.message.data, m.message.sequence)
            except ValueError:
                continue
    yield from dec.flush()


def iter_frames(path: str | Path) -> Iterator[Frame]:
    """Whole camera frames one at a time (a long session does not fit in memory): the
    ``/camera`` topic, raw or lossless video; in ``face`` mode, the context frames."""
    dec = VideoTopicDecoder()
    for m in iter_messages(path):
        if m.topic not in (CAMERA_TOPIC, CONTEXT_TOPIC):
            continue
        try:
            if m.channel.message_encoding == VIDEO_ENCODING:
                for img in dec.decode(m.message.data, m.message.sequence):
                    yield img.as_frame()
            else:
                yield decode_frame(m.message.data)
        except ValueError:
            continue
    for img in dec.flush():
        yield img.as_frame()


def iter_full_rate_frames(path: str | Path) -> Iterator[Frame]:
    """Whole frames at the recorded rate, for a replay: a ``raw`` or ``lossless`` store's
    frames as recorded; in ``face`` mode each face region pasted at its box onto the newest
    context frame at or before it (mid-grey before the first). The face is then bit-exact
    at full rate, the rest up to one context period old, and a frame that was itself a
    context frame is whole and bit-exact."""
    faces = iter_video(path, FACE_TOPIC)
    first = next(faces, None)
    if first is None:
        yield from iter_frames(path)
        return
    contexts = iter_video(path, CONTEXT_TOPIC)  # a second reader of the same file
    upcoming = next(contexts, None)
    backdrop: np.ndarray | None = None
    for img in itertools.chain((first,), faces):
        hd = img.header
        while upcoming is not None and upcoming.header.t_ns <= hd.t_ns:
            backdrop = upcoming.luma
            upcoming = next(contexts, None)
        size = (hd.frame_height, hd.frame_width)
        luma = (backdrop.copy() if backdrop is not None and backdrop.shape == size
                else np.full(size, 128, np.uint8))
        luma[hd.y:hd.y + hd.height, hd.x:hd.x + hd.width] = img.luma
        yield Frame(seq=hd.seq, t_ns=hd.t_ns, luma=luma, trigger=hd.trigger)


def _cat(parts: list[np.ndarray], dtype: str, shape_tail: tuple[int, ...] = ()) -> np.ndarray:
    if not parts:
        return np.zeros((0, *shape_tail), dtype=dtype)
    return np.concatenate(parts).astype(dtype, copy=False)


def open_recording(path: str | Path, frames: bool = True) -> Recording:
    """Read a recording, complete or cut short (SIGKILL, power cut, disk full).

    A complete file and a truncated one take the same path: records are read front to
    back and reading stops at the first torn record, so everything in intact chunks is
    returned. ``frames=False`` keeps only frame headers (seq, t_ns, trigger).
    Raises RecordingError for a missing file or one that is not a recording.
    """
    path = Path(path)
    reports: list[SegmentReport] = []
    meta: dict[str, Any] = {}
    parts: dict[str, dict[str, list[np.ndarray]]] = {}
    infos: dict[str, StreamInfo] = {}
    fseq: list[int] = []
    ft: list[int] = []
    ftrig: list[int] = []
    frame_list: list[Frame] = []
    markers: list[Marker] = []
    dicts: dict[str, list[dict[str, Any]]] = {t: [] for t in JSON_TOPICS}
    decoders = {t: VideoTopicDecoder() for t in (CAMERA_TOPIC, FACE_TOPIC, CONTEXT_TOPIC)}
    faces: list[VideoImage] = []
    context: list[Frame] = []
    boxes: list[tuple[int, int, int, int]] = []
    bad = 0
    for m in iter_messages(path, reports, meta):
        data = m.message.data
        try:
            if m.channel.message_encoding == BLOCK_ENCODING:
                name = m.channel.metadata.get("stream", m.topic.rsplit("/", 1)[-1])
                if name not in infos:
                    infos[name] = stream_info_from_json(m.channel.metadata["stream_info"])
                    parts[name] = {k: [] for k in
                                   ("index", "device_t", "host_t_ns", "raw", "trigger", "status")}
                b = decode_block(data)
                p = parts[name]
                for k in p:
                    p[k].append(getattr(b, k))
            elif m.channel.message_encoding == VIDEO_ENCODING:
                vh = decode_video(data)[0]
                if m.topic in (CAMERA_TOPIC, FACE_TOPIC):  # the full-rate stream
                    fseq.append(vh.seq)
                    ft.append(vh.t_ns)
                    ftrig.append(vh.trigger)
                if m.topic == FACE_TOPIC:
                    boxes.append(vh.box)
                if frames and m.topic in decoders:
                    imgs = decoders[m.topic].decode(data, m.message.sequence)
                    if m.topic == CAMERA_TOPIC:
                        frame_list += [i.as_frame() for i in imgs]
                    elif m.topic == FACE_TOPIC:
                        faces += imgs
                    else:
                        context += [i.as_frame() for i in imgs]
            elif m.topic == CAMERA_TOPIC:
                hd = decode_frame_header(data)
                fseq.append(hd.seq)
                ft.append(hd.t_ns)
                ftrig.append(hd.trigger)
                if frames:
                    frame_list.append(decode_frame(data))
            elif m.topic in dicts:
                obj = json.loads(data)
                if m.topic == MARKERS_TOPIC:
                    markers.append(Marker(code=int(obj["code"]), t_ns=int(obj["t_ns"])))
                else:
                    dicts[m.topic].append(obj)
        except (ValueError, KeyError, TypeError):
            bad += 1
    if frames:
        frame_list += [i.as_frame() for i in decoders[CAMERA_TOPIC].flush()]
        faces += decoders[FACE_TOPIC].flush()
        context += [i.as_frame() for i in decoders[CONTEXT_TOPIC].flush()]
    bad += sum(d.bad for d in decoders.values())
    # Streams declared in the metadata but with no intact block still appear, empty.
    for text in json.loads(meta.get("streams", "[]")):
        info = stream_info_from_json(json.dumps(text))
        infos.setdefault(info.name, info)
    streams: dict[str, StreamData] = {}
    for name, info in infos.items():
        p = parts.get(name, {})
        nch = len(info.channels)
        streams[name] = StreamData(
            info=info,
            index=_cat(p.get("index", []), "int64"),
            device_t=_cat(p.get("device_t", []), "int64"),
            host_t_ns=_cat(p.get("host_t_ns", []), "int64"),
            raw=_cat(p.get("raw", []), "int32", (nch,)),
            trigger=_cat(p.get("trigger", []), "uint8"),
            status=_cat(p.get("status", []), "uint32"),
        )
    camera = json.loads(meta["camera"]) if meta.get("camera") else None
    problems = [f"{r.path.name}: {r.stop_reason}" for r in reports if r.stop_reason]
    problems += [f"{r.path.name}: {r.bad_chunks} damaged chunks skipped"
                 for r in reports if r.bad_chunks]
    return Recording(
        path=path, segments=reports, meta=meta, streams=streams, camera=camera,
        frame_seq=np.asarray(fseq, dtype=np.int64), frame_t_ns=np.asarray(ft, dtype=np.int64),
        frame_trigger=np.asarray(ftrig, dtype=np.uint8),
        frames=frame_list if frames else None, markers=markers,
        clock=dicts[CLOCK_TOPIC], status=dicts[STATUS_TOPIC], events=dicts[EVENTS_TOPIC],
        bad_messages=bad, problems=problems,
        faces=faces if frames else None, context=context if frames else None,
        face_boxes=np.asarray(boxes, np.int64).reshape(-1, 4),
    )


__all__ = [
    "BLOCK_ENCODING", "CAMERA_TOPIC", "CLOCK_TOPIC", "CONTEXT_TOPIC", "EVENTS_TOPIC",
    "FACE_TOPIC", "FRAME_ENCODING", "MARKERS_TOPIC", "STATUS_TOPIC", "VIDEO_ENCODING",
    "Recording", "RecordingError", "SegmentReport", "StreamData", "VideoHeader",
    "VideoImage", "VideoTopicDecoder", "decode_block", "decode_frame", "decode_video",
    "encode_block", "encode_frame", "encode_video", "iter_frames", "iter_full_rate_frames",
    "iter_messages", "iter_video", "open_recording", "segment_path", "segment_paths",
]
