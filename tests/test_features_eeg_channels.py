"""EEG band features at 64 channels, and on the channels ``features.eeg_channels`` picks."""

from __future__ import annotations

import numpy as np
import pytest

from edge.features import FeatureConfig, FeaturePipeline
from sensors.ads1299 import Ads1299Settings, stream_info
from sensors.blocks import SampleBlock

FS = 1000
NAMES = [f"E{i}" for i in range(64)]


def _blocks(seconds: float, alpha_on: int) -> list[SampleBlock]:
    """20-ms blocks of 64 channels: 2 uV noise, a 10-Hz 20-uV sine on channel ``alpha_on``."""
    rng = np.random.default_rng(0)
    n = int(seconds * FS)
    x = rng.normal(0.0, 2.0, (n, 64))
    x[:, alpha_on] += 20.0 * np.sin(2 * np.pi * 10.0 * np.arange(n) / FS)
    out = []
    for a in range(0, n, 20):
        k = np.arange(a, a + 20)
        raw = np.rint(x[a:a + 20] / 0.02235).astype(np.int32)
        out.append(SampleBlock("eeg", k, k, 10**12 + k * 1_000_000, raw, x[a:a + 20],
                               np.zeros(20, np.uint8), np.full(20, 0xC00000, np.uint32)))
    return out


@pytest.mark.parametrize("picked", [None, ("E5", "E40", "E63")])
def test_band_features_cover_64_channels_or_exactly_the_picked_ones(picked) -> None:
    info = stream_info(Ads1299Settings(n_chips=8, channels=NAMES))
    pipe = FeaturePipeline(info, None, FeatureConfig(eeg_channels=picked, eeg_frontal=()))
    for b in _blocks(4.0, alpha_on=40):
        pipe.update(b)
    alpha = {ch: pipe.latest[f"eeg_{ch}_alpha_pow"] for ch in (picked or NAMES)}
    assert set(alpha) == set(picked or NAMES)
    if picked:  # the others get no band features at all
        assert not any(k.startswith("eeg_E6_") for k in pipe.latest)
    # The 20-uV sine gives A^2/2 = 200 uV^2 of alpha on E40; the noise-only channels little.
    assert alpha["E40"].value == pytest.approx(200.0, rel=0.15)
    assert alpha["E5"].value < 5.0 and alpha["E63"].value < 5.0


def test_an_unknown_picked_channel_is_a_clear_error() -> None:
    info = stream_info(Ads1299Settings(n_chips=8, channels=NAMES))
    with pytest.raises(ValueError, match="Cz"):
        FeaturePipeline(info, None, FeatureConfig(eeg_channels=("Cz",)))
