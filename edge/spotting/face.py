"""Face detection, tracking and stabilisation for the spotter.

Detection uses OpenCV 4.x's bundled Haar cascade: it costs 15-50 ms a frame, so it runs
only on start, when tracking is lost, and as a periodic check (every ``redetect_s``).
Between detections the face box follows the image by normalised cross-correlation of
the current crop against the reference crop taken at detection, which also stabilises the crop
against head motion: the crop handed on is warped by the sub-pixel shift found, so the
optical flow downstream sees facial movement, not head translation.

A periodic detection only *verifies* the tracked box (Haar boxes jitter by a few pixels,
which would look like motion); the box is replaced only when the two disagree.
Every problem is a :class:`FaceStatus`, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import cv2
import numpy as np

CROP = 128  # side of the stabilised face crop, pixels
_PC_SIDE = 64  # tracking runs on a downscaled crop: 4x cheaper, still sub-pixel
_SEARCH = 8  # template = reference crop minus this margin; also the search range per frame
# Haar runs on the frame shrunk by an integer factor to at most about this width, so its
# cost stays that of a 320x240 frame whatever the camera delivers (640x480 on the loaded
# dev VM: 147 ms -> 40-70 ms a detection).
DETECT_WIDTH = 320


class FaceStatus(str, Enum):
    OK = "ok"
    NO_FACE = "no_face"  # nothing detected (yet)
    LOST = "lost"  # was tracking, the face left or changed beyond tracking
    TOO_DARK = "too_dark"
    TOO_BRIGHT = "too_bright"
    LOW_CONTRAST = "low_contrast"  # fog, glare, a frozen or blank image


@dataclass(frozen=True)
class FaceObs:
    """What the tracker says about one frame."""

    status: FaceStatus
    crop: np.ndarray | None  # (CROP, CROP) uint8 stabilised face, None unless status OK
    box: tuple[float, float, float, float] | None  # x, y, w, h in frame pixels (tracked)
    shift: tuple[float, float] = (0.0, 0.0)  # head translation since last frame, crop px
    detected: bool = False  # a Haar detection ran on this frame
    reacquired: bool = False  # the box was (re)initialised: downstream history is invalid


def lighting_status(luma: np.ndarray) -> FaceStatus:
    """Extreme lighting check on a subsampled image (cheap, no full-frame pass)."""
    sub = luma[::8, ::8]
    mean_, std_ = cv2.meanStdDev(sub)  # one SIMD pass; the GIL is released
    mean = float(mean_[0, 0])
    half = sub.size / 2
    # Clipped pixels carry no texture: half the image clipped means no usable face.
    if mean < 25.0 or np.count_nonzero(sub <= 8) > half:
        return FaceStatus.TOO_DARK
    if mean > 230.0 or np.count_nonzero(sub >= 250) > half:
        return FaceStatus.TOO_BRIGHT
    if float(std_[0, 0]) < 6.0:
        return FaceStatus.LOW_CONTRAST
    return FaceStatus.OK


def _cascade() -> cv2.CascadeClassifier:
    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    clf = cv2.CascadeClassifier(path)
    if clf.empty():  # opencv 5 ships none: a packaging error, not a runtime state
        raise RuntimeError(f"Haar cascade missing at {path}; opencv-python-headless 4.x needed")
    return clf


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter + 1e-9)


def _parabola(a: float, b: float, c: float) -> float:
    """Sub-pixel offset of a peak from three samples around it."""
    d = a - 2.0 * b + c
    return 0.0 if d >= 0 else 0.5 * (a - c) / d


def _match(cur: np.ndarray, ref: np.ndarray) -> tuple[float, float, float] | None:
    """Shift (dx, dy) of the reference face inside the current crop, and its correlation.

    Normalised cross-correlation rather than phase correlation: on a noisy, low-texture
    64 px face crop phase correlation locked onto wrong peaks, NCC stays at ~0.01 px.
    None when the peak is at the edge of the search window (moved too far or gone).
    """
    r = cv2.matchTemplate(cur, ref, cv2.TM_CCOEFF_NORMED)
    _, best, _, (px, py) = cv2.minMaxLoc(r)
    if not (0 < px < r.shape[1] - 1 and 0 < py < r.shape[0] - 1):
        return None
    dx = px - _SEARCH + _parabola(*r[py, px - 1 : px + 2])
    dy = py - _SEARCH + _parabola(*r[py - 1 : py + 2, px])
    return float(dx), float(dy), float(best)


class FaceTracker:
    """Detect rarely, track by template matching, hand out a stabilised fixed-size crop."""

    def __init__(
        self,
        fps: float,
        *,
        redetect_s: float = 1.5,
        retry_s: float = 0.2,
        margin: float = 1.1,
        min_face_px: int = 40,
        min_score: float = 0.5,
    ) -> None:
        self.fps = float(fps)
        self.redetect_every = max(1, round(redetect_s * fps))
        self.retry_every = max(1, round(retry_s * fps))  # while searching: bounded cost
        self.margin = margin  # crop a little beyond the Haar box so the chin is inside
        self.min_face_px = min_face_px
        self.min_score = min_score  # template correlation below this: not the same face
        self._clf = _cascade()
        self._box: np.ndarray | None = None  # cx, cy, side (float, frame px)
        self._ref: np.ndarray | None = None  # float32 (_PC_SIDE, _PC_SIDE) reference
        self._since_detect = self.retry_every  # first frame searches at once
        self._was_tracking = False
        self._misses = 0

    @property
    def tracking(self) -> bool:
        return self._box is not None

    def reset(self) -> None:
        self._box = None
        self._ref = None
        self._since_detect = self.retry_every

    # -- detection ---------------------------------------------------------------------
    def detect(self, luma: np.ndarray) -> tuple[float, float, float, float] | None:
        """Largest frontal face as x, y, w, h (frame pixels), or None."""
        k = max(1, luma.shape[1] // DETECT_WIDTH)
        small = luma if k == 1 else cv2.resize(
            luma, (luma.shape[1] // k, luma.shape[0] // k), interpolation=cv2.INTER_AREA)
        side = max(1, self.min_face_px // k)
        faces = self._clf.detectMultiScale(small, scaleFactor=1.2, minNeighbors=4,
                                           minSize=(side, side))
        if len(faces) == 0:
            return None
        x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
        return float(x * k), float(y * k), float(w * k), float(h * k)

    def _warp(self, luma: np.ndarray, box: np.ndarray, side: int) -> np.ndarray:
        """Sub-pixel crop of the square box (cx, cy, s) resized to side x side."""
        cx, cy, s = box
        k = side / s
        m = np.array([[k, 0.0, side / 2 - k * cx], [0.0, k, side / 2 - k * cy]], np.float32)
        return cv2.warpAffine(luma, m, (side, side), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)

    def _init_box(self, luma: np.ndarray, det: tuple[float, float, float, float]) -> None:
        x, y, w, h = det
        self._box = np.array([x + w / 2, y + h / 2, max(w, h) * self.margin], np.float64)
        self._ref = self._small(luma, self._box)[_SEARCH:-_SEARCH, _SEARCH:-_SEARCH].copy()

    def _small(self, luma: np.ndarray, box: np.ndarray) -> np.ndarray:
        return self._warp(luma, box, _PC_SIDE)

    def _box_xywh(self) -> tuple[float, float, float, float]:
        cx, cy, s = (float(v) for v in self._box)  # type: ignore[union-attr]
        return cx - s / 2, cy - s / 2, s, s

    # -- per frame ---------------------------------------------------------------------
    def update(self, luma: np.ndarray) -> FaceObs:
        light = lighting_status(luma)
        if light is not FaceStatus.OK:
            return FaceObs(light, None, self._box_xywh() if self._box is not None else None)
        self._since_detect += 1
        if self._box is None:
            return self._search(luma)
        # Track: where the reference face sits in the current crop, in small-crop px.
        cur = self._small(luma, self._box)
        found = _match(cur, self._ref)
        scale = self._box[2] / _PC_SIDE
        dx = dy = 0.0
        if found is None:
            self._misses += 1
            if self._misses >= 3:  # a few bad frames in a row: give up, search again
                self.reset()
                self._was_tracking = True
                return FaceObs(FaceStatus.LOST, None, None)
        else:
            self._misses = 0
            dx, dy, score = found
            if score < self.min_score:
                self._misses = 3
            self._box[0] += dx * scale
            self._box[1] += dy * scale
        reacq = False
        detected = False
        if self._since_detect >= self.redetect_every:
            detected = True
            self._since_detect = 0
            det = self.detect(luma)
            if det is None:
                self.reset()
                self._was_tracking = True
                return FaceObs(FaceStatus.LOST, None, None, detected=True)
            if _iou(det, self._box_xywh()) < 0.4:  # tracker drifted or a new face: re-anchor
                self._init_box(luma, det)
                reacq = True
        crop = self._warp(luma, self._box, CROP)
        shift = (float(dx) * CROP / _PC_SIDE, float(dy) * CROP / _PC_SIDE)
        return FaceObs(FaceStatus.OK, crop, self._box_xywh(), shift, detected, reacq)

    def _search(self, luma: np.ndarray) -> FaceObs:
        lost = FaceStatus.LOST if self._was_tracking else FaceStatus.NO_FACE
        if self._since_detect < self.retry_every:
            return FaceObs(lost, None, None)
        self._since_detect = 0
        det = self.detect(luma)
        if det is None:
            return FaceObs(lost, None, None, detected=True)
        self._init_box(luma, det)
        self._misses = 0
        crop = self._warp(luma, self._box, CROP)  # type: ignore[arg-type]
        return FaceObs(FaceStatus.OK, crop, self._box_xywh(), detected=True, reacquired=True)
