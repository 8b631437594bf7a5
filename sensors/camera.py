"""Camera frame sources (``sensors.seams.FrameSource``) on real hardware.

Two backends, both yielding ``Frame(seq, t_ns, luma, trigger)`` with a grey ``uint8``
image and the exposure timestamp on host CLOCK_MONOTONIC:

- :class:`Picamera2Source`: Raspberry Pi CSI cameras through picamera2/libcamera. Fixed
  exposure and frame duration, the sensor mode that reaches the frame rate, YUV420 main
  stream of which the Y plane is the image. ``t_ns`` is the request's
  ``SensorTimestamp`` (ns, CLOCK_MONOTONIC despite being documented as BOOTTIME).
- :class:`OpenCVSource`: UVC/V4L2 cameras through ``cv2.VideoCapture``. With the V4L2
  backend ``CAP_PROP_POS_MSEC`` is the dequeued ``v4l2_buffer`` timestamp (kernel
  CLOCK_MONOTONIC, tv_sec/tv_usec as milliseconds, 0 before the first frame); it is used
  when it is plausible (positive, not in the future, under 1 s old), otherwise the host
  time right after ``grab()`` is used and counted in ``counters.extra["host_timestamps"]``.

Neither backend hands out a trustworthy frame counter (libcamera's request sequence
counts requests, V4L2's counts buffers and UVC cameras drop silently), so both derive
``seq`` from timestamps with :class:`FrameGapDetector`: a gap of more than 1.5 frame
periods means frames were lost and is counted in ``counters.dropped``.

Hardware packages are imported inside the constructors, so this module imports anywhere.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from sensors.blocks import Frame, StreamCounters, monotonic_ns
from sensors.errors import BackendUnavailable, DeviceError, DeviceNotFound, WrongDevice

PICAMERA2_HINT = (
    "picamera2 is not installed: on Raspberry Pi OS run `sudo apt install python3-picamera2` "
    "and create the venv with --system-site-packages (libcamera is not on PyPI)"
)

MIN_BUFFERS = 4  # what a V4L2 capture needs to stream at all (one filling, one queued...)


def buffers_for(fps: float, hold_s: float) -> int:
    """Capture buffers that cover ``hold_s`` of frames, at least :data:`MIN_BUFFERS`.

    The sensor (or the V4L2 driver) overwrites or drops frames once every buffer waits
    for the reader, so the ring's length in *time* is how long the reading thread may be
    held up: by the GIL, a garbage collection or the host. A fixed count shrinks in time
    as the rate rises (6 buffers: 40 ms at 150 fps, 30 ms at 200). 0.1 s of 320x240
    YUV420 at 200 fps is 20 buffers, 2.3 MB.
    """
    if fps <= 0 or hold_s <= 0:
        raise ValueError(f"fps and hold_s must be positive, got {fps} and {hold_s}")
    return max(MIN_BUFFERS, math.ceil(fps * hold_s - 1e-9))


class FrameGapDetector:
    """Turns frame timestamps into sensor sequence numbers and counts dropped frames.

    ``seq = previous + round(gap / period)``: a gap over 1.5 periods means lost frames.
    The period starts at ``1 / fps``; once 64 frames have been numbered it is measured
    over the last ``window`` frames (slope of timestamp against seq), so it follows the
    camera's real rate (crystal error, a mode that cannot hit ``fps`` exactly) without
    being thrown by per-frame jitter, and long gaps are still counted right. The
    measured period is kept within +-5 % of nominal. A timestamp that does not advance
    by at least half a period is counted in ``anomalies`` and taken as the next frame.
    """

    MIN_SPAN = 64  # frames of history before the measured period replaces the nominal one

    def __init__(self, fps: float, first_seq: int = 0, window: int = 512) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.nominal_period_ns = 1e9 / fps
        self.period_ns = self.nominal_period_ns
        self.first_seq = first_seq
        self.last_t_ns: int | None = None
        self.seq = first_seq - 1
        self._good_seq = self.seq  # seq of the frame stamped last_t_ns
        self.frames = 0
        self.dropped = 0
        self.anomalies = 0
        self._history: deque[tuple[int, int]] = deque(maxlen=window)  # (seq, t_ns)

    def update(self, t_ns: int) -> tuple[int, int]:
        """Account for a frame stamped ``t_ns``; return (its seq, frames lost before it)."""
        t_ns = int(t_ns)
        self.frames += 1
        if self.last_t_ns is None:
            self.last_t_ns = t_ns
            self.seq = self._good_seq = self.first_seq
            self._history.append((self.seq, t_ns))
            return self.seq, 0
        n = round((t_ns - self.last_t_ns) / self.period_ns)
        if n < 1:
            self.anomalies += 1
            self.seq += 1
            return self.seq, 0
        # Count from the last good stamp, never backwards past an anomalous frame.
        seq = max(self._good_seq + n, self.seq + 1)
        lost = seq - self.seq - 1
        self.seq = self._good_seq = seq
        self.last_t_ns = t_ns
        self.dropped += lost
        self._history.append((seq, t_ns))
        self._measure_period()
        return seq, lost

    def _measure_period(self) -> None:
        seq0, t0 = self._history[0]
        span = self._good_seq - seq0
        if span >= self.MIN_SPAN:
            p = (self.last_t_ns - t0) / span
            lo, hi = 0.95 * self.nominal_period_ns, 1.05 * self.nominal_period_ns
            self.period_ns = min(max(p, lo), hi)

    def process(self, t_ns: Sequence[int] | np.ndarray) -> np.ndarray:
        """Sequence numbers for a run of timestamps (int64 array)."""
        return np.array([self.update(int(t))[0] for t in np.asarray(t_ns)], dtype=np.int64)


def pick_sensor_mode(modes: Sequence[Mapping[str, Any]], width: int, height: int,
                     fps: float) -> Mapping[str, Any]:
    """The picamera2 sensor mode to stream ``width`` x ``height`` at ``fps``.

    Among modes whose maximum fps reaches ``fps``: the smallest one that still covers
    the output size (binned modes read out faster and are less noisy), or the largest
    one when none covers it. Raises :class:`WrongDevice` when no mode is fast enough.
    """
    fast = [m for m in modes if float(m.get("fps", 0.0)) >= fps * 0.999]
    if not fast:
        have = ", ".join(f"{m['size'][0]}x{m['size'][1]}@{float(m.get('fps', 0)):.0f}"
                         for m in modes)
        raise WrongDevice(f"camera: no sensor mode reaches {fps:g} fps (modes: {have or 'none'})")

    def area(m: Mapping[str, Any]) -> int:
        return int(m["size"][0]) * int(m["size"][1])

    covering = [m for m in fast if m["size"][0] >= width and m["size"][1] >= height]
    if covering:
        return min(covering, key=lambda m: (area(m), -int(m.get("bit_depth", 0))))
    return max(fast, key=area)


class Picamera2Source:
    """A Raspberry Pi CSI camera through picamera2 (implements ``FrameSource``)."""

    def __init__(
        self,
        camera_num: int = 0,
        width: int = 320,
        height: int = 240,
        fps: float = 150.0,
        exposure_us: int | None = None,
        analogue_gain: float = 4.0,
        buffer_count: int = 6,
    ) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise BackendUnavailable(PICAMERA2_HINT) from None
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.counters = StreamCounters()
        self.gaps = FrameGapDetector(fps)
        self._job: Any = None
        self._started = False
        try:
            cameras = Picamera2.global_camera_info()
        except Exception as exc:  # libcamera could not enumerate: nothing usable there
            raise DeviceNotFound(
                f"camera {camera_num}: libcamera enumeration failed: {exc}") from None
        if camera_num >= len(cameras):
            raise DeviceNotFound(f"camera {camera_num}: libcamera sees {len(cameras)} camera(s)")
        try:
            self._cam = Picamera2(camera_num)
        except Exception as exc:  # picamera2 raises bare RuntimeError/IndexError here
            raise DeviceNotFound(f"camera {camera_num}: cannot open: {exc}") from None
        try:
            self.mode = pick_sensor_mode(self._cam.sensor_modes, self.width, self.height, self.fps)
            frame_us = round(1e6 / self.fps)
            # Short fixed exposure: no auto-exposure hunting, little motion blur.
            self.exposure_us = int(exposure_us) if exposure_us else int(frame_us * 0.8)
            if self.exposure_us > frame_us:
                raise DeviceError(f"camera {camera_num}: exposure {self.exposure_us} us is longer "
                                  f"than the {frame_us} us frame period at {self.fps:g} fps")
            controls = {
                "AeEnable": False,
                "ExposureTime": self.exposure_us,
                "AnalogueGain": float(analogue_gain),
                "FrameDurationLimits": (frame_us, frame_us),
            }
            main = {"size": (self.width, self.height), "format": "YUV420"}
            try:
                config = self._cam.create_video_configuration(
                    main=main,
                    sensor={"output_size": tuple(self.mode["size"]),
                            "bit_depth": int(self.mode.get("bit_depth", 10))},
                    buffer_count=int(buffer_count),
                    controls=controls,
                )
            except TypeError:  # picamera2 before `sensor=`: the raw stream picks the mode
                config = self._cam.create_video_configuration(
                    main=main,
                    raw={"size": tuple(self.mode["size"]),
                         "format": str(self.mode.get("unpacked", "")) or None},
                    buffer_count=int(buffer_count),
                    controls=controls,
                )
            self._cam.configure(config)
        except Exception:
            self._cam.close()
            raise

    def start(self) -> None:
        self._cam.start()
        self._started = True

    def read(self, timeout_s: float) -> Frame | None:
        if not self._started:
            return None
        # One outstanding capture job: a timed-out wait resumes on the same job next time,
        # so no completed request is ever left unreleased.
        if self._job is None:
            self._job = self._cam.capture_request(wait=False)
        try:
            request = self._cam.wait(self._job, timeout=max(timeout_s, 0.0))
        except TimeoutError:
            return None
        self._job = None
        try:
            t_ns = int(request.get_metadata()["SensorTimestamp"])
            yuv = request.make_array("main")  # (h * 3 / 2, stride): Y plane on top
            luma = np.ascontiguousarray(yuv[: self.height, : self.width])
        finally:
            request.release()
        seq, lost = self.gaps.update(t_ns)
        self.counters.samples += 1
        self.counters.dropped += lost
        return Frame(seq=seq, t_ns=t_ns, luma=luma)

    def stop(self) -> None:
        if self._started:
            self._cam.stop()
            self._started = False
            self._job = None

    def close(self) -> None:
        self.stop()
        self._cam.close()


def _device_path(device: int | str) -> str | None:
    """The /dev node OpenCV's V4L2 backend will open, when the device names one."""
    if isinstance(device, int):
        return f"/dev/video{device}"
    return device if device.startswith("/dev/") else None


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own warnings (failed opens print to stderr) for the block."""
    import cv2

    log = getattr(getattr(cv2, "utils", None), "logging", None)
    if log is None:
        yield
        return
    old = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        log.setLogLevel(old)


class OpenCVSource:
    """A V4L2 (UVC) camera through OpenCV (implements ``FrameSource``).

    ``fourcc`` asks for a pixel format; what the driver picked is in ``self.fourcc``.
    GREY and YUYV are read raw (the Y bytes), MJPG is decoded to grey; anything else is
    converted from OpenCV's BGR.
    """

    def __init__(
        self,
        device: int | str,
        width: int = 320,
        height: int = 240,
        fps: float = 150.0,
        fourcc: str = "GREY",
        api: int | None = None,
        buffer_count: int = 4,
    ) -> None:
        import cv2

        self._cv2 = cv2
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.counters = StreamCounters()
        self.counters.extra["host_timestamps"] = 0
        self.gaps = FrameGapDetector(fps)
        self.api = cv2.CAP_V4L2 if api is None else int(api)
        self.device = device
        path = _device_path(device)
        if path is not None and not os.path.exists(path):
            raise DeviceNotFound(
                f"camera {path} does not exist (plugged in? see `v4l2-ctl --list-devices`)")
        if path is not None and not os.access(path, os.R_OK | os.W_OK):
            raise DeviceNotFound(f"camera {path}: no permission (add the user to group 'video')")
        with _quiet_opencv():
            cap = cv2.VideoCapture(device, self.api)
        if not cap.isOpened():
            cap.release()
            raise DeviceNotFound(f"camera {device}: OpenCV backend {self.api} cannot open it")
        self._cap = cap
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*fourcc))
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        cap.set(cv2.CAP_PROP_FPS, self.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, int(buffer_count))
        code = int(cap.get(cv2.CAP_PROP_FOURCC))
        self.fourcc = "".join(chr((code >> (8 * k)) & 0xFF) for k in range(4))
        got_w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        got_h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if (got_w, got_h) != (self.width, self.height):
            cap.release()
            raise WrongDevice(f"camera {device}: asked {self.width}x{self.height}, "
                              f"driver gives {got_w}x{got_h} ({self.fourcc})")
        self._raw = self.fourcc in ("GREY", "YUYV", "MJPG")
        cap.set(cv2.CAP_PROP_CONVERT_RGB, 0 if self._raw else 1)
        self._read_timeout_ms: int | None = None
        self._started = False

    def start(self) -> None:
        self._started = True

    def _set_timeout(self, timeout_s: float) -> None:
        # The V4L2 backend waits in select() for up to this long inside grab().
        ms = max(int(timeout_s * 1000), 1)
        prop = getattr(self._cv2, "CAP_PROP_READ_TIMEOUT_MSEC", None)
        if prop is not None and ms != self._read_timeout_ms:
            self._cap.set(prop, ms)
            self._read_timeout_ms = ms

    def read(self, timeout_s: float) -> Frame | None:
        if not self._started:
            return None
        self._set_timeout(timeout_s)
        with _quiet_opencv():
            ok = self._cap.grab()
        host_ns = monotonic_ns()
        if not ok:
            return None
        t_ns = self._timestamp(host_ns)
        ok, raw = self._cap.retrieve()
        if not ok or raw is None:
            self.counters.errors += 1
            return None
        luma = self._to_luma(raw)
        if luma is None:
            self.counters.errors += 1
            return None
        seq, lost = self.gaps.update(t_ns)
        self.counters.samples += 1
        self.counters.dropped += lost
        return Frame(seq=seq, t_ns=t_ns, luma=luma)

    def _timestamp(self, host_ns: int) -> int:
        """Kernel buffer timestamp when plausible, else host time at grab."""
        pos_ms = float(self._cap.get(self._cv2.CAP_PROP_POS_MSEC))
        t_ns = round(pos_ms * 1e6)
        kernel = self.api == self._cv2.CAP_V4L2
        if kernel and 0 < t_ns <= host_ns and host_ns - t_ns < 1_000_000_000:
            return t_ns
        self.counters.extra["host_timestamps"] += 1
        return host_ns

    def _to_luma(self, raw: np.ndarray) -> np.ndarray | None:
        cv2 = self._cv2
        w, h = self.width, self.height
        if not self._raw:
            return cv2.cvtColor(raw, cv2.COLOR_BGR2GRAY) if raw.ndim == 3 else raw
        buf = raw.reshape(-1)
        if self.fourcc == "GREY":
            return buf[: w * h].reshape(h, w).copy() if buf.size >= w * h else None
        if self.fourcc == "YUYV":
            return buf[: 2 * w * h : 2].reshape(h, w).copy() if buf.size >= 2 * w * h else None
        img = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)  # MJPG
        return img if img is not None and img.shape == (h, w) else None

    def stop(self) -> None:
        self._started = False

    def close(self) -> None:
        self._started = False
        self._cap.release()
