"""What a stream's status word says of each channel (sensors.status), and that the
feature pipeline listens: ADS1299 lead-off on one or two chips, the hub's ECG lead-off,
EDA open and SKT fault, and nothing at all from a layout that does not carry it (a
Cyton's packet footers once read as lead-off on C3 and C4 of every sample)."""

from __future__ import annotations

import numpy as np

from edge.features import FeaturePipeline
from sensors import hub_protocol as hp
from sensors.blocks import STATUS_ADS1299, STATUS_HUB, SampleBlock, StreamInfo
from sensors.status import channel_faults

HEADER = 0xC00000  # the ADS1299 status word's 1100 header


def _info(name: str, channels: tuple[str, ...], layout: str, fs: float = 250.0) -> StreamInfo:
    n = len(channels)
    return StreamInfo(name, fs, channels, ("uV",) * n, (1.0,) * n, (0.0,) * n, "sample",
                      layout)


EEG8 = _info("eeg", ("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2"), STATUS_ADS1299)


def test_one_chip_p_and_n_flags_mark_their_channel() -> None:
    status = np.array([HEADER, HEADER | (1 << 12), HEADER | (1 << 19) | (1 << 5)], np.uint32)
    m = channel_faults(EEG8, status)
    assert m is not None and m.shape == (3, 8)
    assert not m[0].any()
    assert m[1].tolist() == [True] + [False] * 7  # IN1P off
    assert m[2, 7] and m[2, 1] and m[2].sum() == 2  # IN8P and IN2N off


def test_the_second_chips_p_flags_mark_channels_9_to_16() -> None:
    info = _info("eeg", tuple(f"E{i}" for i in range(16)), STATUS_ADS1299)
    m = channel_faults(info, np.array([HEADER | (1 << 26)], np.uint32))  # chip 1, IN3P
    assert m is not None and np.flatnonzero(m[0]).tolist() == [10]


def test_the_hub_flags_ecg_lead_off_eda_open_and_skt_fault_on_their_channels() -> None:
    info = _info("hub", ("ECG", "PPG", "RSP", "EDA", "SKT"), STATUS_HUB, 1000.0)
    status = np.array([0, hp.STATUS_ECG_LEAD_OFF, hp.STATUS_EDA_OPEN | hp.STATUS_SKT_FAULT,
                       hp.STATUS_SATURATED | hp.STATUS_LOW_BATTERY], np.uint32)
    m = channel_faults(info, status)
    assert m is not None
    assert m.astype(int).tolist() == [[0, 0, 0, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 1, 1],
                                      [0, 0, 0, 0, 0]]


def test_a_layout_that_carries_no_lead_off_says_nothing() -> None:
    cyton = _info("eeg", EEG8.channels, "")
    assert channel_faults(cyton, np.full(4, 0xC0 | 0xC0 << 8, np.uint32)) is None


def _eeg_block(info: StreamInfo, status: int, n: int, start: int) -> SampleBlock:
    rng = np.random.default_rng(start)
    x = rng.normal(0, 10, (n, len(info.channels)))
    idx = np.arange(start, start + n, dtype=np.int64)
    return SampleBlock("eeg", idx, idx, 10**12 + (idx * 1e9 / info.fs_hz).astype(np.int64),
                       x.astype(np.int32), x, np.zeros(n, np.uint8), np.full(n, status, np.uint32))


def test_a_cyton_rig_keeps_every_eeg_channel_valid() -> None:
    """Its footers (0xC0 0xC0) sit where an ADS1299 word has IN3/IN4 lead-off bits."""
    cyton = _info("eeg", EEG8.channels, "")
    pipe = FeaturePipeline(cyton, None)
    feats = []
    for k in range(10):
        feats += pipe.update(_eeg_block(cyton, 0xC0 | 0xC0 << 8, 250, 250 * k))
    c3 = [f for f in feats if f.name == "eeg_C3_alpha_pow"]
    assert c3 and c3[-1].valid, c3[-1]


def test_hub_ecg_lead_off_makes_the_heart_rate_invalid_with_its_reason() -> None:
    info = _info("hub", ("ECG",), STATUS_HUB, 250.0)
    pipe = FeaturePipeline(None, info)
    t = np.arange(250 * 20) / 250.0
    ecg = np.sin(2 * np.pi * 1.2 * t) ** 31  # a sharp wave at 72 bpm
    status = np.where(t >= 12.0, hp.STATUS_ECG_LEAD_OFF, 0).astype(np.uint32)
    feats = []
    for a in range(0, t.size, 50):
        idx = np.arange(a, a + 50, dtype=np.int64)
        feats += pipe.update(SampleBlock(
            "hub", idx, idx, 10**12 + (idx * 4_000_000), (ecg[a:a + 50, None] * 1000).astype(
                np.int32), ecg[a:a + 50, None], np.zeros(50, np.uint8), status[a:a + 50]))
    late = [f for f in feats if f.name == "ecg_hr_bpm" and (f.t_ns - 10**12) / 1e9 > 13.0]
    assert late and not any(f.valid for f in late)
    assert {f.reason for f in late} == {"lead_off"}
