"""What drivers hand to the runtime: timestamped blocks, frames, edges and markers.

Every host time is CLOCK_MONOTONIC nanoseconds (``time.monotonic_ns()``), named ``*_ns``.
Device time keeps the device's own unit and says it in the name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np


def monotonic_ns() -> int:
    """Host time: CLOCK_MONOTONIC in nanoseconds, the one time base of the rig."""
    return time.monotonic_ns()


STATUS_ADS1299 = "ads1299"  # sensors.ads1299's word: LOFF_STATP/N of chip 0, chip 1's P
STATUS_HUB = "hub"  # sensors.hub_protocol's STATUS_* bits


@dataclass(frozen=True)
class StreamInfo:
    """Describes a sampled stream as data, so consumers never hard-code channel indices."""

    name: str  # "eeg", "hub"
    fs_hz: float  # nominal sample rate
    channels: tuple[str, ...]
    units: tuple[str, ...]  # per channel, e.g. "uV", "uS", "degC"
    scale: tuple[float, ...]  # physical value = raw * scale + offset
    offset: tuple[float, ...]
    device_time_unit: str  # "sample" (EEG: sample index) or "us" (hub: MCU microseconds)
    # How SampleBlock.status reads (sensors.status): STATUS_ADS1299, STATUS_HUB, or ""
    # (a layout that says nothing of channels).
    status_layout: str = ""

    def __post_init__(self) -> None:
        n = len(self.channels)
        if not (len(self.units) == len(self.scale) == len(self.offset) == n):
            raise ValueError(f"stream {self.name}: channels, units, scale, offset differ in length")

    def index(self, channel: str) -> int:
        return self.channels.index(channel)


@dataclass(frozen=True)
class SampleBlock:
    """A run of samples from one stream, in the order the device produced them.

    ``index`` is the device's sample counter (never wraps within a session); a jump in it
    between or inside blocks is a gap the driver detected and counted. ``host_t_ns`` is the
    raw host time the driver attributes to each sample (DRDY edge time, or arrival time):
    the clock model in ``edge.clock.model`` turns device time into the common clock.
    """

    stream: str
    index: np.ndarray  # (n,) int64 device sample counter
    device_t: np.ndarray  # (n,) int64 device time, unit in StreamInfo.device_time_unit
    host_t_ns: np.ndarray  # (n,) int64 host CLOCK_MONOTONIC ns
    raw: np.ndarray  # (n, n_channels) int32 counts as the device sent them (bit-exact)
    values: np.ndarray  # (n, n_channels) float64 physical units (StreamInfo.units)
    trigger: np.ndarray  # (n,) uint8 trigger-input bits the device saw (bit 0: sync pulse)
    status: np.ndarray  # (n,) uint32 device status per sample (EEG: 24-bit status word)

    def __len__(self) -> int:
        return int(self.index.shape[0])


@dataclass(frozen=True)
class Frame:
    """One camera frame: sensor frame counter, sensor timestamp, grey image."""

    seq: int  # frame counter from the sensor or backend (gaps mean drops)
    t_ns: int  # exposure start on CLOCK_MONOTONIC ns (picamera2 SensorTimestamp)
    luma: np.ndarray  # (h, w) uint8
    trigger: int = 0  # strobe/trigger input level during exposure, where the camera has one


@dataclass(frozen=True)
class Edge:
    """A GPIO edge with the time it happened (kernel timestamp where the backend has one)."""

    t_ns: int
    rising: bool
    seq: int = 0  # per-line event sequence number (gpiod); a gap means the kernel dropped edges


@dataclass(frozen=True)
class Marker:
    """A stimulus marker code read from the marker input (100 rest, 101..148 stimuli)."""

    code: int
    t_ns: int


@dataclass
class StreamCounters:
    """Per-stream health counters a driver keeps; never reset during a session."""

    samples: int = 0
    dropped: int = 0  # samples or frames known lost (gaps, missed DRDY, overwritten frames)
    errors: int = 0  # CRC failures, decode errors
    resyncs: int = 0
    extra: dict[str, int] = field(default_factory=dict)
