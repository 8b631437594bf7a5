"""Renders the simulated subject: a real face photograph that makes micro-expressions.

The face is the astronaut portrait scikit-image ships as ``skimage.data.astronaut()``
(Eileen Collins, NASA, public domain), shipped here in grey as ``astronaut_grey.png``
(lossless: exactly ``cv2.cvtColor(astronaut(), COLOR_RGB2GRAY)``), cropped and scaled
so that the face box (hairline to chin) fills ``face_fraction`` of the frame height.
Action units (AUs) are local, smooth displacement
fields (sums of Gaussian bumps placed on hand-picked anchor points) applied with one
``cv2.remap``; a blink blends the eye towards a closed-lid image; head movement is a
global sub-pixel affine applied to the same map, so the AU motion moves with the head.

Anchor points were placed by eye on the grey 512x512 photograph (zoomed 6x on an 8 px
grid) and are given in that image's pixel coordinates in :data:`ANCHORS_SRC`. Names
say the side *in the image* (``left`` is the image's left, the subject's right) and,
for brows, the inner (towards the nose) or outer end.

Everything that does not depend on time is precomputed: the base image, the background
used when the face is out of view, the closed-lid image, one displacement field per AU
(cropped to its support) and a bank of noise tiles. Rendering one frame is a few small
array adds, at most one remap (only over the AUs' box while the head is still), a small
blend in the eye boxes and one fused gain + noise + 8-bit pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources

import cv2
import numpy as np

# Anchors in the 512x512 astronaut photograph, (x, y) pixels, placed by hand.
ANCHORS_SRC: dict[str, tuple[float, float]] = {
    "brow_left_outer": (189.0, 92.0),
    "brow_left_inner": (213.0, 90.5),
    "brow_right_inner": (236.5, 93.0),
    "brow_right_outer": (261.0, 91.0),
    "eye_left": (203.0, 101.0),
    "eye_right": (246.0, 103.0),
    "nose_tip": (224.0, 129.0),
    "cheek_left": (196.0, 122.0),
    "cheek_right": (254.0, 124.0),
    "mouth_left": (202.0, 140.0),
    "mouth_right": (246.0, 140.5),
    "upper_lip": (224.0, 139.0),
    "lower_lip": (223.0, 153.0),
    "chin": (221.0, 178.0),
}
# Face box in the photograph: cheek to cheek, hairline to chin (x0, y0, x1, y1).
FACE_BOX_SRC = (183.0, 76.0, 266.0, 180.0)
EYE_HALF_W_SRC = 8.0  # eye opening half width and half height in photograph pixels
EYE_HALF_H_SRC = 3.4
# A face-free part of the same photograph (backdrop and shuttle): the "no face" view.
BACKGROUND_SRC = (300.0, 0.0, 512.0)  # x0, y0, x1; height follows the frame's aspect

AUS = ("AU1", "AU2", "AU4", "AU5", "AU6", "AU7", "AU9", "AU10", "AU12", "AU14", "AU15",
       "AU20", "AU23", "AU24")
# Apex displacement at intensity 1, as a fraction of the face box height: about 2.8 px
# for a 132 px face, so intensity 0.3 stays under 1 px.
APEX_FRACTION = 0.021
ROTATION_PER_PX = 0.002  # head roll (rad) that accompanies 1 px of sideways head motion
MAINS_RIPPLE_HZ = 100.0  # lamp brightness ripples at twice the 50 Hz mains
NOISE_TILES = 8
NOISE_MARGIN = 48


@dataclass(frozen=True)
class Bump:
    """One Gaussian patch of displacement: ``vector`` (unit: apex px) at an anchor.

    ``at`` names an anchor, or two anchors joined by ``+`` to use their midpoint;
    ``offset`` and ``sigma`` are in face-box heights; vector x > 0 is "outward", i.e.
    away from the face midline, and y > 0 is down.
    """

    at: str
    vector: tuple[float, float]
    sigma: tuple[float, float] = (0.05, 0.04)
    offset: tuple[float, float] = (0.0, 0.0)
    side: int = 0  # -1 image left, +1 image right, 0: the side the anchor is on


def _both(at: str, vector: tuple[float, float], sigma=(0.05, 0.04), offset=(0.0, 0.0)):
    """The same bump on the image-left and image-right anchor of a bilateral feature."""
    return tuple(Bump(at.replace("*", name), vector, sigma, offset, sign)
                 for name, sign in (("left", -1), ("right", 1)))


# FACS-inspired 2D motion of each AU (outward > 0, down > 0).
AU_BUMPS: dict[str, tuple[Bump, ...]] = {
    "AU1": _both("brow_*_inner", (0.0, -1.0), (0.05, 0.045), (0.0, -0.01)),
    "AU2": _both("brow_*_outer", (0.0, -1.0), (0.05, 0.045), (0.0, -0.01)),
    "AU4": _both("brow_*_inner+brow_*_outer", (-0.35, 1.0), (0.06, 0.04))
    + _both("brow_*_inner", (-0.5, 0.7), (0.04, 0.04)),
    "AU5": _both("eye_*", (0.0, -0.9), (0.06, 0.022), (0.0, -0.03)),
    "AU6": _both("cheek_*", (0.0, -1.0), (0.07, 0.045))
    + _both("eye_*", (0.0, -0.5), (0.05, 0.02), (0.0, 0.035)),
    "AU7": _both("eye_*", (0.0, -0.9), (0.055, 0.02), (0.0, 0.035))
    + _both("eye_*", (0.0, 0.35), (0.05, 0.02), (0.0, -0.035)),
    "AU9": _both("nose_tip", (0.0, -0.8), (0.035, 0.05), (0.045, -0.1))
    + _both("nose_tip", (0.0, -0.7), (0.035, 0.025), (0.05, -0.01))
    + _both("brow_*_inner", (0.0, 0.3), (0.04, 0.04)),
    "AU10": (Bump("upper_lip", (0.0, -1.0), (0.09, 0.03), (0.0, -0.01)),),
    "AU12": _both("mouth_*", (0.6, -0.9), (0.05, 0.045)),
    "AU14": _both("mouth_*", (-0.7, 0.0), (0.04, 0.04))
    + _both("mouth_*", (-0.3, 0.0), (0.04, 0.05), (0.06, 0.0)),
    "AU15": _both("mouth_*", (0.0, 1.0), (0.05, 0.045)),
    "AU20": _both("mouth_*", (1.0, 0.2), (0.05, 0.045)),
    "AU23": (
        Bump("upper_lip", (0.0, 0.5), (0.08, 0.025)),
        Bump("lower_lip", (0.0, -0.5), (0.08, 0.025)),
        *_both("mouth_*", (-0.45, 0.0), (0.04, 0.035)),
    ),
    "AU24": (
        Bump("upper_lip", (0.0, 0.8), (0.09, 0.025)),
        Bump("lower_lip", (0.0, -0.8), (0.09, 0.03)),
    ),
}
# The facial regions each AU moves (keys of FaceRenderer.region_boxes), main one first.
AU_REGIONS: dict[str, tuple[str, ...]] = {
    "AU1": ("brows",), "AU2": ("brows",), "AU4": ("brows", "eyes"), "AU5": ("eyes",),
    "AU6": ("cheeks", "eyes"), "AU7": ("eyes",), "AU9": ("nose", "brows"),
    "AU10": ("mouth",), "AU12": ("mouth", "cheeks"), "AU14": ("mouth", "cheeks"),
    "AU15": ("mouth",), "AU20": ("mouth",), "AU23": ("mouth",), "AU24": ("mouth",),
}


def raised_cosine(u: float) -> float:
    """0 -> 1 smoothly for u in [0, 1] (zero slope at both ends)."""
    u = min(max(u, 0.0), 1.0)
    return 0.5 - 0.5 * math.cos(math.pi * u)


def apex_fraction(t_s: float, onset_s: float, apex_s: float, offset_s: float) -> float:
    """Onset-apex-offset time course: smooth rise to 1 at apex, smooth fall to 0."""
    if t_s <= onset_s or t_s >= offset_s:
        return 0.0
    if t_s <= apex_s:
        return raised_cosine((t_s - onset_s) / (apex_s - onset_s))
    return 1.0 - raised_cosine((t_s - apex_s) / (offset_s - apex_s))


def blink_closure(t_s: float, start_s: float, duration_s: float) -> float:
    """Lid closure 0..1: closes over the first 40 % of the blink, reopens more slowly."""
    u = (t_s - start_s) / duration_s
    if u <= 0.0 or u >= 1.0:
        return 0.0
    return raised_cosine(u / 0.4) if u < 0.4 else 1.0 - raised_cosine((u - 0.4) / 0.6)


def head_bump(t_s: float, start_s: float, duration_s: float) -> float:
    """Head movement out and back: sin^2 over the movement's duration."""
    u = (t_s - start_s) / duration_s
    if u <= 0.0 or u >= 1.0:
        return 0.0
    return math.sin(math.pi * u) ** 2


def _splitmix(x: np.ndarray) -> np.ndarray:
    """Counter-based hash (splitmix64) so noise and drops depend only on (seed, index)."""
    x = (x + np.uint64(0x9E3779B97F4A7C15)).astype(np.uint64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hash_u64(seed: int, key: int | np.ndarray, salt: int = 0) -> np.ndarray:
    """A deterministic 64-bit hash of (seed, salt, key), vectorised over ``key``."""
    with np.errstate(over="ignore"):
        k = np.asarray(key, dtype=np.int64).astype(np.uint64)
        s = _splitmix(np.asarray([(seed & 0xFFFFFFFF) << 20 | (salt & 0xFFFFF)], dtype=np.uint64))
        return _splitmix(k ^ s)


_M64 = (1 << 64) - 1


def _splitmix_int(x: int) -> int:
    """Scalar :func:`_splitmix` on Python ints (no numpy scalar overhead per frame)."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def hash_int(seed: int, key: int, salt: int = 0) -> int:
    """Scalar :func:`hash_u64`: the same value for one integer key, as a Python int."""
    s = _splitmix_int((seed & 0xFFFFFFFF) << 20 | (salt & 0xFFFFF))
    return _splitmix_int((int(key) & _M64) ^ s)


def hash_uniform(seed: int, key: int | np.ndarray, salt: int = 0) -> np.ndarray:
    """Uniform [0, 1) values from :func:`hash_u64`."""
    return (hash_u64(seed, key, salt) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


@dataclass(frozen=True)
class _Field:
    """One AU's displacement at intensity 1, stored only over its support (the bumps are
    exactly 0 beyond 2.5 sigma), so summing and remapping touch the face, not the frame."""

    x0: int
    y0: int
    x1: int
    y1: int
    dxy: np.ndarray  # (y1 - y0, x1 - x0, 2) float32 content displacement in px


@dataclass(frozen=True)
class Pose:
    """What the face does at one instant (the renderer's input)."""

    aus: Mapping[str, float]  # AU -> displacement scale (intensity x apex fraction)
    blink: float = 0.0  # lid closure 0..1
    dx_px: float = 0.0  # head translation
    dy_px: float = 0.0
    roll_rad: float = 0.0


NEUTRAL = Pose(aus={})


class FaceRenderer:
    """Precomputed face photograph plus everything needed to render a pose fast."""

    def __init__(self, width: int = 320, height: int = 240, face_fraction: float = 0.55,
                 seed: int = 0) -> None:
        if width < 32 or height < 32:
            raise ValueError(f"frame {width}x{height} is too small to render a face")
        self.width, self.height = int(width), int(height)
        self.seed = int(seed)
        grey = _photograph()
        bx0, by0, bx1, by1 = FACE_BOX_SRC
        self.scale = face_fraction * self.height / (by1 - by0)
        # Face box centre goes to the frame centre.
        tx = self.width / 2 - self.scale * (bx0 + bx1) / 2
        ty = self.height / 2 - self.scale * (by0 + by1) / 2
        self._src_to_frame = np.array([[self.scale, 0, tx], [0, self.scale, ty]], np.float64)
        interp = cv2.INTER_LINEAR if self.scale >= 1.0 else cv2.INTER_AREA
        if self.scale >= 1.0:
            base = cv2.warpAffine(grey, self._src_to_frame, (self.width, self.height),
                                  flags=interp, borderMode=cv2.BORDER_REFLECT)
        else:  # downscale: area-average a crop instead of aliasing through warpAffine
            x0, y0 = -tx / self.scale, -ty / self.scale
            crop = _crop(grey, x0, y0, self.width / self.scale, self.height / self.scale)
            base = cv2.resize(crop, (self.width, self.height), interpolation=interp)
        self.base = base.astype(np.float32)
        self.anchors = {k: self._to_frame(v) for k, v in ANCHORS_SRC.items()}
        fx0, fy0 = self._to_frame((bx0, by0))
        fx1, fy1 = self._to_frame((bx1, by1))
        self.face_h = fy1 - fy0
        self._face_box = (round(fx0), round(fy0), round(fx1 - fx0), round(fy1 - fy0))
        inner = (self.anchors["brow_left_inner"][0], self.anchors["brow_right_inner"][0])
        self.midline_x = (inner[0] + inner[1]) / 2
        self.apex_px = APEX_FRACTION * self.face_h
        self.background = self._make_background(grey)
        yy, xx = np.mgrid[0 : self.height, 0 : self.width].astype(np.float32)
        self._grid = np.dstack([xx, yy])  # (h, w, 2) identity map
        self._xs, self._ys = xx[0].copy(), yy[:, 0].copy()
        self.fields = {au: _support(self._au_field(AU_BUMPS[au])) for au in AUS}
        self._eyes = [self._eye_patch(name) for name in ("eye_left", "eye_right")]
        rng = np.random.default_rng(self.seed)
        self._noise = rng.standard_normal(
            (NOISE_TILES, self.height + NOISE_MARGIN, self.width + NOISE_MARGIN), dtype=np.float32)

    # ---- geometry ---------------------------------------------------------------------

    def _to_frame(self, p: tuple[float, float]) -> tuple[float, float]:
        m = self._src_to_frame
        return (float(m[0, 0] * p[0] + m[0, 2]), float(m[1, 1] * p[1] + m[1, 2]))

    def face_box(self) -> tuple[int, int, int, int]:
        """Neutral face box in frame pixels as (x, y, w, h): cheeks, hairline to chin."""
        return self._face_box

    def landmarks(self) -> dict[str, tuple[float, float]]:
        """Neutral anchor points in frame pixels (x, y)."""
        return dict(self.anchors)

    def region_boxes(self) -> dict[str, tuple[int, int, int, int]]:
        """Boxes (x, y, w, h) around the regions AUs move: brows, eyes, nose, cheeks, mouth."""
        a, h = self.anchors, self.face_h

        def box(names: Iterable[str], pad_x: float, pad_y: float) -> tuple[int, int, int, int]:
            xs = [a[n][0] for n in names]
            ys = [a[n][1] for n in names]
            x0, x1 = min(xs) - pad_x * h, max(xs) + pad_x * h
            y0, y1 = min(ys) - pad_y * h, max(ys) + pad_y * h
            return (round(x0), round(y0), round(x1 - x0), round(y1 - y0))

        return {
            "brows": box(["brow_left_outer", "brow_left_inner", "brow_right_inner",
                          "brow_right_outer"], 0.08, 0.08),
            "eyes": box(["eye_left", "eye_right"], 0.11, 0.07),
            "nose": box(["nose_tip", "eye_left", "eye_right"], -0.02, 0.06),
            "cheeks": box(["cheek_left", "cheek_right"], 0.1, 0.1),
            "mouth": box(["mouth_left", "mouth_right", "upper_lip", "lower_lip"], 0.08, 0.07),
        }

    def _point(self, at: str) -> tuple[float, float]:
        names = at.split("+")
        xs = [self.anchors[n][0] for n in names]
        ys = [self.anchors[n][1] for n in names]
        return (sum(xs) / len(xs), sum(ys) / len(ys))

    def _au_field(self, bumps: Iterable[Bump]) -> np.ndarray:
        """Content displacement (h, w, 2) in px at apex for intensity 1."""
        field = np.zeros((self.height, self.width, 2), np.float32)
        xs = np.arange(self.width, dtype=np.float32)
        ys = np.arange(self.height, dtype=np.float32)
        h = self.face_h
        for b in bumps:
            cx, cy = self._point(b.at)
            side = float(b.side) if b.side else (-1.0 if cx < self.midline_x else 1.0)
            cx += side * b.offset[0] * h
            cy += b.offset[1] * h
            g = np.outer(_window(ys, cy, b.sigma[1] * h), _window(xs, cx, b.sigma[0] * h))
            field[..., 0] += g * (b.vector[0] * side * self.apex_px)
            field[..., 1] += g * (b.vector[1] * self.apex_px)
        return field

    def _make_background(self, grey: np.ndarray) -> np.ndarray:
        x0, y0, x1 = BACKGROUND_SRC
        w = x1 - x0
        h = w * self.height / self.width
        crop = _crop(grey, x0, y0, w, h)
        interp = cv2.INTER_AREA if self.width < w else cv2.INTER_LINEAR
        return cv2.resize(crop, (self.width, self.height), interpolation=interp).astype(np.float32)

    def _eye_patch(self, name: str) -> dict:
        """Eye box, its closed-lid texture and the lid geometry, for the blink blend."""
        cx, cy = self.anchors[name]
        hw, hh = EYE_HALF_W_SRC * self.scale, EYE_HALF_H_SRC * self.scale
        x0, x1 = max(int(cx - hw - 3), 0), min(int(cx + hw + 4), self.width)
        y0, y1 = max(int(cy - hh - 4), 0), min(int(cy + hh + 5), self.height)
        # Closed lid: per column, skin blended from just above to just below the opening
        # (so the patch meets the surrounding skin), a little darker as lids are shaded.
        above = self.base[max(int(cy - hh - 3), 0) : max(int(cy - hh - 1), 1), x0:x1].mean(axis=0)
        below = self.base[int(cy + hh + 1) : int(cy + hh + 3), x0:x1].mean(axis=0)
        a = np.linspace(0.0, 1.0, y1 - y0, dtype=np.float32)[:, None]
        closed = (above[None, :] * (1.0 - a) + below[None, :] * a) * 0.9
        closed = cv2.GaussianBlur(closed, (0, 0), 1.0)
        xs = np.arange(x0, x1, dtype=np.float32)
        ys = np.arange(y0, y1, dtype=np.float32)[:, None]
        u = np.clip((xs - cx) / hw, -1.0, 1.0)
        half = hh * np.sqrt(1.0 - u**2)  # lid opening half height per column
        inside = np.clip((hw + 2.0 - np.abs(xs - cx)) / 2.0, 0.0, 1.0)  # soft eye corners
        top = cy - half  # lid edge when open; it reaches top + 2 * half when closed
        # Fade in over 2 px above the opening so the lid has no hard upper outline.
        fade = np.clip((ys - top[None, :]) / 2.0 + 1.0, 0.0, 1.0) * inside[None, :]
        f32 = np.float32
        return {"x0": x0, "y0": y0, "x1": x1, "y1": y1, "top": top.astype(f32),
                "span": (2.0 * half).astype(f32), "inside": inside.astype(f32),
                "fade": fade.astype(f32), "ys": ys, "closed": closed.astype(f32)}

    # ---- rendering --------------------------------------------------------------------

    def displacement(self, aus: Mapping[str, float]) -> np.ndarray | None:
        """Summed content displacement (h, w, 2) for AU scales, or None when all are 0."""
        part = self._displacement_roi(aus)
        if part is None:
            return None
        (x0, y0, x1, y1), d = part
        total = np.zeros((self.height, self.width, 2), np.float32)
        total[y0:y1, x0:x1] = d
        return total

    def _displacement_roi(
        self, aus: Mapping[str, float]
    ) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
        """Summed displacement over the union of the active fields' supports:
        ((x0, y0, x1, y1), (y1 - y0, x1 - x0, 2) float32), or None when all AUs are 0."""
        active = [(self.fields[au], np.float32(w)) for au, w in aus.items() if w != 0.0]
        if not active:
            return None
        if len(active) == 1:
            f, w = active[0]
            return (f.x0, f.y0, f.x1, f.y1), f.dxy * w
        x0, y0 = min(f.x0 for f, _ in active), min(f.y0 for f, _ in active)
        x1, y1 = max(f.x1 for f, _ in active), max(f.y1 for f, _ in active)
        total = np.zeros((y1 - y0, x1 - x0, 2), np.float32)
        for f, w in active:
            total[f.y0 - y0 : f.y1 - y0, f.x0 - x0 : f.x1 - x0] += f.dxy * w
        return (x0, y0, x1, y1), total

    def _apply_blink(self, img: np.ndarray, closure: float) -> np.ndarray:
        img = img.copy()
        for e in self._eyes:
            # Lid edge moves from the top of the opening to the bottom as closure -> 1.
            d = e["ys"] - (e["top"] + e["span"] * np.float32(closure))[None, :]  # px below edge
            cover = np.clip(np.float32(0.5) - d, 0.0, 1.0)  # 1 above the edge
            cover *= e["fade"]
            lash = np.exp(np.float32(-0.5 / 0.8**2) * d * d)
            lash *= e["inside"]
            lash *= cover
            roi = img[e["y0"] : e["y1"], e["x0"] : e["x1"]]
            mixed = roi * (1.0 - cover) + e["closed"] * cover
            mixed -= np.float32(30.0 * min(closure * 3.0, 1.0)) * lash
            roi[...] = mixed
        return img

    def _head_transform(self, pose: Pose) -> np.ndarray:
        """Forward head transform (2x3): roll about the face centre, then translation."""
        fx, fy, fw, fh = self._face_box
        fwd = cv2.getRotationMatrix2D((fx + fw / 2, fy + fh / 2), math.degrees(pose.roll_rad), 1.0)
        fwd[:, 2] += (pose.dx_px, pose.dy_px)
        return fwd

    def warp(self, pose: Pose, image: np.ndarray | None = None) -> np.ndarray:
        """The face image (float32) in ``pose``, before lighting and noise."""
        img = self.base if image is None else image
        if pose.blink > 0.0:
            img = self._apply_blink(img, pose.blink)
        part = self._displacement_roi(pose.aus)
        moving = pose.dx_px != 0.0 or pose.dy_px != 0.0 or pose.roll_rad != 0.0
        if not moving:
            if part is None:
                return img
            # Still head: only the AUs' support moves, so remap just that box (outside it
            # the map is the identity and the remap would copy the image exactly).
            (x0, y0, x1, y1), disp = part
            patch = cv2.remap(img, self._grid[y0:y1, x0:x1] - disp, None, cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT)
            out = img if pose.blink > 0.0 else img.copy()  # the blink already copied
            out[y0:y1, x0:x1] = patch
            return out
        # Head move: one remap whose map is the inverse head transform (built from a row
        # and a column, not by transforming every pixel) minus the AU field carried along
        # with the head, so expressions move with the face.
        fwd = self._head_transform(pose)
        inv = cv2.invertAffineTransform(fwd).astype(np.float32)  # float32 maps for remap
        xs, ys = self._xs, self._ys
        map_x = (inv[0, 0] * xs)[None, :] + (inv[0, 1] * ys + inv[0, 2])[:, None]
        map_y = (inv[1, 0] * xs)[None, :] + (inv[1, 1] * ys + inv[1, 2])[:, None]
        if part is not None:
            (x0, y0, x1, y1), disp = part
            # Warp only the field's box, into the box its forward image covers (+2 px).
            corners = np.array([[x0, y0, 1.0], [x1, y0, 1.0], [x0, y1, 1.0], [x1, y1, 1.0]])
            moved = corners @ fwd.T
            bx0, by0 = (max(math.floor(v) - 2, 0) for v in moved.min(axis=0))
            bx1 = min(math.ceil(moved[:, 0].max()) + 2, self.width)
            by1 = min(math.ceil(moved[:, 1].max()) + 2, self.height)
            if bx1 > bx0 and by1 > by0:
                m = fwd.copy()
                m[:, 2] += fwd[:, :2] @ (x0, y0) - (bx0, by0)  # box-local in and out
                d = cv2.warpAffine(disp, m, (bx1 - bx0, by1 - by0), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                map_x[by0:by1, bx0:bx1] -= d[..., 0]
                map_y[by0:by1, bx0:bx1] -= d[..., 1]
        return cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    def finish(self, img: np.ndarray, gain: float, noise_sigma: float, key: int) -> np.ndarray:
        """Lighting gain, sensor noise (deterministic in ``key``) and 8-bit quantisation."""
        # One fused pass (scale, add noise, round, saturate to uint8) instead of four
        # full-frame float temporaries.
        if noise_sigma > 0.0:
            h = hash_int(self.seed, key, salt=1)
            tile = h % NOISE_TILES
            oy = (h >> 8) % NOISE_MARGIN
            ox = (h >> 16) % NOISE_MARGIN
            noise = self._noise[tile, oy : oy + self.height, ox : ox + self.width]
            return cv2.addWeighted(img, float(gain), noise, float(noise_sigma), 0.0,
                                   dtype=cv2.CV_8U)
        return cv2.addWeighted(img, float(gain), img, 0.0, 0.0, dtype=cv2.CV_8U)

    def render(self, pose: Pose, *, gain: float = 1.0, noise_sigma: float = 0.0, key: int = 0,
               face: bool = True) -> np.ndarray:
        """uint8 (height, width) frame of the face in ``pose`` (or the empty background)."""
        img = self.warp(pose) if face else self.background
        return self.finish(img, gain, noise_sigma, key)


def _support(field: np.ndarray) -> _Field:
    """Crop a full-frame field to the bounding box of its non-zero pixels."""
    nz = np.any(field != 0.0, axis=2)
    rows, cols = np.flatnonzero(nz.any(axis=1)), np.flatnonzero(nz.any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return _Field(x0, y0, x1, y1, np.ascontiguousarray(field[y0:y1, x0:x1]))


def _window(x: np.ndarray, c: float, sigma: float) -> np.ndarray:
    """A Gaussian cut to exactly 0 beyond 2.5 sigma, so an AU moves nothing far away."""
    floor = math.exp(-0.5 * 2.5**2)
    g = (np.exp(-0.5 * ((x - c) / sigma) ** 2) - floor) / (1.0 - floor)
    return np.clip(g, 0.0, None).astype(np.float32)


PHOTOGRAPH = "astronaut_grey.png"  # package data of hil.sim, see ASTRONAUT.md


def photograph_u8() -> np.ndarray:
    """The grey 512x512 portrait, as shipped."""
    with resources.as_file(resources.files("hil.sim") / PHOTOGRAPH) as path:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.shape != (512, 512):
        raise FileNotFoundError(f"hil/sim/{PHOTOGRAPH}: missing or damaged package data")
    return img


def _photograph() -> np.ndarray:
    return photograph_u8().astype(np.float32)


def _crop(img: np.ndarray, x0: float, y0: float, w: float, h: float) -> np.ndarray:
    """A sub-pixel crop (reflecting at the borders) of size round(w) x round(h)."""
    m = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0]])
    return cv2.warpAffine(img, m, (round(w), round(h)), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)
