"""Replay of recordings through the whole rig: playback sources behind every device seam.

    mmme-edge run --replay REC.mcap                       every stream the recording has
    mmme-edge run --replay hub=a103l --channel-map ppg=PLETH,ecg=II
    [replay] recording = "...", hub = "...", channel_map = {ppg = "PLETH"}   (config form)

:func:`plan_replay` reads the sources named in a config's ``[replay]`` section into one
:class:`ReplayPlan`: a time line whose zero plays at the bench's ``t0_ns``, with the
hub's signal, the EEG's source, the camera's frames and the markers on it. The simulated
bench (``hil.sim.rig.SimBench``) puts each one behind its device's simulator; the drivers,
the clock, the recorder, the features and the publisher are the rig's own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hil.sim.marker_source import SETTLE_NS
from hil.sim.playback.devices import (
    CameraPlayback,
    EegPlayback,
    HubPlayback,
    PlaybackCamera,
    eeg_from_channels,
    eeg_from_stream,
    hub_from_channels,
    hub_from_stream,
)
from hil.sim.playback.sources import ReplayError, read_channels, source_kind
from hil.sim.scenario import MarkerEvent

STREAMS = ("hub", "eeg", "camera")
REPLAY_START_S = 0.3  # a replay's t = 0 this long after the rig starts (drivers send START)
REPLAY_TAIL_S = 1.5  # the run goes on this long after the replay ends (last results out)
INSTANT_WINDOW_S = 10.0  # a stream's first sample instant is estimated over this span

__all__ = ["REPLAY_START_S", "STREAMS", "PlaybackCamera", "ReplayError", "ReplayPlan",
           "parse_channel_map", "parse_replay_args", "plan_replay"]


@dataclass
class ReplayPlan:
    """What plays on each device, on one time line (seconds after the bench's t0)."""

    hub: HubPlayback | None = None
    eeg: EegPlayback | None = None
    camera: CameraPlayback | None = None
    markers: tuple[MarkerEvent, ...] | None = None  # None: the recording has no marker stream
    # The recording's coded intervals (events of kind "ground_truth", as import-mmme writes
    # them) on the replay's time line, in the layout of Scenario.ground_truth()'s expressions:
    # what hil.e2e scores a replay's events/me and events/emotion against. None: no truth.
    truth: list[dict[str, Any]] | None = None
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def span_s(self) -> float:
        spans = [d.span_s for d in (self.hub, self.eeg, self.camera) if d is not None]
        spans += [m.t_s for m in self.markers or ()]
        return max(spans, default=0.0)

    @property
    def run_s(self) -> float:
        """How long a run must last to play all of it, from the moment the rig starts."""
        return REPLAY_START_S + self.span_s + REPLAY_TAIL_S

    def summary(self) -> dict[str, Any]:
        return {"span_s": round(self.span_s, 3), **self.report}


# ---------------------------------------------------------------- command line


def parse_channel_map(text: str) -> dict[str, str]:
    """``ppg=PLETH,ecg=II`` -> {"PPG": "PLETH", "ECG": "II"} (rig channel <- source channel)."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        rig, sep, src = part.partition("=")
        if not sep or not rig.strip() or not src.strip():
            raise ReplayError(f"--channel-map: {part!r} is not RIG=SOURCE (e.g. ppg=PLETH)")
        out[rig.strip().upper()] = src.strip()
    return out


def parse_replay_args(specs: list[str]) -> dict[str, str]:
    """``--replay`` values -> [replay] keys: ``REC`` (every stream) or ``hub=PATH`` etc."""
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if sep and name in STREAMS:
            out[name] = path
        elif sep and "/" not in name and not Path(spec).exists():
            raise ReplayError(f"--replay {spec}: stream must be one of {', '.join(STREAMS)}")
        else:
            out["recording"] = spec
    return out


# ---------------------------------------------------------------- planning

_PLANS: dict[str, ReplayPlan] = {}  # the CLI and the bench share one read of the sources


def plan_replay(cfg: Any) -> ReplayPlan | None:
    """The replay a config asks for (``[replay]``), read once per process; None if none."""
    r = cfg.replay
    if not (r["recording"] or any(r[s] for s in STREAMS)):
        return None
    enabled = {s: bool(getattr(cfg, s)["enabled"]) for s in STREAMS}
    for s in STREAMS:
        if r[s] and not enabled[s]:
            raise ReplayError(f"{s}={r[s]}: the config's [{s}] is disabled")
    eeg_names = tuple(cfg.eeg["channels"] or ())
    eeg_fs = float(cfg.eeg["fs_hz"])
    key = json.dumps([r, cfg.hub["fs_hz"], enabled, eeg_names, eeg_fs], sort_keys=True,
                     default=str)
    if key not in _PLANS:
        plan = _plan(r, float(cfg.hub["fs_hz"]), enabled)
        if plan.eeg is not None:  # only what the rig's chips convert travels to them, at
            plan.eeg = plan.eeg.only(eeg_names, eeg_fs)  # their rate (not at their START)
            plan.report["eeg"] = plan.eeg.report
        _PLANS[key] = plan
    return _PLANS[key]


def _plan(r: dict[str, Any], hub_fs: float, enabled: dict[str, bool]) -> ReplayPlan:
    start_s, span_s = float(r["start_s"]), float(r["span_s"])
    mapping = {k.upper(): str(v) for k, v in dict(r["channel_map"]).items()}
    plan = ReplayPlan()
    recordings: dict[str, _Rec] = {}

    def opened(path: str) -> _Rec:
        if path not in recordings:
            _exists(path)
            recordings[path] = _Rec(Path(path), start_s, span_s)
        return recordings[path]

    # A named stream plays from its own source; the recording plays every stream it has.
    has = opened(r["recording"]).streams() if r["recording"] else []
    wanted = {s: r[s] or r["recording"] for s in STREAMS
              if enabled[s] and (r[s] or s in has)}
    for stream, path in wanted.items():
        p = _exists(path)
        if source_kind(p) == "mcap":
            opened(path).play(stream, plan, hub_fs, mapping)
        elif stream == "hub":
            plan.hub = hub_from_channels(read_channels(p), mapping, hub_fs, start_s, span_s,
                                         str(p))
        elif stream == "eeg":
            plan.eeg = eeg_from_channels(read_channels(p), start_s, span_s, str(p))
        else:
            raise ReplayError(f"{path}: camera frames replay from a rig recording (.mcap)")
    if r["recording"]:
        rec = opened(r["recording"])
        plan.markers = rec.markers()
        plan.truth = rec.truth()
        plan.report["recording"] = str(rec.path)
        plan.report["not_replayed"] = [x for x in has if x not in wanted]
    plan.report["simulated"] = [x for x in STREAMS if enabled[x] and x not in wanted]
    for name in STREAMS:
        dev = getattr(plan, name)
        if dev is not None:
            plan.report[name] = dev.report
    return plan


def _exists(path: str) -> Path:
    p = Path(path)
    if not (p.exists() or p.with_suffix(".hea").exists() or Path(path + ".hea").exists()):
        raise ReplayError(f"{path}: no such file")
    return p


class _Rec:
    """One rig recording (MCAP) and its time line: origin = its first sample or frame."""

    def __init__(self, path: Path, start_s: float, span_s: float) -> None:
        from edge.recording.format import RecordingError, open_recording

        try:
            self.rec = open_recording(path, frames=False)
        except RecordingError as exc:
            raise ReplayError(str(exc)) from None
        self.path = path
        firsts = [self._first_instant(s) for s in self.rec.streams.values() if len(s) > 1]
        if self.rec.frame_t_ns.size:
            firsts.append(int(self.rec.frame_t_ns.min()))
        if not firsts:
            raise ReplayError(f"{path}: the recording holds no samples or frames")
        self.origin_ns = min(firsts) + round(start_s * 1e9)
        self.stop_ns = self.origin_ns + round(span_s * 1e9) if span_s > 0 else None

    @staticmethod
    def _first_instant(s: Any) -> int:
        """Host ns of a stream's first sample: the lower envelope of arrival times minus
        sample period x index over the first seconds (arrival latency is never negative)."""
        k = (s.index - s.index[0]).astype(np.float64)
        early = k < INSTANT_WINDOW_S * s.info.fs_hz
        return int(np.min(s.host_t_ns[early] - k[early] * 1e9 / s.info.fs_hz))

    def _cut(self, s: Any) -> tuple[Any, float]:
        """The stream's samples on the replay's time line, and the first one's time (s)."""
        from edge.recording.format import StreamData

        t = (self._first_instant(s) - self.origin_ns) / 1e9 + \
            (s.index - s.index[0]) / s.info.fs_hz
        end = np.inf if self.stop_ns is None else (self.stop_ns - self.origin_ns) / 1e9
        sel = (t >= 0) & (t < end)
        if sel.sum() < 2:
            raise ReplayError(f"{self.path}: stream {s.info.name} has no samples in the span")
        cut = StreamData(s.info, s.index[sel], s.device_t[sel], s.host_t_ns[sel], s.raw[sel],
                         s.trigger[sel], s.status[sel])
        return cut, float(t[sel][0])

    def play(self, stream: str, plan: ReplayPlan, hub_fs: float, mapping: dict[str, str]) -> None:
        where = f"{self.path}"
        if stream == "camera":
            t = self.rec.frame_t_ns
            stop = self.stop_ns if self.stop_ns is not None else int(t.max()) + 1 if t.size else 0
            n = int(((t >= self.origin_ns) & (t < stop)).sum())
            if n == 0:
                raise ReplayError(f"{where}: no camera frames to replay")
            plan.camera = CameraPlayback(str(self.path), self.origin_ns, self.origin_ns, stop,
                                         n, {"source": where, "frames": n})
            return
        s = self.rec.streams.get(stream)
        if s is None or len(s) < 2:
            raise ReplayError(f"{where}: no {stream} stream to replay "
                              f"(streams: {', '.join(self.rec.streams) or 'none'})")
        cut, t_first = self._cut(s)
        if stream == "hub":
            plan.hub = hub_from_stream(cut, hub_fs, round(t_first * hub_fs), where, mapping)
        else:
            plan.eeg = eeg_from_stream(cut, t_first, where)

    def markers(self) -> tuple[MarkerEvent, ...] | None:
        if not self.rec.markers:
            return None
        out = []
        for m in self.rec.markers:
            t = m.t_ns - SETTLE_NS - self.origin_ns  # the code went up SETTLE_NS before
            if t >= 0 and (self.stop_ns is None or m.t_ns < self.stop_ns):
                out.append(MarkerEvent(round(t / 1e9, 6), int(m.code)))
        return tuple(out)

    def truth(self) -> list[dict[str, Any]] | None:
        coded = [e.get("payload") or {} for e in self.rec.events
                 if e.get("kind") == "ground_truth"]
        if not coded:
            return None
        out = []
        for g in coded:
            try:
                on, off = int(g["onset_ns"]), int(g["offset_ns"])
                apex = int(g.get("apex_ns") or on)
            except (KeyError, TypeError, ValueError):
                continue  # an interval the import could not place
            if on < self.origin_ns or (self.stop_ns is not None and off > self.stop_ns):
                continue
            out.append({**{k: v for k, v in g.items() if not k.endswith("_ns")},
                        "onset_s": (on - self.origin_ns) / 1e9,
                        "apex_s": (apex - self.origin_ns) / 1e9,
                        "offset_s": (off - self.origin_ns) / 1e9})
        return out

    def streams(self) -> list[str]:
        """What the recording has to play: its sample streams, and camera if it has frames."""
        have = [n for n, s in self.rec.streams.items() if len(s) > 1]
        return [*have, *(["camera"] if self.rec.frame_t_ns.size else [])]
