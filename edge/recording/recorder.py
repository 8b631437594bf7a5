"""Lossless recorder: every block, frame, marker and state change into one MCAP file.

Acquisition threads call ``write_*``: they only put a reference on a bounded queue and
never block or raise (a full queue drops the item and counts it). One writer thread
encodes, groups messages into a chunk and, at least every ``chunk_period_s``, writes the
chunk, flushes and fsyncs, so a SIGKILL or power cut loses at most the last second.

A write error (disk full, I/O error) sets ``status`` to ``"error: <reason>"``, abandons
the file (its intact chunks stay readable), keeps the unwritten messages (bounded by
``defer_limit_bytes``, beyond that drops and counts) and retries every ``retry_period_s``
in a new segment file ``<stem>.segNNN<suffix>``. The arrays handed over must not be
modified afterwards (drivers build fresh arrays per block).

Camera frames go one of three ways (``camera["store"]``, written into the metadata):
``raw`` (today's: luma bytes, zstd with the chunk), ``lossless`` (whole frames) or
``face`` (face region at full rate, whole frames at ``context_fps``) through a lossless
video codec in the encoder's own thread (``edge.recording.video.CameraEncoder``), which
drops and counts frames when it falls behind and hands encoded messages to this queue.

Low space: before each chunk the free space of the recording's file system is read;
when writing the chunk would leave less than ``min_free_bytes``, the segment is finished
cleanly (summary, footer, fsync), ``status`` says why, and everything after is counted
in ``dropped_low_space``. Acquisition and the spotter go on.

A segment that reaches ``max_segment_bytes`` (2 GiB: under FAT32's 4 GiB file limit)
is finished (summary, footer, fsync) and the next chunk starts a new one. That also
bounds the writer's in-memory chunk index, which otherwise grows for the whole session.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from mcap.writer import CompressionType, IndexType, Writer

from edge.recording.format import (
    BLOCK_ENCODING,
    CAMERA_TOPIC,
    CLOCK_TOPIC,
    CODECS,
    CONTEXT_TOPIC,
    EVENTS_TOPIC,
    FACE_TOPIC,
    FORMAT_VERSION,
    FRAME_ENCODING,
    FRAME_SCHEMA,
    JSON_ENCODING,
    JSON_SCHEMAS,
    JSON_TOPICS,
    MARKERS_TOPIC,
    META_NAME,
    PROFILE,
    STATUS_TOPIC,
    VIDEO_ENCODING,
    VIDEO_SCHEMA,
    VIDEO_STORES,
    Recording,
    block_schema,
    encode_block,
    encode_frame,
    encode_json,
    open_recording,
    segment_path,
    stream_info_to_json,
    stream_topic,
)
from edge.recording.mcap_io import NO_AUTO_CHUNK, ZSTD_LEVEL, open_writer
from sensors.blocks import Frame, Marker, SampleBlock, StreamInfo, monotonic_ns

Opener = Callable[[Path], IO[bytes]]
FreeBytes = Callable[[Path], int]  # free bytes of the file system holding a directory
MIN_FREE_BYTES = 1 << 30  # stop recording with 1 GiB left: the OS, logs, outbox need some


def disk_free_bytes(directory: Path) -> int:
    return int(shutil.disk_usage(directory).free)


@dataclass
class RecorderCounters:
    """Never reset during a session; ``dropped_*`` count what never reached the disk."""

    queued: int = 0
    written_messages: int = 0
    written_bytes: int = 0  # bytes handed to the file (compressed)
    chunks: int = 0
    fsyncs: int = 0
    segments: int = 0
    write_errors: int = 0
    encode_errors: int = 0
    dropped_queue: int = 0  # queue full: the writer fell behind
    dropped_error: int = 0  # deferred data over its bound while the disk failed
    dropped_unknown: int = 0  # block for a stream not declared at open
    dropped_samples: dict[str, int] = field(default_factory=dict)
    dropped_frames: int = 0
    dropped_low_space: int = 0  # after the low-space stop
    queue_high_water: int = 0
    busy_s: float = 0.0  # writer time spent encoding and writing


@dataclass
class _Item:
    kind: str  # "block", "frame", "json"
    topic: str
    obj: Any
    nbytes: int
    enqueued_ns: int


@dataclass
class _Pending:
    topic: str
    log_time: int
    publish_time: int
    sequence: int
    data: bytes


def _default_open(path: Path) -> IO[bytes]:
    return open(path, "xb", buffering=1 << 20)


def _fsync_file(f: IO[bytes]) -> bool:
    try:
        fd = f.fileno()
    except (AttributeError, OSError, ValueError):
        return False  # a stream without a descriptor (tests, pipes)
    os.fsync(fd)
    return True


def _fsync_dir(path: Path) -> None:
    # The new file's directory entry must survive a power cut too.
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _item_weight(obj: Any) -> int:
    if isinstance(obj, SampleBlock):
        return int(obj.raw.nbytes + 29 * len(obj))
    if isinstance(obj, Frame):
        return int(obj.luma.nbytes)
    if isinstance(obj, tuple) and isinstance(obj[0], bytes):
        return len(obj[0])
    return 256


class Recorder:
    """Records sample streams, camera frames, markers and state changes to MCAP."""

    def __init__(
        self,
        path: str | Path,
        streams: list[StreamInfo],
        camera: dict[str, Any] | None = None,
        chunk_period_s: float = 0.5,
        queue_limit: int = 8192,
        queue_bytes_limit: int = 128 * 2**20,
        max_chunk_bytes: int = 16 * 2**20,
        max_segment_bytes: int = 2 * 2**30,
        defer_limit_bytes: int = 128 * 2**20,
        retry_period_s: float = 2.0,
        opener: Opener | None = None,
        compression: str = "zstd",
        face_box: Callable[[], Any] | None = None,
        min_free_bytes: int = MIN_FREE_BYTES,
        free_bytes: FreeBytes | None = None,
        clock_origin: tuple[int, int] | None = None,
    ) -> None:
        self.path = Path(path)
        self.streams = {s.name: s for s in streams}
        self.camera = dict(camera) if camera else None
        store = str((self.camera or {}).get("store", "raw"))
        if store not in CODECS and store not in VIDEO_STORES:
            raise ValueError(f"camera store {store!r}: use one of "
                             f"{sorted([*CODECS, *VIDEO_STORES])}")
        self._store = store
        self._codec = CODECS.get(store, 0)
        candidates: Any = None
        if store in VIDEO_STORES:
            from edge.recording.video import candidates_for

            candidates = candidates_for(str((self.camera or {}).get("codec", "ffv1")))
        self._jpeg_quality = int((self.camera or {}).get("jpeg_quality", 90))
        self.chunk_period_s = float(chunk_period_s)
        self._queue_limit = int(queue_limit)
        self._queue_bytes_limit = int(queue_bytes_limit)
        self._max_chunk_bytes = int(max_chunk_bytes)
        self._max_segment_bytes = int(max_segment_bytes)
        self._defer_limit_bytes = int(defer_limit_bytes)
        self._retry_period_ns = int(retry_period_s * 1e9)
        self._opener = opener or _default_open
        self._compression = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4,
                             "none": CompressionType.NONE}[compression]
        self.counters = RecorderCounters()
        self.status = "ok"
        self._min_free_bytes = int(min_free_bytes)
        self._free_bytes = free_bytes or disk_free_bytes
        self._stopped_low_space = False
        self.free_bytes_last: int | None = None
        self._rate_window: deque[tuple[int, int]] = deque(maxlen=41)  # (t_ns, written)
        self.segments: list[Path] = []
        # (wall ns, host ns) of one instant; an importer passes the session's own.
        self._wall_start_ns, self._mono_start_ns = clock_origin or (time.time_ns(),
                                                                    monotonic_ns())

        self._cond = threading.Condition()
        self._queue: deque[_Item] = deque()
        self._queue_bytes = 0
        self._closing = False
        self._closed = False

        self._file: IO[bytes] | None = None
        self._writer: Writer | None = None
        self._channel_ids: dict[str, int] = {}
        self._sequence: dict[str, int] = {}
        self._pending: list[_Pending] = []
        self._pending_bytes = 0
        self._retry_at_ns = 0
        self._next_segment = 0
        self.last_encode_error = ""

        if self.path.exists():
            raise FileExistsError(f"{self.path}: a recording is never overwritten")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The first segment opens now so a bad path fails at once, not on the first flush.
        self._open_segment()
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()
        self.video: Any = None
        if store in VIDEO_STORES:
            from edge.recording.video import CameraEncoder

            cam = self.camera or {}
            self.video = CameraEncoder(
                store, float(cam.get("fps", 30.0)), self._put_encoded, topic=CAMERA_TOPIC,
                face_topic=FACE_TOPIC, context_topic=CONTEXT_TOPIC, face_box=face_box,
                face_crop=float(cam.get("face_crop", 0.7)),
                context_fps=float(cam.get("context_fps", 2.0)), candidates=candidates)

    # ------------------------------------------------------------ producer side

    def write_block(self, block: SampleBlock) -> bool:
        if block.stream not in self.streams:
            with self._cond:
                self.counters.dropped_unknown += 1
            return False
        return self._put("block", stream_topic(block.stream), block)

    def write_frame(self, frame: Frame) -> bool:
        if self.video is not None:
            if self._stopped_low_space or self._closing:
                with self._cond:
                    self._count_drop(frame, "low_space" if self._stopped_low_space
                                     else "queue")
                return False
            self.video.put(frame)  # the encoder thread; it drops and counts when behind
            return True
        return self._put("frame", CAMERA_TOPIC, frame)

    def _put_encoded(self, topic: str, data: bytes, t_ns: int) -> bool:
        return self._put("encoded", topic, (data, t_ns))

    def write_marker(self, marker: Marker) -> bool:
        return self._put("json", MARKERS_TOPIC,
                         ({"code": int(marker.code), "t_ns": int(marker.t_ns)}, marker.t_ns))

    def write_clock(self, stream: str, state: dict[str, Any], t_ns: int) -> bool:
        return self._put("json", CLOCK_TOPIC,
                         ({"stream": stream, "t_ns": int(t_ns), "state": state}, t_ns))

    def write_status(self, device: str, state: dict[str, Any], t_ns: int) -> bool:
        return self._put("json", STATUS_TOPIC,
                         ({"device": device, "t_ns": int(t_ns), "state": state}, t_ns))

    def write_event(self, kind: str, payload: Any, t_ns: int) -> bool:
        return self._put("json", EVENTS_TOPIC,
                         ({"kind": kind, "t_ns": int(t_ns), "payload": payload}, t_ns))

    def _put(self, kind: str, topic: str, obj: Any) -> bool:
        nbytes = _item_weight(obj)
        with self._cond:
            if self._stopped_low_space:
                self._count_drop(obj, "low_space")
                return False
            if self._closing and kind != "encoded":
                self._count_drop(obj, "queue")
                return False
            if (len(self._queue) >= self._queue_limit
                    or self._queue_bytes + nbytes > self._queue_bytes_limit):
                self._count_drop(obj, "queue")
                return False
            self._queue.append(_Item(kind, topic, obj, nbytes, monotonic_ns()))
            self._queue_bytes += nbytes
            self.counters.queued += 1
            self.counters.queue_high_water = max(self.counters.queue_high_water,
                                                 len(self._queue))
            if self._filling():
                self._cond.notify()
        return True

    def _filling(self) -> bool:
        return (len(self._queue) >= self._queue_limit // 4
                or self._queue_bytes >= self._queue_bytes_limit // 4)

    def _count_drop(self, obj: Any, why: str) -> None:
        c = self.counters
        if why == "queue":
            c.dropped_queue += 1
        elif why == "low_space":
            c.dropped_low_space += 1
        else:
            c.dropped_error += 1
        if isinstance(obj, SampleBlock):
            c.dropped_samples[obj.stream] = c.dropped_samples.get(obj.stream, 0) + len(obj)
        elif isinstance(obj, Frame):
            c.dropped_frames += 1

    def queue_depth(self) -> int:
        return len(self._queue)

    def queue_fill(self) -> float:
        """How full the queue is, 0..1, by items or bytes (whichever is fuller)."""
        return max(len(self._queue) / self._queue_limit,
                   self._queue_bytes / self._queue_bytes_limit)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            d = asdict(self.counters)
            d["dropped_samples"] = dict(self.counters.dropped_samples)
        d["status"] = self.status
        d["queue_depth"] = len(self._queue)
        d["pending_bytes"] = self._pending_bytes
        d["segments_paths"] = [str(p) for p in self.segments]
        busy = self.counters.busy_s
        d["write_mb_per_s"] = round(self.counters.written_bytes / busy / 1e6, 2) if busy else 0.0
        d["store"] = self._store
        if self.video is not None:
            v = self.video.stats()
            d["video"] = v
            d["dropped_frames"] += v["dropped_queue"]
        d["storage"] = self.storage()
        return d

    def storage(self) -> dict[str, Any]:
        """Bytes per second written lately, free space, and hours left at that rate
        before the low-space stop (for ``health``)."""
        w = list(self._rate_window)
        rate = 0.0
        if len(w) >= 2 and w[-1][0] > w[0][0]:
            rate = (w[-1][1] - w[0][1]) / ((w[-1][0] - w[0][0]) / 1e9)
        free = self.free_bytes_last
        left = None
        if free is not None and rate > 0:
            left = round(max(0, free - self._min_free_bytes) / rate / 3600, 2)
        return {"write_bytes_per_s": round(rate, 1),
                "disk_free_mb": None if free is None else round(free / 2**20, 1),
                "hours_left": left, "min_free_mb": round(self._min_free_bytes / 2**20, 1),
                "stopped_low_space": self._stopped_low_space}

    # ------------------------------------------------------------ writer thread

    def _run(self) -> None:
        period_ns = int(self.chunk_period_s * 1e9)
        next_flush_ns = monotonic_ns() + period_ns
        # Drain often (encoding stays smooth) but wake for each put only when filling up.
        drain_ns = min(period_ns, 50_000_000)
        while True:
            with self._cond:
                if not self._closing and not self._filling():
                    wait_ns = min(drain_ns, next_flush_ns - monotonic_ns())
                    self._cond.wait(max(0.0, wait_ns / 1e9))
                items = list(self._queue)
                self._queue.clear()
                self._queue_bytes = 0
                closing = self._closing
            t0 = time.perf_counter()
            try:
                for it in items:
                    self._encode(it)
                    if self._pending_bytes >= self._max_chunk_bytes:
                        self._flush()  # bound chunk size (and memory) when far behind
                now = monotonic_ns()
                if self._pending and (now >= next_flush_ns or closing
                                      or self._pending_bytes >= self._max_chunk_bytes):
                    self._flush()
                if now >= next_flush_ns:
                    next_flush_ns = now + period_ns
            except Exception as exc:  # the recorder must never die silently
                self._fail(exc)
            self.counters.busy_s += time.perf_counter() - t0
            if closing:
                with self._cond:
                    if self._queue:
                        continue
                self._finish()
                return

    def _encode(self, it: _Item) -> None:
        try:
            if it.kind == "block":
                block: SampleBlock = it.obj
                data = encode_block(block)
                log_time = int(block.host_t_ns[0]) if len(block) else it.enqueued_ns
            elif it.kind == "frame":
                frame: Frame = it.obj
                data = encode_frame(frame, self._codec, self._jpeg_quality)
                log_time = int(frame.t_ns)
            elif it.kind == "encoded":
                data, log_time = it.obj
            else:
                obj, t_ns = it.obj
                data = encode_json(obj)
                log_time = int(t_ns)
        except (ValueError, TypeError, IndexError) as exc:
            self.counters.encode_errors += 1
            self.last_encode_error = str(exc)
            return
        if self._writer is None and self._pending_bytes + len(data) > self._defer_limit_bytes:
            with self._cond:
                self._count_drop(it.obj, "error")
            return
        seq = self._sequence.get(it.topic, 0)
        self._sequence[it.topic] = seq + 1
        self._pending.append(_Pending(it.topic, max(0, log_time), it.enqueued_ns, seq, data))
        self._pending_bytes += len(data)

    def _flush(self) -> None:
        """Write the pending messages as one chunk, then flush and fsync."""
        now = monotonic_ns()
        if self._stopped_low_space:
            with self._cond:
                self.counters.dropped_low_space += len(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            return
        if self._writer is None:
            if now < self._retry_at_ns:
                return  # deferred: the disk failed recently
            if not self._open_segment():
                return
        assert self._writer is not None and self._file is not None
        if self._low_space():
            return
        try:
            w = self._writer
            for p in self._pending:
                w.add_message(self._channel_ids[p.topic], p.log_time, p.data,
                              p.publish_time, p.sequence)
            before = self._file.tell() if hasattr(self._file, "tell") else 0
            w.flush()
            if _fsync_file(self._file):
                self.counters.fsyncs += 1
            after = self._file.tell() if hasattr(self._file, "tell") else before
        except OSError as exc:
            self._fail(exc)
            return
        self.counters.written_messages += len(self._pending)
        self.counters.written_bytes += max(0, after - before)
        self.counters.chunks += 1
        self._rate_window.append((now, self.counters.written_bytes))
        self._pending.clear()
        self._pending_bytes = 0
        self.status = "ok"
        if after >= self._max_segment_bytes:
            self._close_segment()  # the next flush opens the next segment

    def _low_space(self) -> bool:
        """Finish cleanly when this chunk would leave less than ``min_free_bytes`` (0: off)."""
        try:
            free = self._free_bytes(self.path.parent)
        except OSError:
            return False  # cannot tell: the write itself will report a full disk
        self.free_bytes_last = free
        if self._min_free_bytes <= 0 or free - self._pending_bytes >= self._min_free_bytes:
            return False
        with self._cond:
            self._stopped_low_space = True
            self.counters.dropped_low_space += len(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        self._close_segment()
        self.status = (f"stopped: low disk space ({free / 2**20:.0f} MiB free, "
                       f"reserve {self._min_free_bytes / 2**20:.0f} MiB)")
        return True

    def _open_segment(self) -> bool:
        path = segment_path(self.path, self._next_segment)
        self._next_segment += 1
        f: IO[bytes] | None = None
        try:
            f = self._opener(path)
            w = open_writer(f, chunk_size=NO_AUTO_CHUNK, compression=self._compression,
                            index_types=IndexType.ALL)
            w.start(profile=PROFILE, library=f"mmme-edge recorder v{FORMAT_VERSION}")
            w.add_metadata(META_NAME, self._metadata())
            ids: dict[str, int] = {}
            for name, info in self.streams.items():
                sid = w.register_schema(f"mmme.SampleBlock/{name}", BLOCK_ENCODING,
                                        block_schema(info))
                ids[stream_topic(name)] = w.register_channel(
                    stream_topic(name), BLOCK_ENCODING, sid,
                    {"stream": name, "stream_info": stream_info_to_json(info),
                     "fs_hz": repr(info.fs_hz)})
            cam_meta = {"camera": json.dumps(self.camera or {})}
            if self._store in VIDEO_STORES:
                sid = w.register_schema("mmme.Video", VIDEO_ENCODING, VIDEO_SCHEMA)
                topics = (CAMERA_TOPIC,) if self._store == "lossless" else (FACE_TOPIC,
                                                                            CONTEXT_TOPIC)
                for topic in topics:
                    ids[topic] = w.register_channel(topic, VIDEO_ENCODING, sid, cam_meta)
            else:
                sid = w.register_schema("mmme.Frame", FRAME_ENCODING, FRAME_SCHEMA)
                ids[CAMERA_TOPIC] = w.register_channel(CAMERA_TOPIC, FRAME_ENCODING, sid,
                                                       cam_meta)
            for topic in JSON_TOPICS:
                schema = JSON_SCHEMAS[topic]
                sid = w.register_schema(schema["title"], "jsonschema",
                                        json.dumps(schema).encode())
                ids[topic] = w.register_channel(topic, JSON_ENCODING, sid)
            f.flush()
            _fsync_file(f)
            _fsync_dir(path)
        except OSError as exc:
            if f is not None:
                with contextlib.suppress(Exception):
                    f.close()
            self._fail(exc, path)
            return False
        self._file, self._writer, self._channel_ids = f, w, ids
        self.segments.append(path)
        self.counters.segments += 1
        return True

    def _metadata(self) -> dict[str, str]:
        return {
            "format_version": str(FORMAT_VERSION),
            "streams": json.dumps([json.loads(stream_info_to_json(s))
                                   for s in self.streams.values()]),
            "camera": json.dumps(self.camera) if self.camera else "",
            "segment": str(self._next_segment - 1),
            "wall_start_ns": str(self._wall_start_ns),
            "mono_start_ns": str(self._mono_start_ns),
        }

    def _fail(self, exc: BaseException, path: Path | None = None) -> None:
        """Abandon the current segment; keep pending data for the next one."""
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        where = f" ({path.name})" if path is not None else ""
        self.status = f"error: {reason}{where}"
        self.counters.write_errors += 1
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()  # a second error here is the same disk failing again
        self._file = None
        self._writer = None
        self._retry_at_ns = monotonic_ns() + self._retry_period_ns

    def _finish(self) -> None:
        if self._pending:
            self._retry_at_ns = 0  # last chance: try a new segment at once
            self._flush()
        if self._pending:
            with self._cond:
                self.counters.dropped_error += len(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
        self._close_segment()

    def _close_segment(self) -> None:
        """Summary, footer, fsync and close of the current segment, if one is open."""
        if self._writer is None or self._file is None:
            return
        try:
            self._writer.finish()
            self._file.flush()
            _fsync_file(self._file)
            self._file.close()
        except OSError as exc:
            self._fail(exc)
        self._file = None
        self._writer = None

    # ------------------------------------------------------------ lifecycle

    def close(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Write what is queued, the summary and the footer; returns ``stats()``."""
        if self.video is not None and not self._closed:
            self.video.close(timeout_s)  # its last messages go into the queue first
        with self._cond:
            if self._closed:
                return self.stats()
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout_s)
        self._closed = True
        return self.stats()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["ZSTD_LEVEL", "Recorder", "RecorderCounters", "Recording", "open_recording"]
