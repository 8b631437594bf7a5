"""The clock keeper: the runtime sink that keeps each stream's clock model fed.

:class:`ClockKeeper` is a runtime sink (``on_block`` / ``on_frame`` / ``on_marker``).
Per stream it does what ``hil.benchmarks.sync`` scores offline:

1. the block goes into the :class:`edge.clock.align.Aligner`, which feeds the block's newest
   device time and host time to the stream's :class:`edge.clock.model.ClockModel`
   (``note_arrival``: the coarse model before any pulse, device resets);
2. a streaming :class:`sensors.trigger.PulseDecoder` finds the sync pulses in trigger
   bit 0 (EEG: device time = sample index, ``fs`` units per s; hub: MCU microseconds,
   1e6 per s; camera: ``Frame.t_ns`` with ``Frame.trigger``, 1e9 per s). The decoder
   reports the first sample seen high, so half a sample period is taken off: the edge
   lies uniformly in the interval before it;
3. :func:`edge.clock.model.match_pulses` pairs them with what the host's
   :class:`sensors.trigger.SyncPulser` really emitted (its ``recent()`` ring), using the
   model itself as the coarse map; :func:`edge.clock.model.fall_pairs` adds the falls whose
   width agrees; every pair goes to ``ClockModel.add_pair``. A decoded pulse whose host
   pulse is not in the ring yet (the pulser records a pulse after its fall) waits up to
   ``pending_s`` and is tried again with the next block.

The camera's sensor timestamps are host CLOCK_MONOTONIC already (picamera2's
SensorTimestamp): until its strobe input gives pulse pairs (a camera without one never
does) they are trusted as they are, not mapped by the arrival-based coarse model.

Whenever a model moved, its state goes to the recorder's ``/clock`` topic
(:meth:`edge.recording.recorder.Recorder.write_clock`), at most once per ``coarse_write_s`` while
it is only coarse. ``state()`` is the per-stream snapshot health messages use;
``summary()`` the figure for the run summary. Markers (host time already, from the
marker input) go into the aligner; :meth:`ClockKeeper.marker_device_t` places one on
every stream's own device time.

Not thread-safe by itself beyond a lock around every public method: the runtime calls
the sink methods from its one dispatcher thread; readers on other threads take the lock.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edge.clock.align import Aligner
from edge.clock.model import ClockModel, fall_pairs, match_pulses
from sensors import sync_code
from sensors.blocks import Frame, Marker, SampleBlock, StreamInfo, monotonic_ns
from sensors.trigger import PulseDecoder

CAMERA = "camera"
HOST_LOG = 64  # emitted pulses offered for pairing (64 s at the 1 s period)
FALL_TOLERANCE_S = 3e-3  # host jitter allowed on a pulse width, on top of one sample
PENDING_S = 3.0  # how long a decoded pulse waits for its host pulse to be recorded
CAMERA_BATCH = 15  # frames decoded together (0.1 s at 150 fps)
USED_K = 256  # host pulse numbers remembered per stream (no pulse is paired twice)


def code_slack(fs_hz: float) -> int:
    """How many codes a pulse width may decode off: a sample period longer than half the
    5 ms code step (a 150 fps camera, a Cyton at 250 Hz or 125 Hz with the Daisy)
    quantises the width by more than the code tolerates."""
    return 0 if 1.0 / fs_hz < 0.5 * sync_code.STEP_WIDTH_NS / 1e9 else 2


@dataclass
class SyncCounters:
    """Per-stream pulse bookkeeping; never reset."""

    decoded: int = 0  # complete pulses found in the trigger column
    bad_codes: int = 0  # of those, width fitting no code (or a gap next to an edge)
    rise_pairs: int = 0  # rises paired with an emitted pulse and given to the model
    fall_pairs: int = 0
    unmatched: int = 0  # decoded pulses given up after ``pending_s``
    decoder_resets: int = 0  # device time went backwards: a fresh decoder
    clock_writes: int = 0  # states written to the recorder


@dataclass
class _Pending:
    rise: float  # device units, half a sample already taken off
    fall: float  # device units
    code: int
    seen_ns: int  # host time it was decoded


@dataclass
class _Track:
    name: str
    units_per_s: float
    fs_hz: float
    code_slack: int
    model: ClockModel
    decoder: PulseDecoder
    pending: list[_Pending] = field(default_factory=list)
    used_k: deque[int] = field(default_factory=lambda: deque(maxlen=USED_K))
    last_device_t: float | None = None
    written_version: int = -1
    written_quality: str = ""
    written_ns: int = 0
    buf_t: list[int] = field(default_factory=list)  # camera: frames not decoded yet
    buf_trig: list[int] = field(default_factory=list)
    counters: SyncCounters = field(default_factory=SyncCounters)

    @property
    def step_units(self) -> float:
        return self.units_per_s / self.fs_hz

    def new_decoder(self) -> PulseDecoder:
        return PulseDecoder(self.units_per_s, fs_hz=self.fs_hz)


class _TrustedUntilPulse:
    """The camera's map as the aligner sees it: its sensor timestamps as they are until
    the model has pulse pairs, the model's fit from then on."""

    def __init__(self, model: ClockModel) -> None:
        self.model = model

    @property
    def pulsed(self) -> bool:
        return self.model.quality == "pulse"

    @property
    def version(self) -> int:
        return self.model.version if self.pulsed else 0  # any pulse fit has version >= 1

    @property
    def segment(self) -> int:
        return self.model.segment

    def note_arrival(self, device_t: float, host_ns: int) -> str:
        return self.model.note_arrival(device_t, host_ns)

    def to_host_ns(self, device_t: np.ndarray | float, segment: int | None = None) -> np.ndarray:
        if self.pulsed:
            return self.model.to_host_ns(device_t, segment=segment)
        return np.rint(np.asarray(device_t, dtype=np.float64)).astype(np.int64)

    def to_device_t(self, host_ns: np.ndarray | int, segment: int | None = None) -> np.ndarray:
        if self.pulsed:
            return self.model.to_device_t(host_ns, segment=segment)
        return np.asarray(host_ns, dtype=np.float64)


class ClockKeeper:
    """Runtime sink: pulse decoding, pairing and fitting for every stream, plus the aligner.

    ``pulser``: the rig's :class:`sensors.trigger.SyncPulser` (or anything with
    ``recent(n)``); None leaves every model coarse. ``streams``: the sampled streams'
    :class:`StreamInfo` (device time unit ``"sample"``: ``fs`` units per s; ``"us"``:
    1e6). ``camera_fps``: add the camera stream. ``recorder``: anything with
    ``write_clock(stream, state, t_ns)``.
    """

    def __init__(
        self,
        pulser: Any | None,
        streams: Iterable[StreamInfo] = (),
        camera_fps: float | None = None,
        *,
        recorder: Any | None = None,
        history_s: float = 30.0,
        frame_history_s: float = 2.0,
        pending_s: float = PENDING_S,
        coarse_write_s: float = 1.0,
        now: Callable[[], int] = monotonic_ns,
    ) -> None:
        self.pulser = pulser
        self.recorder = recorder
        self.aligner = Aligner(history_s, frame_history_s=frame_history_s)
        self.models: dict[str, ClockModel] = {}
        self._tracks: dict[str, _Track] = {}
        self._camera_clock: _TrustedUntilPulse | None = None
        self._pending_ns = int(pending_s * 1e9)
        self._coarse_write_ns = int(coarse_write_s * 1e9)
        self._now = now
        self._lock = threading.RLock()
        self.markers_seen = 0
        for info in streams:
            self.add_stream(info)
        if camera_fps:
            self.add_camera(float(camera_fps))

    @classmethod
    def from_rig(cls, rig: Any, camera_fps: float | None = None, *,
                 recorder: Any | None = None, **kw: Any) -> ClockKeeper:
        """A keeper for an opened :class:`edge.rig.Rig` (its stream infos, pulser, camera)."""
        fps = None
        if rig.camera is not None:
            fps = camera_fps or float(getattr(rig.camera, "fps", 0.0) or 30.0)
        return cls(rig.pulser, rig.stream_infos(), fps, recorder=recorder, **kw)

    # ---------------------------------------------------------------- setup

    def add_stream(self, info: StreamInfo) -> None:
        if info.device_time_unit == "sample":
            units = float(info.fs_hz)
        elif info.device_time_unit == "us":
            units = 1e6
        elif info.device_time_unit == "ns":
            units = 1e9
        else:
            raise ValueError(f"stream {info.name}: unknown device time unit "
                             f"{info.device_time_unit!r}")
        model = ClockModel(info.name, units, sample_period_s=1.0 / info.fs_hz)
        self._add_track(info.name, units, float(info.fs_hz), code_slack(info.fs_hz), model)
        self.aligner.add_stream(info, model)

    def add_camera(self, fps: float, name: str = CAMERA) -> None:
        model = ClockModel(name, 1e9, sample_period_s=1.0 / fps)
        self._add_track(name, 1e9, float(fps), code_slack(fps), model)
        self._camera_clock = _TrustedUntilPulse(model)
        self.aligner.add_camera(name, fps, self._camera_clock)  # type: ignore[arg-type]

    def _add_track(self, name: str, units: float, fs: float, slack: int,
                   model: ClockModel) -> None:
        if name in self._tracks:
            raise ValueError(f"ClockKeeper: stream {name!r} added twice")
        tr = _Track(name, units, fs, slack, model, PulseDecoder(units, fs_hz=fs))
        self._tracks[name] = tr
        self.models[name] = model

    def attach_recorder(self, recorder: Any | None) -> None:
        """Write clock states to ``recorder`` from now on (the current ones at once)."""
        with self._lock:
            self.recorder = recorder
            for tr in self._tracks.values():
                tr.written_version = -1
                self._maybe_write(tr, force=True)

    # ---------------------------------------------------------------- sink

    def on_block(self, block: SampleBlock) -> None:
        tr = self._tracks.get(block.stream)
        if tr is None or len(block) == 0:
            return
        with self._lock:
            self.aligner.add_block(block.stream, block)
            self._decode(tr, np.asarray(block.trigger), np.asarray(block.device_t))
            self._match(tr)
            self._maybe_write(tr)

    def on_frame(self, frame: Frame) -> None:
        tr = self._tracks.get(CAMERA)
        if tr is None:
            return
        with self._lock:
            self.aligner.add_frame(CAMERA, frame, arrival_ns=self._now())
            tr.buf_t.append(int(frame.t_ns))
            tr.buf_trig.append(int(frame.trigger))
            if len(tr.buf_t) >= CAMERA_BATCH:
                self._decode(tr, np.array(tr.buf_trig, dtype=np.uint8),
                             np.array(tr.buf_t, dtype=np.int64))
                tr.buf_t.clear()
                tr.buf_trig.clear()
                self._match(tr)
            self._maybe_write(tr)

    def on_marker(self, marker: Marker) -> None:
        with self._lock:
            self.aligner.add_marker(marker)
            self.markers_seen += 1

    def flush(self) -> None:
        """Decode buffered frames and write every model's latest state (end of session)."""
        with self._lock:
            for tr in self._tracks.values():
                if tr.buf_t:
                    self._decode(tr, np.array(tr.buf_trig, dtype=np.uint8),
                                 np.array(tr.buf_t, dtype=np.int64))
                    tr.buf_t.clear()
                    tr.buf_trig.clear()
                self._match(tr)
                self._maybe_write(tr, force=True)

    # ---------------------------------------------------------------- reads

    def to_host_ns(self, stream: str, device_t: np.ndarray | float,
                   segment: int | None = None) -> np.ndarray:
        """Common-clock (host CLOCK_MONOTONIC) ns for a stream's device times.

        Raises ``RuntimeError`` for a sampled stream before its first block.
        """
        with self._lock:
            if stream == CAMERA and self._camera_clock is not None:
                return self._camera_clock.to_host_ns(device_t, segment=segment)
            return self._model(stream).to_host_ns(device_t, segment=segment)

    def remap(self, block: SampleBlock) -> SampleBlock:
        """The block with ``host_t_ns`` on the common clock, once its stream's model is
        fitted to sync pulses; as it came (driver timestamps) before that."""
        model = self.models.get(block.stream)
        if model is None or model.quality != "pulse" or not len(block):
            return block
        return replace(block, host_t_ns=np.asarray(
            self.to_host_ns(block.stream, block.device_t), dtype=np.int64))

    def to_device_t(self, stream: str, host_ns: np.ndarray | int) -> np.ndarray:
        """The inverse map: a stream's device time (float) at host ns."""
        with self._lock:
            if stream == CAMERA and self._camera_clock is not None:
                return self._camera_clock.to_device_t(host_ns)
            return self._model(stream).to_device_t(host_ns)

    def marker_device_t(self, marker: Marker) -> dict[str, float]:
        """Where a marker falls on every stream's own device time (streams with a map)."""
        out: dict[str, float] = {}
        with self._lock:
            for name, model in self.models.items():
                if name != CAMERA and model.quality == "none":
                    continue
                out[name] = float(self.to_device_t(name, int(marker.t_ns)))
        return out

    def markers(self, t0_ns: int, t1_ns: int) -> list[Marker]:
        """Markers on the common clock in ``[t0_ns, t1_ns)`` (what the aligner holds)."""
        with self._lock:
            return self.aligner.markers(t0_ns, t1_ns)

    def state(self) -> dict[str, dict[str, Any]]:
        """Per stream: offset, drift, uncertainty, quality, segments, pairs (JSON-ready)."""
        with self._lock:
            return {name: self._state(tr) for name, tr in self._tracks.items()}

    def summary(self, stream: str) -> dict[str, Any]:
        """The run summary's ``sync`` figure for one stream."""
        with self._lock:
            tr = self._tracks.get(stream)
            if tr is None:
                return {"quality": "none", "uncertainty_ms": None, "drift_ppm": None,
                        "pairs": 0}
            s = self._state(tr)
            keep = ("quality", "uncertainty_ms", "drift_ppm", "pairs", "segments", "residual_ms",
                    "pulses_decoded", "pulses_bad_codes", "pulses_unmatched",
                    "pulses_decoder_resets")
            return {k: s[k] for k in keep}

    def counters(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {name: dict(vars(tr.counters)) for name, tr in self._tracks.items()}

    def _model(self, stream: str) -> ClockModel:
        try:
            return self.models[stream]
        except KeyError:
            raise KeyError(f"ClockKeeper: unknown stream {stream!r}") from None

    def _state(self, tr: _Track) -> dict[str, Any]:
        m = tr.model
        ms = m.state
        unc = m.uncertainty_ns
        trusted = tr.name == CAMERA and m.quality != "pulse"
        return {
            "quality": "timestamps" if trusted and m.quality != "none" else m.quality,
            "offset_ns": 0 if trusted else ms.get("offset_ns"),
            "drift_ppm": 0.0 if trusted else round(m.drift_ppm, 3),
            "uncertainty_ms": (round(unc / 1e6, 4) if np.isfinite(unc) and not trusted
                               else None),
            "residual_ms": (round(ms["residual_ns"] / 1e6, 4)
                            if "residual_ns" in ms and not trusted else None),
            "segments": m.counters.segments,
            "segment": m.segment,
            "pairs": int(ms["n_pairs"]),
            "pairs_accepted": m.counters.accepted,
            "pairs_rejected": m.counters.rejected,
            **{f"pulses_{k}": v for k, v in vars(tr.counters).items()},
        }

    # ---------------------------------------------------------------- internals

    def _decode(self, tr: _Track, trigger: np.ndarray, device_t: np.ndarray) -> None:
        bits = (trigger.astype(np.int64) & 1).ravel()
        dev = device_t.astype(np.int64).ravel()
        if dev.size == 0:
            return
        now = self._now()
        cuts = np.flatnonzero(np.diff(dev) < 0) + 1
        spans = ((0, dev.size),) if not cuts.size else zip(
            [0, *cuts.tolist()], [*cuts.tolist(), dev.size], strict=True)
        for a, z in spans:
            if tr.last_device_t is not None and dev[a] < tr.last_device_t:
                # The device reset: its old pulses and the old decoder state mean nothing.
                tr.decoder = tr.new_decoder()
                tr.counters.unmatched += len(tr.pending)
                tr.pending.clear()
                tr.used_k.clear()
                tr.counters.decoder_resets += 1
            tr.last_device_t = float(dev[z - 1])
            found = tr.decoder.feed(bits[a:z], dev[a:z])
            n = found.rise_device_t.size
            if n == 0:
                continue
            tr.counters.decoded += n
            tr.counters.bad_codes += int(np.count_nonzero(found.code < 0))
            rises = found.rise_device_t.astype(np.float64) - 0.5 * tr.step_units
            falls = rises + found.width_s * tr.units_per_s
            tr.pending.extend(_Pending(float(r), float(f), int(c), now) for r, f, c in
                              zip(rises, falls, found.code, strict=True))

    def _match(self, tr: _Track) -> None:
        if not tr.pending:
            return
        host = self.pulser.recent(HOST_LOG) if self.pulser is not None else []
        used = set(tr.used_k)
        host = [p for p in host if p.k not in used]
        if host and tr.model.quality != "none":
            hk = np.array([p.k for p in host], dtype=np.int64)
            hr = np.array([p.rise_t_ns for p in host], dtype=np.int64)
            hf = np.array([p.fall_t_ns for p in host], dtype=np.int64)
            rises = np.array([p.rise for p in tr.pending])
            falls = np.array([p.fall for p in tr.pending])
            codes = np.array([p.code for p in tr.pending], dtype=np.int64)
            pairs = match_pulses(rises, codes, hk, hr, tr.model, code_slack=tr.code_slack)
            if len(pairs):
                fp = fall_pairs(pairs, falls, hf, tr.units_per_s,
                                tolerance_s=1.0 / tr.fs_hz + FALL_TOLERANCE_S)
                for p in (pairs, fp):
                    for d, h, k in zip(p.device_t.tolist(), p.host_ns.tolist(), p.k.tolist(),
                                       strict=True):
                        tr.model.add_pair(d, h, code=k % sync_code.CODE_MODULUS)
                tr.counters.rise_pairs += len(pairs)
                tr.counters.fall_pairs += len(fp)
                tr.used_k.extend(int(k) for k in pairs.k)
                done = set(pairs.device_index.tolist())
                tr.pending = [p for i, p in enumerate(tr.pending) if i not in done]
        cutoff = self._now() - self._pending_ns
        keep = [p for p in tr.pending if p.seen_ns >= cutoff]
        tr.counters.unmatched += len(tr.pending) - len(keep)
        tr.pending = keep

    def _maybe_write(self, tr: _Track, force: bool = False) -> None:
        if self.recorder is None:
            return
        m = tr.model
        if m.quality == "none" or (m.version == tr.written_version and not force):
            return
        now = self._now()
        if (not force and m.quality == "coarse" and tr.written_quality == "coarse"
                and now - tr.written_ns < self._coarse_write_ns):
            return
        state = dict(m.state)
        state["sync"] = self._state(tr)
        self.recorder.write_clock(tr.name, state, now)
        tr.written_version, tr.written_quality, tr.written_ns = m.version, m.quality, now
        tr.counters.clock_writes += 1


__all__ = ["ClockKeeper", "SyncCounters"]
