"""Optical flow on the stabilised face crop and its block-grid motion score.

The score follows MDMD (main directional maximal difference, Wang et al. 2017) in
spirit: the crop is cut into a grid of blocks; in each block the flow directions are
quantised into 8 bins, the *main direction* is the bin carrying most motion, and the
block's score is the mean magnitude moving in that direction. A facial action moves a
few blocks coherently; sensor noise spreads over all directions and scores low. The
frame score is the mean of the top blocks, so a small localised action is not diluted
by the still rest of the face.

Global (head) motion left over after stabilisation is removed first by subtracting the
median flow vector of the crop; the removed vector is reported for the head-move test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import cv2
import numpy as np

GRID = 8  # blocks per side
N_DIR = 8  # direction bins
FLOW_SIDE = 64  # flow is averaged down to this side before scoring: less noise, 4x cheaper

# Face regions by block row (fractions of the crop height, crop = Haar box x 1.1).
# upper: brows and eyes (AU1, AU2, AU4, AU5, AU6, AU7); mid: nose, cheeks, upper lip
# (AU9, AU10); lower: mouth and chin (AU12, AU14, AU15, AU17, AU20, AU23, AU24, AU25).
REGIONS: dict[str, tuple[float, float]] = {
    "upper": (0.12, 0.48),
    "mid": (0.48, 0.66),
    "lower": (0.66, 1.0),
}
REGION_AUS: dict[str, tuple[str, ...]] = {
    "upper": ("AU1", "AU2", "AU4", "AU5", "AU6", "AU7"),
    "mid": ("AU6", "AU9", "AU10", "AU11"),
    "lower": ("AU12", "AU14", "AU15", "AU17", "AU20", "AU23", "AU24", "AU25", "AU26"),
}


def _row_mask(band: tuple[float, float]) -> np.ndarray:
    """Block rows whose centre lies in the band, as a (GRID,) bool mask."""
    centres = (np.arange(GRID) + 0.5) / GRID
    return (centres >= band[0]) & (centres < band[1])


ROW_MASKS = {name: _row_mask(b) for name, b in REGIONS.items()}
# Eye rows in crop pixels: a Haar box x 1.1 puts the eyes at ~0.39 (brows ~0.29).
EYE_PIX_BAND = (0.33, 0.45)

_PIX = FLOW_SIDE // GRID
# Block index of every pixel of the downscaled flow, computed once.
_BLOCK_ID = (
    (np.arange(FLOW_SIDE)[:, None] // _PIX) * GRID + (np.arange(FLOW_SIDE)[None, :] // _PIX)
).ravel()
# First histogram bin of every pixel's block (block id x N_DIR), as intp for bincount.
_BIN0 = (_BLOCK_ID * N_DIR).astype(np.intp)
_N_PIX = FLOW_SIDE * FLOW_SIDE
_MID = (_N_PIX // 2 - 1, _N_PIX // 2)  # the two middle order statistics (even count)
_HALF = np.float32(2.0)
_ANG_OFF = np.float32(np.pi)  # float32 like the angles: same rounding as ``ang + np.pi``
_ANG_SCALE = np.float32(N_DIR / (2 * np.pi))


def make_dis(preset: str = "ultrafast") -> cv2.DISOpticalFlow:
    presets = {
        "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
        "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
        "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
    }
    return cv2.DISOpticalFlow_create(presets[preset])


@dataclass(frozen=True)
class BlockMotion:
    """Motion between two crops, summarised on the block grid."""

    blocks: np.ndarray  # (GRID, GRID) float32 main-directional magnitude, crop pixels
    global_uv: tuple[float, float]  # median flow removed as head motion, crop pixels
    score: float  # mean of the top blocks
    # The averaged flow and its median: ``vectors`` is derived on demand (the spotter
    # needs only ``score`` on most frames).
    small: np.ndarray = field(repr=False, compare=False)
    g: np.ndarray = field(repr=False, compare=False)

    @cached_property
    def vectors(self) -> np.ndarray:
        """(GRID, GRID, 2) float32 mean residual (u, v) per block."""
        # INTER_AREA at an integer factor is the exact block mean.
        vec = cv2.resize(self.small, (GRID, GRID), interpolation=cv2.INTER_AREA) - self.g
        return vec.astype(np.float32)

    def region_scores(self) -> dict[str, float]:
        rows = self.blocks.max(axis=1)
        return {name: float(rows[m].max()) for name, m in ROW_MASKS.items()}


def eye_dominance(ref: np.ndarray, apex: np.ndarray,
                  band: tuple[float, float] = EYE_PIX_BAND) -> float:
    """How much a change is the eyelids' alone: peak in the eye band over peak elsewhere.

    Uses the blurred absolute grey difference of the two crops along pixel rows: a
    blink swaps iris for lid (a large brightness change confined to the eyes), while
    an expression displaces edges across the face. 1 means only the eyes changed,
    0.5 an equal change elsewhere; rows just outside the band are a guard zone. On the
    simulated face blinks score ~0.95 and expressions at most ~0.55.
    """
    d = cv2.blur(cv2.absdiff(ref, apex).astype(np.float32), (7, 7))
    rows = d.max(axis=1)
    h = rows.shape[0]
    y0, y1 = round(band[0] * h), round(band[1] * h)
    guard = round(0.04 * h)
    eye = float(rows[y0:y1].max())
    other = float(max(rows[: max(y0 - guard, 1)].max(), rows[min(y1 + guard, h - 1):].max()))
    return eye / (eye + other + 1e-9)


def block_motion(flow: np.ndarray, top: int = 3) -> BlockMotion:
    """Score a (h, w, 2) float32 flow field of the crop (see module doc).

    Written for few, large numpy calls (it runs twice a frame at 150 fps): planar u/v,
    one partition for both medians, the block id offsets precomputed.
    """
    small = cv2.resize(flow, (FLOW_SIDE, FLOW_SIDE), interpolation=cv2.INTER_AREA)
    # Averaging a flow field keeps its values in crop pixels: no rescale needed.
    uv_t = small.reshape(-1, 2).T  # (2, n) view
    part = np.partition(uv_t, _MID, axis=1)  # median of u and of v in one call
    g = (part[:, _MID[0]] + part[:, _MID[1]]) / _HALF  # as np.median: float32 mean of the 2
    u = uv_t[0] - g[0]
    v = uv_t[1] - g[1]
    mag = cv2.magnitude(u, v).ravel()  # SIMD sqrt(u^2 + v^2), float32 (hypot is ~10x slower)
    ang = np.arctan2(v, u)
    ang += _ANG_OFF
    ang *= _ANG_SCALE
    bins = ang.astype(np.intp)
    bins &= N_DIR - 1  # == % N_DIR for the non-negative bins (+pi lands on N_DIR)
    bins += _BIN0
    hist = np.bincount(bins, weights=mag, minlength=GRID * GRID * N_DIR)
    per_block = hist.reshape(GRID * GRID, N_DIR).max(axis=1) / (_PIX * _PIX)
    blocks = per_block.reshape(GRID, GRID).astype(np.float32)
    best = np.partition(blocks.ravel(), -top)[-top:]
    score = float(np.add.reduce(best) / top)  # float32 mean, as ndarray.mean
    return BlockMotion(blocks, (float(g[0]), float(g[1])), score, small, g)
