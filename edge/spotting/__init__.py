"""Micro-expression spotting: face tracking, flow scoring, streaming spotter, features."""

from .face import CROP, FaceObs, FaceStatus, FaceTracker
from .spotter import SpottedInterval, Spotter
from .visual import VisualFeatures, interval_features, visual_features

__all__ = [
    "CROP", "FaceObs", "FaceStatus", "FaceTracker", "SpottedInterval", "Spotter",
    "VisualFeatures", "interval_features", "visual_features",
]
