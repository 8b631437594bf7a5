"""Features, spotting and fusion as one runtime sink, results to an outlet.

    blocks  -> FeaturePipeline (inline: ~2 % of a core)
    frames  -> bounded queue -> spotter thread -> SpottedInterval
                 -> visual features -> ``events/me`` at once
                 -> pending until its physiological window closes
    tick()  -> ``vitals`` and ``health`` about 1 Hz; pending windows that closed
                 -> fusion model -> ``events/emotion``

The outlet is anything with ``publish(kind, body, t_ns) -> msg_id``: the MQTT publisher,
or :class:`LocalOutlet` when MQTT is off (results then go to the recording only).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edge.features import FeatureConfig, FeaturePipeline
from edge.queues import DropQueue
from edge.spotting.spotter import SpottedInterval, Spotter
from edge.spotting.visual import interval_features
from sensors.blocks import Frame, Marker, SampleBlock, StreamInfo, monotonic_ns

EVENT_WINDOW_AFTER_S = 5.0  # SCR 1-5 s after the apex, HR and breathing over 5 s
EVENT_WINDOW_GRACE_S = 0.1  # then publish with what is valid; pending inputs count as missing
VITALS_PERIOD_S = 1.0
HEALTH_PERIOD_S = 5.0


class Outlet(Protocol):
    def publish(self, kind: str, body: dict[str, Any], t_ns: int | None = None) -> str: ...


@dataclass
class LocalOutlet:
    """Keeps the last results in memory (bounded) when there is no broker."""

    limit: int = 1000
    messages: deque[tuple[str, dict[str, Any]]] = field(default_factory=deque)
    counts: dict[str, int] = field(default_factory=dict)
    _n: int = 0

    def publish(self, kind: str, body: dict[str, Any], t_ns: int | None = None) -> str:
        self._n += 1
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.messages.append((kind, body))
        while len(self.messages) > self.limit:
            self.messages.popleft()
        return f"local.{self._n}"


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


@dataclass
class _Pending:
    interval: SpottedInterval
    me_msg_id: str
    visual: np.ndarray | None
    visual_probs: dict[str, float]
    due_ns: int


class Processing:
    """The processing sink; call :meth:`tick` from the dispatcher loop."""

    name = "processing"  # as the runtime counts its failures

    def __init__(self, infos: dict[str, StreamInfo], fps: float, outlet: Outlet,
                 fusion: Any | None = None, mains_hz: float = 50.0,
                 health: Callable[[], dict[str, Any]] | None = None,
                 record_event: Callable[[str, dict[str, Any], int], Any] | None = None,
                 remap: Callable[[SampleBlock], SampleBlock] | None = None,
                 frame_queue: int = 300, eeg_channels: tuple[str, ...] = (),
                 ppg_inverted: bool = False) -> None:
        self._feature_args = (infos.get("eeg"), infos.get("hub"),
                              FeatureConfig(mains_hz=float(mains_hz),
                                            eeg_channels=eeg_channels or None,
                                            ppg_inverted=ppg_inverted))
        self.features = FeaturePipeline(*self._feature_args)
        self.spotter = Spotter(fps)
        self.outlet = outlet
        self.fusion = fusion
        # The spotter thread (visual-only probabilities) and the dispatcher (fused result)
        # both call the interpreter; LiteRT refuses a second invoke while one runs
        # ("reference to internal data"), which ended a loaded 60-s run.
        self._fusion_lock = threading.Lock()
        self._health = health
        self._record_event = record_event
        self._remap = remap
        self._frames: DropQueue[Frame] = DropQueue(frame_queue)
        self._pending: deque[_Pending] = deque()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._spot_loop, name="spotter", daemon=True)
        self._next_vitals = 0.0
        self._next_health = 0.0
        self.counters: dict[str, int] = {"me": 0, "emotion": 0, "spot_errors": 0}
        self.errors: list[str] = []
        self.spot_ms: deque[float] = deque(maxlen=5000)  # per-frame spotter cost
        self._thread.start()

    # -- sink ----------------------------------------------------------------------------
    def on_block(self, block: SampleBlock) -> None:
        if self._remap is not None:
            block = self._remap(block)
        self.features.update(block)

    def on_frame(self, frame: Frame) -> None:
        self._frames.put(frame)

    def on_marker(self, marker: Marker) -> None:
        self.outlet.publish("markers", {"code": marker.code, "marker_t_ns": marker.t_ns},
                            marker.t_ns)

    def reset(self) -> None:
        """Start the features over (after repeated failures); the spotter runs on and
        pending events still get their (fresh) window."""
        self.features = FeaturePipeline(*self._feature_args)

    # -- spotting, in its own thread ------------------------------------------------------
    def _spot_loop(self) -> None:
        while not self._halt.is_set():
            frame = self._frames.get(0.1)
            if frame is None:
                continue
            t = time.perf_counter()
            try:
                intervals = self.spotter.update(frame)
            except Exception as exc:  # a bad frame must not stop spotting
                self.counters["spot_errors"] += 1
                self.errors.append(f"spotter: {type(exc).__name__}: {exc}")
                continue
            self.spot_ms.append((time.perf_counter() - t) * 1e3)
            for iv in intervals:
                self._on_interval(iv)

    def _on_interval(self, iv: SpottedInterval) -> None:
        vf = interval_features(iv)
        visual = vf.stst if vf is not None else None
        probs = self._visual_probs(visual)
        body = {
            "kind": iv.kind,
            "interval": {"onset_frame": iv.onset, "apex_frame": iv.apex,
                         "offset_frame": iv.offset, "onset_ns": iv.onset_ns,
                         "apex_ns": iv.apex_ns, "offset_ns": iv.offset_ns},
            "regions": list(iv.regions),
            "aus": [a for a in iv.au_groups if a.startswith("AU")],
            "confidence": round(float(iv.confidence), 3),
            "visual_probs": probs,
            "region_px": {k: round(float(v), 3) for k, v in iv.region_px.items()},
        }
        msg_id = self.outlet.publish("events/me", body, iv.offset_ns)
        self.counters["me"] += 1
        if self._record_event is not None:
            self._record_event("me", {**body, "msg_id": msg_id}, iv.offset_ns)
        due = iv.apex_ns + int(EVENT_WINDOW_AFTER_S * 1e9)
        self._pending.append(_Pending(iv, msg_id, visual, probs, due))

    def _visual_probs(self, visual: np.ndarray | None) -> dict[str, float]:
        """The model's composite classes from the face alone (physiology inputs missing)."""
        if self.fusion is None or visual is None:
            return {}
        from edge.fusion import INPUT_SPEC

        eeg = np.zeros(INPUT_SPEC["eeg"][0][1:], np.float32)
        periph = np.zeros(INPUT_SPEC["periph"][0][1:], np.float32)
        with self._fusion_lock:
            res = self.fusion.predict(visual, eeg, periph, contributions=False)
        return {k: round(v, 4) for k, v in res.composite.items()}

    # -- periodic, in the dispatcher's thread ----------------------------------------------
    def tick(self) -> None:
        now = time.monotonic()
        if now >= self._next_vitals:
            self._next_vitals = now + VITALS_PERIOD_S
            self.outlet.publish("vitals", self.vitals())
        if self._health is not None and now >= self._next_health:
            self._next_health = now + HEALTH_PERIOD_S
            self.outlet.publish("health", self._health())
        self._fuse_due(monotonic_ns())

    def vitals(self) -> dict[str, Any]:
        s = self.features.summary()
        body: dict[str, Any] = {k: _num(s[k].value) if k in s else None
                                for k in ("hr_bpm", "rr_bpm", "eda_us", "skt_c")}
        body["eeg_bands"] = {k[4:-4]: _num(f.value) for k, f in s.items()
                             if k.startswith("eeg_") and k.endswith("_pow")}
        body["valid"] = {k: bool(f.valid) for k, f in s.items()}
        return body

    def _fuse_due(self, now_ns: int) -> None:
        while self._pending and self._pending[0].due_ns <= now_ns:
            p = self._pending[0]
            window = self.features.event_window(p.interval.apex_ns)
            late = now_ns - p.due_ns > EVENT_WINDOW_GRACE_S * 1e9
            if not window.ready and not late:
                return
            self._pending.popleft()
            self._emit_emotion(p, window)

    def _emit_emotion(self, p: _Pending, window: Any) -> None:
        _, valid = window.vector()
        t1 = p.interval.apex_ns + int(EVENT_WINDOW_AFTER_S * 1e9)
        body: dict[str, Any] = {
            "me_msg_id": p.me_msg_id,
            "interval": {"onset_ns": p.interval.onset_ns, "apex_ns": p.interval.apex_ns,
                         "offset_ns": p.interval.offset_ns},
            "window": {"t0_ns": p.interval.onset_ns, "t1_ns": t1},
            "physio_valid": int(valid.sum()),
            "physio_total": int(valid.size),
        }
        if self.fusion is not None:
            body.update(self._fuse(p))
        else:
            body.update({"composite": p.visual_probs or {}, "predicted": _argmax(
                p.visual_probs) or "surprise", "contributions": {"visual": 1.0}})
        self.outlet.publish("events/emotion", body, t1)
        self.counters["emotion"] += 1
        if self._record_event is not None:
            self._record_event("emotion", body, t1)

    def face_box(self) -> tuple[float, float, float, float] | None:
        """The face the spotter tracks now (x, y, w, h in frame pixels), or None."""
        return self.spotter.face_box

    def spotter_figures(self) -> dict[str, Any]:
        """Frames the spotter could not keep up with (queue drops) and its per-frame cost."""
        ms = np.asarray(self.spot_ms) if self.spot_ms else np.zeros(1)
        return {"frames_dropped": self._frames.dropped,
                "queue_high_water": self._frames.high_water,
                "frame_ms_p50": round(float(np.percentile(ms, 50)), 3),
                "frame_ms_p99": round(float(np.percentile(ms, 99)), 3),
                "status": str(getattr(self.spotter.status, "value", self.spotter.status))}

    def _fuse(self, p: _Pending) -> dict[str, Any]:
        from edge.fusion import event_inputs

        eeg, periph = event_inputs(self.features, p.interval.apex_ns)
        visual = p.visual if p.visual is not None else np.zeros((28, 28, 3), np.float32)
        with self._fusion_lock:
            res = self.fusion.predict(visual, eeg, periph)
        return {
            "composite": {k: round(v, 4) for k, v in res.composite.items()},
            "emotions": {k: round(v, 4) for k, v in res.emotion.items()},
            "predicted": res.predicted,
            "predicted_emotion": res.predicted_emotion,
            "contributions": {"visual": round(res.contributions["visual"], 4),
                              "eeg": round(res.contributions["eeg"], 4),
                              "peripheral": round(res.contributions["periph"], 4)},
            "model_version": getattr(self.fusion, "version", "unknown"),
            "inference_us": round(res.latency_us, 1),
        }

    def close(self) -> None:
        self._halt.set()
        self._thread.join(2.0)
        self._fuse_due(monotonic_ns() + int(1e12))  # flush what is pending, as it stands


def _argmax(probs: dict[str, float]) -> str | None:
    return max(probs, key=probs.get) if probs else None
