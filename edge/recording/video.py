"""Lossless camera video: codec choice, encoder, decoder, and the encoding thread.

Why FFV1 (software) and what else is tried first
-------------------------------------------------
Measured on 200 simulated 640x480 grey frames, one thread of the (loaded) dev VM: FFV1
(Golomb coder, every frame a keyframe) 2.15x at ~210 fps; its range coder 2.11x at 126
fps; x264 ``qp=0`` ``ultrafast`` 1.96x at ~490 fps; zstd level 1 (the ``raw`` store)
1.14x. On the 272x336 face crop: FFV1 2.07x at ~790 fps, x264 1.91x at ~1700 fps. Both
round-trip bit-exact (x264's decoder hands back 4:2:0 with the luma intact). FFV1 is
intra-only at ``gop_size=1``: every message decodes alone, so a crash, a torn chunk or a
frame the encoder dropped never costs another frame, and keyframes cost nothing (2.15x vs
2.16x at a GOP of 100). x264 (``rig.video_codec``) takes half the CPU per frame, which is
what a 2-core board's ``face`` store needs; its keyframes come every ``KEYFRAME_S``.

Hardware first: where the board has an encoder that can be lossless and PyAV's FFmpeg
can drive it (NVENC, ``hevc_nvenc`` / ``h264_nvenc`` with ``tune=lossless``), it is
opened at run time; when it cannot open (no GPU, no driver) the next candidate is
tried, FFV1 last. NVENC takes 4:2:0, so the grey frame goes in as luma with flat
chroma and comes back bit-exact in its luma plane. Those are inter codecs: a keyframe
every ``KEYFRAME_S`` so a reader of a cut file decodes from the last keyframe.
(Not tested here: this machine has no NVIDIA GPU. A Jetson's encoder is not NVENC's
desktop API: PyAV's FFmpeg has no ``*_nvmpi`` encoders, so a Jetson falls back to FFV1.)

The encoding thread (:class:`CameraEncoder`) takes frames from the recorder through a
bounded queue sized in time; when encoding falls behind, the oldest frames are dropped
from the recording and counted. The spotter gets its frames elsewhere and never waits.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from edge.queues import DropQueue
from edge.recording.format import (
    VIDEO_FFV1,
    VIDEO_H264,
    VIDEO_HEVC,
    VideoHeader,
    encode_video,
)
from sensors.blocks import Frame

KEYFRAME_S = 0.5  # inter codecs: a keyframe at least this often (the recorder's chunk period)
# Pixels per second one FFV1 thread keeps up with, with headroom (this VM: ~65 M/s).
PX_PER_S_PER_THREAD = 40e6

Box = tuple[float, float, float, float]  # x, y, w, h in frame pixels


@dataclass(frozen=True)
class CodecChoice:
    """One way to encode losslessly: the FFmpeg encoder, its decoder and options."""

    name: str
    decoder: str
    codec_id: int  # written into each message (format.VIDEO_*)
    pix_fmt: str  # "gray", or "yuv420p" (luma plus flat chroma: luma stays bit-exact)
    options: dict[str, str] = field(default_factory=dict)
    intra_only: bool = False

    @property
    def hardware(self) -> bool:
        return self.name.endswith("_nvenc")


FFV1 = CodecChoice("ffv1", "ffv1", VIDEO_FFV1, "gray", intra_only=True)
# x264 lossless (qp 0): about 2x FFV1's speed for ~8 % more bytes; an inter codec, so
# it also runs here the keyframe path NVENC would take on a board.
X264 = CodecChoice("libx264", "h264", VIDEO_H264, "gray",
                   {"qp": "0", "preset": "ultrafast", "tune": "zerolatency"})
SOFTWARE = {"ffv1": FFV1, "x264": X264}
NVENC = (
    CodecChoice("hevc_nvenc", "hevc", VIDEO_HEVC, "yuv420p",
                {"preset": "p1", "tune": "lossless", "bf": "0"}),
    CodecChoice("h264_nvenc", "h264", VIDEO_H264, "yuv420p",
                {"preset": "p1", "tune": "lossless", "bf": "0"}),
)
CANDIDATES = (*NVENC, FFV1)  # hardware first, the software codec always last
DECODERS = {c.codec_id: c for c in (*NVENC, FFV1)}  # h264 decodes x264's and NVENC's alike


def candidates_for(software: str) -> tuple[CodecChoice, ...]:
    """NVENC where it opens, then the configured software codec (``ffv1`` or ``x264``)."""
    if software not in SOFTWARE:
        raise ValueError(f"video codec {software!r}: use one of {sorted(SOFTWARE)}")
    return (*NVENC, SOFTWARE[software])


@dataclass
class Packet:
    pts: int
    keyframe: bool
    data: bytes


def _threads_for(width: int, height: int, fps: float) -> int:
    return max(1, min(2, math.ceil(width * height * fps / PX_PER_S_PER_THREAD)))


class VideoEncoder:
    """One PyAV encoder of grey frames of a fixed size."""

    def __init__(self, choice: CodecChoice, width: int, height: int, fps: float) -> None:
        import av  # only where a video store is configured

        self.choice, self.width, self.height = choice, int(width), int(height)
        cc = av.CodecContext.create(choice.name, "w")
        cc.width, cc.height, cc.pix_fmt = self.width, self.height, choice.pix_fmt
        cc.time_base = Fraction(1, max(1, round(fps)))
        cc.gop_size = 1 if choice.intra_only else max(1, round(fps * KEYFRAME_S))
        opts = dict(choice.options)
        threads = _threads_for(self.width, self.height, fps) if choice.intra_only else 1
        if threads > 1:  # FFV1 threads over slices, which need version 3
            opts.update({"level": "3", "slices": "4", "slicecrc": "1"})
        cc.thread_count = threads  # PyAV's default (0) would start a pool of idle threads
        cc.options = opts
        cc.open()  # raises for an encoder that cannot run here (no GPU, no driver)
        self._cc = cc
        self._av = av
        self.extradata = bytes(cc.extradata or b"")

    def _frame(self, luma: np.ndarray, pts: int) -> Any:
        if self.choice.pix_fmt == "gray":
            vf = self._av.VideoFrame.from_ndarray(luma, format="gray")
        else:
            planes = np.full((self.height * 3 // 2, self.width), 128, np.uint8)
            planes[: self.height] = luma
            vf = self._av.VideoFrame.from_ndarray(planes, format="yuv420p")
        vf.pts = pts
        return vf

    def encode(self, luma: np.ndarray, pts: int) -> list[Packet]:
        if luma.shape != (self.height, self.width):
            raise ValueError(f"frame {luma.shape} for a {self.height}x{self.width} encoder")
        return [Packet(int(p.pts), bool(p.is_keyframe), bytes(p))
                for p in self._cc.encode(self._frame(np.ascontiguousarray(luma), pts))]

    def flush(self) -> list[Packet]:
        return [Packet(int(p.pts), bool(p.is_keyframe), bytes(p)) for p in self._cc.encode(None)]


def open_encoder(width: int, height: int, fps: float,
                 candidates: tuple[CodecChoice, ...] = CANDIDATES,
                 tried: list[str] | None = None) -> VideoEncoder:
    """The first candidate that opens here; ``tried`` collects why the others did not."""
    errors = tried if tried is not None else []
    for choice in candidates:
        try:
            return VideoEncoder(choice, width, height, fps)
        except Exception as exc:  # unknown encoder, no device, no driver: try the next
            errors.append(f"{choice.name}: {type(exc).__name__}: {exc}")
    raise RuntimeError("no lossless encoder opened: " + "; ".join(errors))


class VideoDecoder:
    """Decodes one topic's messages back to grey frames (in order, from a keyframe)."""

    def __init__(self, hd: VideoHeader, extradata: bytes) -> None:
        import av

        choice = DECODERS.get(hd.codec)
        if choice is None:
            raise ValueError(f"unknown video codec id {hd.codec}")
        cc = av.CodecContext.create(choice.decoder, "r")
        cc.width, cc.height = hd.width, hd.height
        if extradata:
            cc.extradata = extradata
        self._cc, self._av = cc, av
        self.key = (hd.codec, hd.width, hd.height, extradata)

    def decode(self, hd: VideoHeader, data: bytes | memoryview) -> list[tuple[int, np.ndarray]]:
        pkt = self._av.Packet(bytes(data))
        pkt.pts = hd.seq
        return [(int(f.pts), self._luma(f, hd)) for f in self._cc.decode(pkt)]

    def flush(self) -> list[tuple[int, np.ndarray]]:
        return [(int(f.pts), self._luma(f, None)) for f in self._cc.decode(None)]

    @staticmethod
    def _luma(f: Any, hd: VideoHeader | None) -> np.ndarray:
        a = f.to_ndarray()
        return np.ascontiguousarray(a[: f.height]) if a.ndim == 2 else a[..., 0]


# ------------------------------------------------------------------ face placement


class FacePlacer:
    """Where the fixed-size face crop sits: on the tracked face, moved only when needed.

    The crop keeps its place while the tracked face centre stays within ``slack`` of the
    crop's size from the crop centre, so the encoder sees a still window for long runs
    and head jitter does not shift the image; the position is stored with every frame.
    Before the tracker has a face the crop sits in the middle (flagged untracked).
    """

    def __init__(self, frame_w: int, frame_h: int, crop_w: int, crop_h: int,
                 slack: float = 0.125) -> None:
        self.fw, self.fh = frame_w, frame_h
        self.cw, self.ch = min(crop_w, frame_w), min(crop_h, frame_h)
        self.slack = slack
        self.x, self.y = (frame_w - self.cw) // 2, (frame_h - self.ch) // 2
        self.moves = 0
        self.clipped = 0  # tracked faces larger than the crop: the configured size is small

    def place(self, box: Box | None) -> tuple[int, int, bool]:
        if box is None:
            return self.x, self.y, False
        bx, by, bw, bh = box
        cx, cy = bx + bw / 2, by + bh / 2
        if bw > self.cw or bh > self.ch:
            self.clipped += 1
        if (abs(cx - (self.x + self.cw / 2)) > self.slack * self.cw
                or abs(cy - (self.y + self.ch / 2)) > self.slack * self.ch):
            self.x = int(min(max(round(cx - self.cw / 2), 0), self.fw - self.cw))
            self.y = int(min(max(round(cy - self.ch / 2), 0), self.fh - self.ch))
            self.moves += 1
        return self.x, self.y, True


def face_crop_size(frame_w: int, frame_h: int, crop_fraction: float) -> tuple[int, int]:
    """Crop width and height: ``crop_fraction`` of the frame height, 4:5 (a face is taller
    than wide), multiples of 16 (codec-friendly), never larger than the frame."""
    h = min(frame_h, max(16, round(frame_h * crop_fraction / 16) * 16))
    w = min(frame_w, max(16, round(h * 0.8 / 16) * 16))
    return w, h


# ------------------------------------------------------------------ the encoding thread


Emit = Callable[[str, bytes, int], bool]  # topic, message, log time ns -> queued


@dataclass
class EncoderCounters:
    frames_in: int = 0
    frames_encoded: int = 0  # full-rate stream (whole frames, or face regions)
    context_encoded: int = 0
    dropped_queue: int = 0  # the encoder fell behind: frames not recorded
    encode_errors: int = 0
    busy_s: float = 0.0


class CameraEncoder:
    """Encodes frames in its own thread: ``lossless`` whole frames to ``topic``, or
    ``face``: the face region at full rate to ``face_topic`` plus whole frames at
    ``context_fps`` to ``context_topic``."""

    def __init__(self, mode: str, fps: float, emit: Emit, *, topic: str, face_topic: str,
                 context_topic: str, face_box: Callable[[], Box | None] | None = None,
                 face_crop: float = 0.7, context_fps: float = 2.0, queue_s: float = 0.5,
                 candidates: tuple[CodecChoice, ...] = CANDIDATES) -> None:
        if mode not in ("lossless", "face"):
            raise ValueError(f"video mode {mode!r}: use lossless or face")
        self.mode, self.fps = mode, float(fps)
        self._emit = emit
        self._topic, self._face_topic, self._context_topic = topic, face_topic, context_topic
        self._face_box = face_box or (lambda: None)
        self._face_crop = float(face_crop)
        self._context_ns = int(1e9 / context_fps) if context_fps > 0 else 0
        self._next_context_ns: int | None = None
        self._candidates = candidates
        self._queue: DropQueue[Frame] = DropQueue(max(4, round(fps * queue_s)))
        self.counters = EncoderCounters()
        self.codec = ""
        self.tried: list[str] = []
        self.last_error = ""
        self._main: VideoEncoder | None = None
        self._context: VideoEncoder | None = None
        self._placer: FacePlacer | None = None
        self._meta: dict[str, dict[int, tuple[Frame, int, int, int, int, bool]]] = {}
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="encoder", daemon=True)
        self._thread.start()

    def put(self, frame: Frame) -> None:
        """Never blocks: a full queue drops its oldest frame (counted)."""
        self._queue.put(frame)

    def _run(self) -> None:
        while True:
            frame = self._queue.get(0.05)
            if frame is None:
                if self._halt.is_set() and not len(self._queue):
                    break
                continue
            t = time.perf_counter()
            try:
                self._encode(frame)
            except Exception as exc:  # a bad frame must not end the recording's video
                self.counters.encode_errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                for meta in self._meta.values():
                    meta.pop(frame.seq, None)
            self.counters.busy_s += time.perf_counter() - t
        for name, enc in (("main", self._main), ("context", self._context)):
            if enc is not None:
                try:
                    self._send(name, enc, enc.flush())
                except Exception as exc:
                    self.last_error = f"flush: {type(exc).__name__}: {exc}"

    def _open(self, w: int, h: int, fps: float) -> VideoEncoder:
        tried: list[str] = []
        enc = open_encoder(w, h, fps, self._candidates, tried)
        self.tried = self.tried or tried  # why the hardware encoders did not open, once
        self.codec = self.codec or enc.choice.name
        return enc

    def _encode(self, frame: Frame) -> None:
        c = self.counters
        c.frames_in += 1
        luma = frame.luma
        fh, fw = luma.shape
        if self.mode == "lossless":
            if self._main is None:
                self._main = self._open(fw, fh, self.fps)
            self._meta.setdefault("main", {})[frame.seq] = (frame, 0, 0, fw, fh, False)
            self._send("main", self._main, self._main.encode(luma, frame.seq))
            return
        if self._placer is None:
            cw, ch = face_crop_size(fw, fh, self._face_crop)
            self._placer = FacePlacer(fw, fh, cw, ch)
            self._main = self._open(self._placer.cw, self._placer.ch, self.fps)
        p = self._placer
        x, y, tracked = p.place(self._face_box())
        self._meta.setdefault("main", {})[frame.seq] = (frame, x, y, p.cw, p.ch, tracked)
        self._send("main", self._main, self._main.encode(luma[y:y + p.ch, x:x + p.cw], frame.seq))
        if self._context_ns and (self._next_context_ns is None
                                 or frame.t_ns >= self._next_context_ns):
            self._next_context_ns = frame.t_ns + self._context_ns
            if self._context is None:
                self._context = self._open(fw, fh, 1e9 / self._context_ns)
            self._meta.setdefault("context", {})[frame.seq] = (frame, 0, 0, fw, fh, False)
            self._send("context", self._context, self._context.encode(luma, frame.seq))

    def _send(self, name: str, enc: VideoEncoder, packets: list[Packet]) -> None:
        meta = self._meta.setdefault(name, {})
        topic = (self._topic if self.mode == "lossless"
                 else self._face_topic if name == "main" else self._context_topic)
        for pk in packets:
            got = meta.pop(pk.pts, None)
            if got is None:
                continue
            frame, x, y, w, h, tracked = got
            fh, fw = frame.luma.shape
            hd = VideoHeader(seq=frame.seq, t_ns=frame.t_ns, trigger=int(frame.trigger) & 0xFF,
                             codec=enc.choice.codec_id, keyframe=pk.keyframe, tracked=tracked,
                             frame_height=fh, frame_width=fw, x=x, y=y, height=h, width=w)
            self._emit(topic, encode_video(hd, pk.data, enc.extradata if pk.keyframe else b""),
                       frame.t_ns)
            if name == "main":
                self.counters.frames_encoded += 1
            else:
                self.counters.context_encoded += 1

    def close(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Encode what is queued, flush the encoders, stop the thread."""
        self._halt.set()
        self._thread.join(timeout_s)
        return self.stats()

    def stats(self) -> dict[str, Any]:
        c = self.counters
        c.dropped_queue = self._queue.dropped
        d: dict[str, Any] = {
            "mode": self.mode, "codec": self.codec, "frames_in": c.frames_in,
            "frames_encoded": c.frames_encoded, "context_encoded": c.context_encoded,
            "dropped_queue": c.dropped_queue, "encode_errors": c.encode_errors,
            "queue_high_water": self._queue.high_water, "busy_s": round(c.busy_s, 3),
            "not_opened": list(self.tried), "last_error": self.last_error,
        }
        if self._placer is not None:
            d["face_crop"] = [self._placer.cw, self._placer.ch]
            d["face_moves"] = self._placer.moves
            d["face_clipped"] = self._placer.clipped
        return d


__all__ = ["CANDIDATES", "FFV1", "NVENC", "X264", "CameraEncoder", "CodecChoice",
           "FacePlacer", "VideoDecoder", "VideoEncoder", "candidates_for", "face_crop_size",
           "open_encoder"]
