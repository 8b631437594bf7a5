"""Streaming physiological and EEG features (see pipeline.FeaturePipeline)."""

from .base import Feature
from .ecg import EcgFeatures
from .eda import EdaFeatures, Scr
from .eeg import BANDS, EegFeatures, band_powers, differential_entropy
from .pipeline import EventWindow, FeatureConfig, FeaturePipeline
from .ppg import PpgFeatures
from .rsp import RspFeatures
from .skt import SktFeatures

PhysioPipeline = FeaturePipeline

__all__ = [
    "BANDS", "EcgFeatures", "EdaFeatures", "EegFeatures", "EventWindow", "Feature",
    "FeatureConfig", "FeaturePipeline", "PhysioPipeline", "PpgFeatures", "RspFeatures", "Scr",
    "SktFeatures", "band_powers", "differential_entropy",
]
