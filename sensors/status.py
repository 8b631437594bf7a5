"""What ``SampleBlock.status`` says about each channel, read by the stream's layout.

A driver names how its status word reads in ``StreamInfo.status_layout``; consumers ask
:func:`channel_faults` and never decode device bits themselves. A layout this module does
not know (a Cyton's packet footers, an imported recording) says nothing about channels.
"""

from __future__ import annotations

import numpy as np

from sensors import hub_protocol as hp
from sensors.ads1299 import CHANNELS_PER_CHIP, lead_off_from_block_status
from sensors.blocks import STATUS_ADS1299, STATUS_HUB, StreamInfo

# Hub channel (by name, any case) -> the status bit that says its sensor is not reading.
HUB_FAULTS = {"ecg": hp.STATUS_ECG_LEAD_OFF, "eda": hp.STATUS_EDA_OPEN,
              "skt": hp.STATUS_SKT_FAULT}


def channel_faults(info: StreamInfo, status: np.ndarray) -> np.ndarray | None:
    """(n, channels) bool: the device says this sample of this channel is not to be
    trusted (electrode off, open input, sensor fault); None when its layout says nothing."""
    s = np.asarray(status, np.uint32)
    n_ch = len(info.channels)
    if info.status_layout == STATUS_ADS1299:
        n_chips = max(1, -(-n_ch // CHANNELS_PER_CHIP))
        p_off, n_off = lead_off_from_block_status(s, n_chips)
        out = p_off[:, :n_ch].copy()
        k = min(n_ch, n_off.shape[1])  # N flags: chip 0's, per channel (chips 1.. share SRB1)
        out[:, :k] |= n_off[:, :k]
        return out
    if info.status_layout == STATUS_HUB:
        out = np.zeros((s.shape[0], n_ch), bool)
        for j, name in enumerate(info.channels):
            bit = HUB_FAULTS.get(name.lower())
            if bit is not None:
                out[:, j] = (s & bit) != 0
        return out
    return None
