"""Playback behind each device's seam: the hub's signal, the EEG's source, the camera.

One mechanism for every seam: a recording becomes tracks on one time line whose zero is
the replay's origin (the bench's ``t0_ns``), and each device's simulator takes its
samples from the track instead of from the scenario:

- hub: :class:`HubPlayback` is a :class:`hil.sim.hub.HubSignal`; the MCU emulator serves
  it through the hub protocol on a real pty, at its crystal's pace, to the same driver.
- EEG: :class:`EegPlayback` is an :class:`hil.sim.ads1299.EegSourceFactory`, the emulator's
  sample source (the "truth" generator), so whatever EEG backend stands on the emulator
  plays it; the chip adds no noise of its own (the recording has the real noise).
- camera: :class:`PlaybackCamera` is a ``sensors.seams.FrameSource`` that hands out the
  recorded frames at their recorded times, converted to the rig's size.

Grids: row k of a sampled track is taken at the device's reading of t0 plus k / fs, so a
device plays its track at its own crystal's rate, as a real one would.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hil.sim.hub import HubSamples
from hil.sim.playback.sources import (
    ReplayError,
    SourceChannel,
    fill_gaps,
    nearest_rows,
    resample,
)
from hil.sim.wire import SYNC, Wire
from sensors import hub_protocol as hp
from sensors.blocks import Frame, StreamCounters, monotonic_ns

I32_MAX = 2**31 - 1
HEADROOM_COUNTS = 2e9  # largest |value| / scale the hub encoding is allowed to reach

# The rig's hub channels: unit, default scale, status bit for "no value here".
HUB_CHANNELS: dict[str, tuple[str, float, int]] = {
    "ECG": ("mV", 1e-4, hp.STATUS_ECG_LEAD_OFF),
    "PPG": ("au", 1e-4, 0),
    "RSP": ("au", 1e-4, 0),
    "EDA": ("uS", 1e-5, hp.STATUS_EDA_OPEN),
    "SKT": ("degC", 1e-4, hp.STATUS_SKT_FAULT),
}
# Factors into the rig's unit; a unit not listed for a channel with a fixed unit is an error.
_TO_UNIT: dict[str, dict[str, float]] = {
    "mV": {"mv": 1.0, "v": 1e3, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3},
    "uS": {"us": 1.0, "µs": 1.0, "μs": 1.0, "s": 1e6, "ms": 1e3, "ns": 1e-3},
    "degC": {"degc": 1.0, "c": 1.0, "°c": 1.0, "celsius": 1.0},
    "uV": {"uv": 1.0, "µv": 1.0, "μv": 1.0, "mv": 1e3, "v": 1e6, "nv": 1e-3},
}


def to_unit(values: np.ndarray, unit: str, target: str, what: str) -> tuple[np.ndarray, str]:
    """Values in ``target`` (a blank source unit is taken to be it already)."""
    if target not in _TO_UNIT:
        return values, unit or target
    u = unit.strip().lower()
    if not u:
        return values, target
    factor = _TO_UNIT[target].get(u)
    if factor is None:
        raise ReplayError(f"{what}: unit {unit!r} cannot be converted to {target}")
    return values * factor, target


def encoding_scale(values: np.ndarray, default: float, lsb: float | None = None) -> float:
    """The hub's scale for a channel: ``default``, or a power of ten finer when the source
    declares a resolution (``lsb``) it would blur (the counts then add at most a tenth of
    a source step); coarser only when the signal would not fit int32 counts. Never clips."""
    scale = default
    while lsb is not None and lsb > 0 and scale > lsb / 10.0:
        scale = float(f"{scale / 10.0:.6g}")  # 1e-06, not 1.0000000000000002e-06
    peak = float(np.max(np.abs(values))) if values.size else 0.0
    if peak / scale <= HEADROOM_COUNTS:
        return scale
    return float(10.0 ** math.ceil(math.log10(peak / HEADROOM_COUNTS)))


# ---------------------------------------------------------------- hub


@dataclass
class HubPlayback:
    """Recorded hub samples on the hub's grid; a :class:`hil.sim.hub.HubSignal`."""

    channels: tuple[str, ...]
    units: tuple[str, ...]
    scale: tuple[float, ...]
    offset: tuple[float, ...]
    fs_hz: float
    raw: np.ndarray  # (n, k) int32
    status: np.ndarray  # (n,) uint16
    din: np.ndarray  # (n,) uint8, bits 1..7
    present: np.ndarray  # (n,) bool: False where the recording has no sample
    row0: int = 0  # grid row of the first sample (its start after the origin x fs)
    report: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> tuple[int, int | None]:
        return (self.row0, self.row0 + self.raw.shape[0])

    @property
    def span_s(self) -> float:
        return (self.row0 + self.raw.shape[0]) / self.fs_hz

    def samples(self, seq: np.ndarray, row: np.ndarray, t_s: np.ndarray) -> HubSamples:
        i = np.asarray(row, dtype=np.int64) - self.row0
        inside = (i >= 0) & (i < self.raw.shape[0])
        j = np.clip(i, 0, max(self.raw.shape[0] - 1, 0))
        return HubSamples(self.raw[j], self.status[j], self.din[j], inside & self.present[j])


def hub_from_channels(chans: Sequence[SourceChannel], mapping: dict[str, str], fs_hz: float,
                      start_s: float, span_s: float, source: str,
                      row0: int = 0) -> HubPlayback:
    """Hub playback of file channels: ``mapping`` rig channel -> source channel name.

    Each channel is cut to [start_s, start_s + span_s) of the source (span 0: to the end),
    converted to the rig's unit, resampled to ``fs_hz`` and encoded at a scale that fits.
    Where the source's ADC sat at a rail the sample's SATURATED status bit is set; where
    the source has no value the previous value is held and the channel's fault bit (ECG
    lead-off, EDA open, SKT fault) is set; both are counted per channel in ``report``.
    """
    by_name = {c.name.lower(): c for c in chans}
    if not mapping:
        mapping = {k: c.name for k in HUB_CHANNELS if (c := by_name.get(k.lower())) is not None}
    if not mapping:
        raise ReplayError(f"{source}: no channel named like the hub's "
                          f"({', '.join(HUB_CHANNELS)}); map them, e.g. --channel-map "
                          f"ppg=PLETH,ecg=II (channels: {', '.join(c.name for c in chans)})")
    order = sorted(mapping, key=lambda k: (list(HUB_CHANNELS).index(k.upper())
                                           if k.upper() in HUB_CHANNELS else 99, k))
    cols, names, units, scales, sat_cols, gap_cols, report = [], [], [], [], [], [], {}
    for rig_name in order:
        src = by_name.get(mapping[rig_name].lower())
        if src is None:
            raise ReplayError(f"{source}: no channel {mapping[rig_name]!r} for {rig_name} "
                              f"(channels: {', '.join(c.name for c in chans)})")
        name = rig_name.upper() if rig_name.upper() in HUB_CHANNELS else rig_name
        unit, default_scale, _ = HUB_CHANNELS.get(name, ("", 1e-4, 0))
        a = round(start_s * src.fs_hz)
        b = src.values.size if span_s <= 0 else min(a + round(span_s * src.fs_hz),
                                                    src.values.size)
        if b - a < 2:
            raise ReplayError(f"{source}: {src.name} has no samples from {start_s:g} s")
        held, gaps = fill_gaps(src.values[a:b])
        values, out_unit = to_unit(held, src.unit, unit, f"{source}: {name} <- {src.name}")
        if unit == "au" and src.unit:
            out_unit = src.unit
        y = resample(values, src.fs_hz, fs_hz)
        near = nearest_rows(y.size, src.fs_hz, fs_hz, b - a)
        sat, gap = src.saturated[a:b][near], gaps[near]
        lsb = None if src.lsb is None else float(
            to_unit(np.array([src.lsb]), src.unit, unit, name)[0][0])
        scale = encoding_scale(y, default_scale, lsb)
        cols.append(np.rint(y / scale).astype(np.int32))
        names.append(name)
        units.append(out_unit)
        scales.append(scale)
        sat_cols.append(sat)
        gap_cols.append((gap, HUB_CHANNELS.get(name, ("", 0.0, 0))[2]))
        report[name] = {"source": src.name, "unit": f"{src.unit or '?'} -> {out_unit}",
                        "fs_hz": f"{src.fs_hz:g} -> {fs_hz:g}", "scale": scale,
                        "saturated_samples": int(sat.sum()), "missing_samples": int(gap.sum())}
    n = min(c.size for c in cols)
    status = np.zeros(n, dtype=np.uint16)
    for sat in sat_cols:
        status[sat[:n]] |= hp.STATUS_SATURATED
    for gap, bit in gap_cols:
        status[gap[:n]] |= bit
    raw = np.stack([c[:n] for c in cols], axis=1)
    return HubPlayback(tuple(names), tuple(units), tuple(scales), (0.0,) * len(names),
                       float(fs_hz), raw, status, np.zeros(n, np.uint8), np.ones(n, bool),
                       row0=row0, report={"source": source, "channels": report, "samples": n})


def hub_from_stream(stream: Any, fs_hz: float, row0: int, source: str,
                    mapping: dict[str, str] | None = None) -> HubPlayback:
    """Hub playback of a recorded hub stream (``edge.recording.format.StreamData``).

    At the recorded rate the counts, status and DIN bits go out as recorded, and samples
    the recording lost stay lost (the same gaps in the sequence numbers); at another rate
    the values are resampled like a file's. ``mapping`` (rig name -> recorded name)
    renames channels, e.g. {"SKT": "SKT A"}; the others keep their recorded names.
    """
    info = stream.info
    lower = [c.lower() for c in info.channels]
    renamed = {}
    for rig, rec in (mapping or {}).items():
        if rec.lower() not in lower:
            raise ReplayError(f"{source}: no hub channel {rec!r} for {rig} "
                              f"(channels: {', '.join(info.channels)})")
        renamed[lower.index(rec.lower())] = rig.upper() if rig.upper() in HUB_CHANNELS else rig
    keep = list(range(len(info.channels)))
    names = tuple(renamed.get(j, info.channels[j]) for j in keep)
    if len(keep) > hp.MAX_CHANNELS:
        raise ReplayError(f"{source}: {len(keep)} hub channels; the protocol carries "
                          f"{hp.MAX_CHANNELS}")
    if len(stream) < 2:
        raise ReplayError(f"{source}: the hub stream has no samples")
    idx = stream.index - stream.index[0]
    n = int(idx[-1]) + 1
    if abs(info.fs_hz - fs_hz) > 1e-9:  # on the recorded sample grid, gaps as "no value"
        values = np.full((n, len(keep)), np.nan)
        values[idx] = stream.values
        sat = np.zeros(n, dtype=bool)
        sat[idx] = (stream.status & hp.STATUS_SATURATED) != 0
        chans = [SourceChannel(info.channels[j], info.units[j], info.fs_hz, values[:, j], sat)
                 for j in keep]
        return hub_from_channels(chans, dict(zip(names, (c.name for c in chans), strict=True)),
                                 fs_hz, 0.0, 0.0, source, row0=row0)
    raw = np.zeros((n, len(keep)), dtype=np.int32)
    raw[idx] = stream.raw[:, keep]
    status = np.zeros(n, dtype=np.uint16)
    status[idx] = stream.status.astype(np.uint16)
    din = np.zeros(n, dtype=np.uint8)
    din[idx] = stream.trigger & 0xFE
    present = np.zeros(n, dtype=bool)
    present[idx] = True
    pb = HubPlayback(names, tuple(info.units[j] for j in keep),
                     tuple(info.scale[j] for j in keep), tuple(info.offset[j] for j in keep),
                     float(fs_hz), raw, status, din, present, row0=row0)
    pb.report = {"source": source, "channels": list(names), "samples": int(present.sum()),
                 "recorded_gaps": int(n - present.sum()), "bit_exact": True}
    return pb


# ---------------------------------------------------------------- EEG


@dataclass
class EegPlayback:
    """Recorded EEG in microvolts; an ``EegSourceFactory`` for the ADS1299 emulator.

    Picklable: it travels to the EEG acquisition process with the rest of the bench's
    recipe. Channels are matched by name (any case); a rig channel the recording lacks
    plays zeros (listed in ``report``).
    """

    names: tuple[str, ...]
    fs_hz: float
    uv: np.ndarray  # (n, k) float64
    start_s: float = 0.0  # first sample's time after the origin
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def span_s(self) -> float:
        return self.start_s + self.uv.shape[0] / self.fs_hz

    def only(self, channels: Sequence[str], fs_hz: float | None = None) -> EegPlayback:
        """The recorded channels the rig has (by name, any case) at the chips' rate, as
        float32: a 64-channel session pickled to the EEG process whole would be hundreds
        of MB. float32 keeps under one LSB (24-bit mantissa against the ADC's 24 bits)."""
        lower = [n.lower() for n in self.names]
        cols = [lower.index(c.lower()) for c in channels if c.lower() in lower]
        missing = [c for c in channels if c.lower() not in lower]
        report = {**self.report, "channels": [self.names[j] for j in cols]}
        if missing:
            report["missing_play_zero"] = missing
        uv, fs = self.uv[:, cols], self.fs_hz
        if fs_hz is not None and fs_hz != fs:
            uv, fs = resample(uv, fs, fs_hz), float(fs_hz)
            report["fs_hz"] = f"{self.fs_hz:g} -> {fs:g}"
        return EegPlayback(tuple(self.names[j] for j in cols), fs,
                           np.ascontiguousarray(uv, dtype=np.float32), self.start_s, report)

    def __call__(self, channels: Sequence[str], fs_hz: float, seed: int,
                 scenario: Any) -> EegRun:
        lower = [n.lower() for n in self.names]
        cols = [lower.index(c.lower()) if c.lower() in lower else -1 for c in channels]
        uv = self.uv if fs_hz == self.fs_hz else resample(self.uv, self.fs_hz, fs_hz)
        out = np.zeros((uv.shape[0], len(channels)))  # float64 for the chip's conversion
        for j, c in enumerate(cols):
            if c >= 0:
                out[:, j] = uv[:, c]
        return EegRun(out, float(fs_hz), round(self.start_s * fs_hz))


class EegRun:
    """One conversion run's source: recorded rows in order, zeros outside the recording."""

    def __init__(self, uv: np.ndarray, fs_hz: float, row0: int) -> None:
        self._uv, self._fs, self._row0 = uv, fs_hz, row0
        self._next: int | None = None

    def next(self, n: int, t_s: np.ndarray | None = None) -> np.ndarray:
        if self._next is None:  # the first sample's place on the grid anchored at t0
            t_first = float(t_s[0]) if t_s is not None and len(t_s) else 0.0
            self._next = round(t_first * self._fs) - self._row0
        i = self._next + np.arange(n)
        self._next += n
        inside = (i >= 0) & (i < self._uv.shape[0])
        out = np.zeros((n, self._uv.shape[1]))
        out[inside] = self._uv[i[inside]]
        return out


def eeg_from_stream(stream: Any, start_s: float, source: str) -> EegPlayback:
    if len(stream) < 2:
        raise ReplayError(f"{source}: the EEG stream has no samples")
    info = stream.info
    idx = stream.index - stream.index[0]
    uv = np.zeros((int(idx[-1]) + 1, len(info.channels)))
    uv[idx] = stream.values  # a lost sample plays as 0 uV, as the emulator's held frame would
    # per channel into uV; a channel in another unit (a trigger code) is kept as it is
    uv *= np.array([_TO_UNIT["uV"].get(u.strip().lower(), 1.0) for u in info.units])
    return EegPlayback(tuple(info.channels), float(info.fs_hz), uv, start_s,
                       {"source": source, "channels": list(info.channels),
                        "samples": len(stream), "recorded_gaps": int(idx[-1] + 1 - len(stream))})


def eeg_from_channels(chans: Sequence[SourceChannel], start_s: float, span_s: float,
                      source: str) -> EegPlayback:
    """EEG playback of a file's channels (WFDB, EDF/BDF, CSV): those in volts, mV or uV."""
    use = [c for c in chans if c.unit.strip().lower() in _TO_UNIT["uV"]]
    if not use:
        raise ReplayError(f"{source}: no channel in V, mV or uV to play as EEG")
    fs = use[0].fs_hz
    use = [c for c in use if c.fs_hz == fs]
    a = round(start_s * fs)
    b = min(c.values.size for c in use) if span_s <= 0 else a + round(span_s * fs)
    cols = [to_unit(fill_gaps(c.values[a:b])[0], c.unit, "uV", source)[0] for c in use]
    return EegPlayback(tuple(c.name for c in use), fs, np.stack(cols, axis=1), 0.0,
                       {"source": source, "channels": [c.name for c in use]})


# ---------------------------------------------------------------- camera


@dataclass
class CameraPlayback:
    """Where the frames are and how their times map onto the replay's time line."""

    path: str
    origin_ns: int  # recorded host ns that plays at the replay's t = 0
    first_ns: int  # recorded time of the first frame played
    stop_ns: int  # recorded time after the last frame played
    n_frames: int
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def span_s(self) -> float:
        return (self.stop_ns - self.origin_ns) / 1e9


def convert_luma(luma: np.ndarray, width: int, height: int) -> np.ndarray:
    """A recorded image as the rig's grey frame of (height, width); unchanged if it fits."""
    img = luma
    if img.ndim == 3:
        import cv2

        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    if img.shape != (height, width):
        import cv2

        shrink = img.shape[0] > height or img.shape[1] > width
        img = cv2.resize(img, (width, height),
                         interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.ascontiguousarray(img, dtype=np.uint8)


class PlaybackCamera:
    """A ``FrameSource`` replaying recorded frames at their recorded times.

    Frame ``seq`` is the recorded sensor counter (a recorded gap stays a gap); ``t_ns`` is
    the recorded exposure time moved onto this run's time line (``t0_ns`` + recorded
    time after the origin); the trigger input is the live sync line, as a camera strobe
    would see it. A frame is readable once its readout (one period) has ended; like the
    sensor, the playback holds ``buffer_frames`` and counts what a slow reader loses.
    Frames are decoded ahead by a reader thread into a bounded queue.
    """

    def __init__(self, spec: CameraPlayback, *, width: int, height: int, fps: float,
                 t0_ns: int, wire: Wire | None = None, buffer_frames: int = 15,
                 prefetch: int = 64) -> None:
        self.spec = spec
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.t0_ns = int(t0_ns)
        self.wire = wire
        self.buffer_frames = max(int(buffer_frames), 1)
        self.counters = StreamCounters()
        self.counters.extra.update({"overrun": 0})
        self.not_played = 0  # recorded frames that were due before start(): never captured
        self._ahead: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._prefetch = max(prefetch, self.buffer_frames + 1)
        self._done = False
        self._halt = threading.Event()
        self._running = False
        self._period_ns = round(1e9 / self.fps)
        self._thread = threading.Thread(target=self._decode, name="sim-camera-playback",
                                        daemon=True)
        self._thread.start()

    def _frames(self) -> Iterator[Frame]:
        from edge.recording.format import iter_full_rate_frames

        for f in iter_full_rate_frames(self.spec.path):
            if self.spec.first_ns <= f.t_ns < self.spec.stop_ns:
                yield f

    def _decode(self) -> None:
        try:
            for f in self._frames():  # t_ns stays on the recording's time line here
                frame = Frame(seq=f.seq, t_ns=f.t_ns - self.spec.origin_ns,
                              luma=convert_luma(f.luma, self.width, self.height))
                with self._cond:
                    while len(self._ahead) >= self._prefetch and not self._halt.is_set():
                        self._cond.wait(0.1)
                    if self._halt.is_set():
                        return
                    self._ahead.append(frame)
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def start(self) -> None:
        """Capture from now on: frames whose exposure began before now are not played."""
        now = monotonic_ns() - self.t0_ns
        with self._cond:
            while True:
                while self._ahead and self._ahead[0].t_ns < now:
                    self._ahead.popleft()
                    self.not_played += 1
                if self._ahead or self._done:
                    break
                self._cond.notify_all()
                self._cond.wait(0.05)
            self._cond.notify_all()
        self._running = True

    def stop(self) -> None:
        self._running = False

    def close(self) -> None:
        self.stop()
        self._halt.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=2.0)

    def read(self, timeout_s: float) -> Frame | None:
        """The next recorded frame once its readout has ended, or None within the timeout."""
        deadline = time.monotonic() + max(timeout_s, 0.0)
        while self._running:
            with self._cond:
                now = monotonic_ns() - self.t0_ns  # on the replay's time line
                ready = 0
                for f in self._ahead:  # frames whose readout has ended by now
                    if f.t_ns + self._period_ns > now:
                        break
                    ready += 1
                while ready > self.buffer_frames:  # the sensor overwrote the oldest
                    self._ahead.popleft()
                    ready -= 1
                    self.counters.dropped += 1
                    self.counters.extra["overrun"] += 1
                if ready:
                    f = self._ahead.popleft()
                    self._cond.notify_all()
                    self.counters.samples += 1
                    t_ns = self.t0_ns + f.t_ns
                    trig = int(self.wire[SYNC].value_at(t_ns)) if self.wire is not None else 0
                    return Frame(seq=f.seq, t_ns=t_ns, luma=f.luma, trigger=trig)
                due = (self.t0_ns + self._ahead[0].t_ns + self._period_ns
                       if self._ahead else None)
                if due is None and self._done:
                    due = -1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if due is None:  # the decoder has not caught up: wait for it
                with self._cond:
                    self._cond.wait(min(remaining, 0.01))
            elif due < 0:  # nothing more to play
                time.sleep(min(remaining, 0.05))
            else:
                time.sleep(min(remaining, max((due - monotonic_ns()) / 1e9, 0.0) + 50e-6))
        return None

