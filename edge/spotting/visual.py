"""Visual features of a spotted interval: onset-to-apex flow and optical strain.

STSTNet-style input: a 28x28x3 float32 array, channels (u, v, strain), computed from the
dense optical flow between the onset (neutral) crop and the apex crop.

Normalisation (documented, fixed; no per-sample min-max, so amplitude survives):
  * u, v: flow in pixels of the 128 px stabilised face crop, after removing the median
    (residual head translation), averaged down to 28x28 (INTER_AREA), divided by
    ``FLOW_SCALE`` (4 px) and clipped to [-1, 1];
  * strain: optical strain magnitude sqrt(exx^2 + eyy^2 + 2 exy^2) of that flow
    (dimensionless), averaged to 28x28, divided by ``STRAIN_SCALE`` (0.2) and clipped
    to [0, 1].
A model trained on min-max-normalised inputs can apply that on top (``minmax=True``).
TV-L1 (what the MMME authors used) is only in opencv-contrib: DIS at the medium preset
stands in for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .flow import ROW_MASKS, block_motion, make_dis

SIDE = 28
FLOW_SCALE = 4.0
STRAIN_SCALE = 0.2


@dataclass(frozen=True)
class VisualFeatures:
    stst: np.ndarray  # (28, 28, 3) float32: u, v, strain (normalised, see module doc)
    region_px: dict[str, float]  # peak main-directional motion per face region, crop px
    region_uv: dict[str, tuple[float, float]]  # mean (u, v) per face region, crop px
    mean_strain: float


def onset_apex_flow(onset: np.ndarray, apex: np.ndarray) -> np.ndarray:
    """Dense (h, w, 2) float32 flow from the onset crop to the apex crop, median removed."""
    flow = make_dis("medium").calc(onset, apex, None)
    return flow - np.median(flow.reshape(-1, 2), axis=0)


def optical_strain(flow: np.ndarray) -> np.ndarray:
    """Strain magnitude of a flow field (central differences), float32 (h, w)."""
    u, v = flow[..., 0], flow[..., 1]
    ux = cv2.Sobel(u, cv2.CV_32F, 1, 0, ksize=1, scale=0.5)
    uy = cv2.Sobel(u, cv2.CV_32F, 0, 1, ksize=1, scale=0.5)
    vx = cv2.Sobel(v, cv2.CV_32F, 1, 0, ksize=1, scale=0.5)
    vy = cv2.Sobel(v, cv2.CV_32F, 0, 1, ksize=1, scale=0.5)
    exy = 0.5 * (uy + vx)
    return np.sqrt(ux * ux + vy * vy + 2.0 * exy * exy)


def visual_features(onset: np.ndarray, apex: np.ndarray, *, minmax: bool = False
                    ) -> VisualFeatures:
    """Features of one interval from its onset and apex crops (uint8, same size)."""
    flow = onset_apex_flow(onset, apex)
    strain = optical_strain(flow)
    small = cv2.resize(flow, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    s_small = cv2.resize(strain, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    stst = np.empty((SIDE, SIDE, 3), np.float32)
    stst[..., :2] = np.clip(small / FLOW_SCALE, -1.0, 1.0)
    stst[..., 2] = np.clip(s_small / STRAIN_SCALE, 0.0, 1.0)
    if minmax:
        lo = stst.min(axis=(0, 1))
        hi = stst.max(axis=(0, 1))
        stst = ((stst - lo) / np.maximum(hi - lo, 1e-6)).astype(np.float32)
    bm = block_motion(flow)
    region_uv = {
        name: (float(bm.vectors[m, :, 0].mean()), float(bm.vectors[m, :, 1].mean()))
        for name, m in ROW_MASKS.items()
    }
    return VisualFeatures(stst, bm.region_scores(), region_uv, float(strain.mean()))


def interval_features(interval, *, minmax: bool = False) -> VisualFeatures | None:
    """Features of a :class:`SpottedInterval` that carries its crops, else None."""
    if interval.onset_crop is None or interval.apex_crop is None:
        return None
    return visual_features(interval.onset_crop, interval.apex_crop, minmax=minmax)
