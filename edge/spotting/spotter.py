"""Streaming micro/macro-expression spotter.

Per frame (at the camera rate): track and stabilise the face (:mod:`.face`), compute
DIS optical flow between the crop now and the crops ``lag_s`` and ``long_lag_s`` ago,
score it on a block grid (:func:`.flow.block_motion`, MDMD-like) and compare the score
with an adaptive noise floor (exponential mean and mean absolute deviation of the idle
score). The short lag (about half an ME onset-apex) catches micro-expressions; the long
one catches slow macro onsets that move little within the short lag.

The long-lag score is averaged over ``long_smooth_s`` (noise is nearly independent
frame to frame, a slow movement is not); the floor learns only from quiet frames, with
samples winsorised at ``z_low`` so sub-threshold movements do not raise it.

State machine::

    idle --z > z_on (and score > min_px) for `confirm` frames--> active
    active: reference frozen at the frame before the onset; displacement D(t) of the
            crop against it; apex = argmax D
    active --D < max(floor, off_frac * peak) for `confirm` frames, or D < 0.6 peak and
            no short-lag motion for `settle_s` (face stopped short of neutral), or no
            short-lag motion for `hold_s` whatever D (held, or head at rest)--> emit
    active --longer than max_event_s--> emit (counted "too_long")
    emit: history cleared (lagged comparisons must not reach into the event), refractory
    refractory --z back under z_low--> idle

Onset: the idle z history is walked back to where it left the noise floor; onset and
offset are then refined with a raised-cosine time course (see :meth:`Spotter._bounds`).
Suppressed, counted, never emitted: blinks (short, and the grey change between the
reference and apex crops sits in the eye rows, :func:`.flow.eye_dominance`), head moves
(tracked face displacement larger than the facial motion), weak events (peak D under
``min_px``). A face lost mid-event aborts the event (counted "aborted").

Latency: an interval is emitted ``confirm`` frames (20 ms at 150 fps) after the frame
where D fell below the release level, ``settle_s`` (100 ms) after the face stopped
short of neutral, or ``hold_s`` (500 ms) after a held/drifting face stopped moving. The
reported offset may be extrapolated past the release frame, so emission is typically
0-120 ms after the reported offset, at most about 0.5 s. Cost: two DIS ultrafast
flows on the 128 px crop per frame plus one template match; Haar every 1.5 s.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from sensors.blocks import Frame

from .face import FaceObs, FaceStatus, FaceTracker
from .flow import REGION_AUS, BlockMotion, block_motion, eye_dominance, make_dis

ME_MAX_S = 0.5  # micro-expression: at most 500 ms onset to offset


@dataclass(frozen=True)
class SpottedInterval:
    """One spotted facial movement; frame numbers are the camera's ``Frame.seq``."""

    onset: int
    apex: int
    offset: int
    onset_ns: int
    apex_ns: int
    offset_ns: int
    kind: str  # "micro" (<= 500 ms) or "macro"
    regions: tuple[str, ...]  # face regions that moved: "upper", "mid", "lower"
    au_groups: tuple[str, ...]  # candidate AUs of those regions (not an AU classifier)
    confidence: float  # 0..1, from the peak's height over the adaptive threshold
    peak_px: float  # displacement at apex, crop pixels (128 px face)
    region_px: dict[str, float]  # per-region displacement at apex, crop pixels
    emitted_seq: int  # frame on which the interval was emitted (latency = emitted - offset)
    onset_crop: np.ndarray | None = field(default=None, repr=False, compare=False)
    apex_crop: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def duration_s(self) -> float:
        return (self.offset_ns - self.onset_ns) / 1e9


@dataclass
class _Slot:
    seq: int
    t_ns: int
    crop: np.ndarray
    centre: tuple[float, float]  # tracked face centre, crop px (for the head-move test)


@dataclass
class _Event:
    ref: _Slot
    onset: _Slot
    peak: float = -1.0
    apex: _Slot | None = None
    apex_motion: BlockMotion | None = None
    below: int = 0
    first_below: _Slot | None = None
    first_below_d: float = 0.0
    first: _Slot | None = None  # first active frame and its displacement: onset model
    first_d: float = 0.0
    settle: int = 0  # frames in a row with no short-lag motion after the apex
    settle_from: _Slot | None = None
    still: int = 0  # frames in a row with no short-lag motion after the apex, any D
    still_from: _Slot | None = None
    head_px: float = 0.0  # largest tracked head displacement from the reference
    trigger_z: float = 0.0


class _Floor:
    """Adaptive noise floor: exponential mean and mean absolute deviation."""

    def __init__(self, tau_frames: float, min_dev: float) -> None:
        self.a = 1.0 / tau_frames
        self.mean = 0.0
        self.dev = min_dev
        self.min_dev = min_dev
        self.n = 0

    def z(self, x: float) -> float:
        return (x - self.mean) / max(self.dev, self.min_dev)

    def update(self, x: float, clip_z: float | None = None) -> None:
        a = max(self.a, 1.0 / (self.n + 1))  # plain average while warming up
        if clip_z is not None and self.n > 10:
            # Winsorise: motion below the trigger must not inflate the floor, yet a real
            # rise of the noise (lighting, gain) still pulls the floor up, slowly.
            x = min(x, self.mean + clip_z * max(self.dev, self.min_dev))
        self.n += 1
        self.mean += a * (x - self.mean)
        self.dev += a * (abs(x - self.mean) - self.dev)


class Spotter:
    """Feed frames with :meth:`update`; get intervals back as soon as their offset is known."""

    def __init__(
        self,
        fps: float,
        *,
        lag_s: float = 0.1,
        long_lag_s: float = 0.4,
        z_on: float = 5.0,
        z_low: float = 2.5,
        min_px: float = 0.1,
        off_frac: float = 0.3,
        confirm: int = 3,
        max_event_s: float = 4.0,
        settle_s: float = 0.1,
        hold_s: float = 0.5,
        smooth_s: float = 0.0,
        long_smooth_s: float = 0.1,
        warmup_s: float = 0.5,
        blink_eye: float = 0.75,
        blink_max_s: float = 0.45,
        head_ratio: float = 1.0,
        head_min_px: float = 1.0,
        tracker: FaceTracker | None = None,
    ) -> None:
        self.fps = float(fps)
        self.k = max(1, round(lag_s * fps))
        self.k2 = max(self.k + 1, round(long_lag_s * fps))
        self.z_on, self.z_low = z_on, z_low
        self.min_px = min_px  # absolute floor: never trigger on motion under 0.1 crop px
        self.off_frac = off_frac
        self.confirm = confirm
        self.max_event = round(max_event_s * fps)
        self.settle_n = max(2, round(settle_s * fps))
        self.hold_n = max(self.settle_n, round(hold_s * fps))
        self.warmup = round(warmup_s * fps)
        self.blink_eye, self.blink_max_s = blink_eye, blink_max_s
        self.head_ratio = head_ratio
        self.head_min_px = head_min_px  # head sway below this (crop px) is not a head move
        self.tracker = tracker or FaceTracker(fps)
        self._dis = make_dis("ultrafast")
        self._ring: deque[_Slot] = deque(maxlen=self.k2 + round(0.6 * fps) + 1)
        self._zhist: deque[float] = deque(maxlen=round(0.6 * fps))  # idle z, for onset
        n_smooth = max(1, round(smooth_s * fps))
        self._s1: deque[float] = deque(maxlen=n_smooth)  # recent short-lag scores
        # The long lag watches slow movements: average it longer, noise drops ~1/sqrt(n).
        self._s2: deque[float] = deque(maxlen=max(1, round(long_smooth_s * fps)))
        self._floor = _Floor(tau_frames=3 * fps, min_dev=0.008)
        self._floor2 = _Floor(tau_frames=3 * fps, min_dev=0.005)
        self._event: _Event | None = None
        self._above = 0
        self._refractory = False
        self.status: FaceStatus = FaceStatus.NO_FACE
        # The tracked face (x, y, w, h in frame pixels) while OK: the recorder's face crop.
        self.face_box: tuple[float, float, float, float] | None = None
        self.last_score = 0.0
        self.counters: dict[str, int] = {
            "frames": 0, "face_frames": 0, "emitted": 0, "blinks": 0, "head_moves": 0,
            "aborted": 0, "too_long": 0, "weak": 0,
        }

    # -- helpers -------------------------------------------------------------------------
    def _motion(self, a: np.ndarray, b: np.ndarray) -> BlockMotion:
        return block_motion(self._dis.calc(a, b, None))

    def _reset_history(self) -> None:
        if self._event is not None:
            self.counters["aborted"] += 1  # face lost mid-event: no interval, counted
        self._event = None
        self._ring.clear()
        self._zhist.clear()
        self._s1.clear()
        self._s2.clear()
        self._above = 0
        self._refractory = False

    # -- per frame -------------------------------------------------------------------------
    def update(self, frame: Frame) -> list[SpottedInterval]:
        self.counters["frames"] += 1
        obs: FaceObs = self.tracker.update(frame.luma)
        self.status = obs.status
        self.face_box = obs.box if obs.status is FaceStatus.OK else None
        if obs.status is not FaceStatus.OK or obs.crop is None:
            self._reset_history()
            return []
        self.counters["face_frames"] += 1
        if obs.reacquired:
            self._reset_history()
        box = obs.box or (0.0, 0.0, 1.0, 1.0)
        k = obs.crop.shape[0] / box[2]
        slot = _Slot(frame.seq, frame.t_ns, obs.crop,
                     ((box[0] + box[2] / 2) * k, (box[1] + box[3] / 2) * k))
        self._ring.append(slot)
        if len(self._ring) <= self.k:
            return []
        s1 = self._smoothed(self._s1, self._ring[-1 - self.k].crop, slot.crop)
        if self._event is not None:
            return self._step_active(slot, s1)
        self._step_idle(slot, s1)
        return []

    def _smoothed(self, buf: deque[float], a: np.ndarray, b: np.ndarray) -> float:
        """Block score of a -> b, averaged over the last few frames (DIS noise is
        nearly independent frame to frame, a sustained movement is not)."""
        buf.append(self._motion(a, b).score)
        return float(sum(buf) / len(buf))

    def _step_idle(self, slot: _Slot, s1: float) -> None:
        z = self._floor.z(s1)
        s = s1
        s2 = None
        if len(self._ring) > self.k2:
            s2 = self._smoothed(self._s2, self._ring[-1 - self.k2].crop, slot.crop)
            z = max(z, self._floor2.z(s2))
            s = max(s, s2)
        self.last_score = s
        warm = self._floor.n >= self.warmup
        hot = warm and z > self.z_on and s > self.min_px
        if self._refractory:
            if z < self.z_low:
                self._refractory = False
        elif hot:
            self._above += 1
        else:
            self._above = 0
        if not hot:  # learn the noise floor from quiet frames (winsorised)
            self._floor.update(s1, self.z_low)
            if s2 is not None:
                self._floor2.update(s2, self.z_low)
        self._zhist.append(z)
        if self._above >= self.confirm and not self._refractory:
            self._start_event(z)

    def _start_event(self, z: float) -> None:
        # Walk back to where the score left the noise floor: that frame is the onset.
        back = 0
        hist = list(self._zhist)
        while back < len(hist) - 1 and hist[-2 - back] > self.z_low:
            back += 1
        back += 1  # the first elevated frame already moved: the one before is still neutral
        ring = self._ring
        i_onset = max(0, len(ring) - 1 - back)
        ref = ring[max(0, i_onset - 1)]
        self._event = _Event(ref=ref, onset=ring[i_onset], trigger_z=z)
        self._above = 0

    def _step_active(self, slot: _Slot, s1: float) -> list[SpottedInterval]:
        ev = self._event
        assert ev is not None
        m = self._motion(ev.ref.crop, slot.crop)
        d = m.score
        ev.head_px = max(ev.head_px, float(np.hypot(slot.centre[0] - ev.ref.centre[0],
                                                    slot.centre[1] - ev.ref.centre[1])))
        if ev.first is None:
            ev.first, ev.first_d = slot, d
        if d > ev.peak:
            ev.peak, ev.apex, ev.apex_motion = d, slot, m
            ev.below, ev.first_below = 0, None
        else:
            floor = self._floor.mean + self.z_low * max(self._floor.dev, self._floor.min_dev)
            if d < max(floor, self.off_frac * ev.peak):
                ev.below += 1
                if ev.first_below is None:
                    ev.first_below, ev.first_below_d = slot, d
            else:
                ev.below, ev.first_below = 0, None
        # The face may stop short of its old position (drift, a held expression): once it
        # has fallen from the peak and stopped moving for `settle` frames, the event ends.
        # A face that holds still for `hold_s` (an expression held, or a head that came
        # to rest elsewhere) ends the event whatever D says.
        z1 = self._floor.z(s1)
        # "Still" (the long hold) tolerates single-frame noise up to 4 dev: a 2.5 dev bar
        # was crossed by noise within every 0.5 s run. "Settle" (short) keeps the strict bar.
        # A slow macro barely moves within the short lag: the long lag must be quiet too.
        z2 = 0.0
        if len(self._ring) > self.k2:
            z2 = self._floor2.z(self._smoothed(self._s2, self._ring[-1 - self.k2].crop, slot.crop))
        if z1 < 4.0 and z2 < 4.0:
            ev.still += 1  # counted even while D creeps up (slow drift keeps moving the apex)
            ev.still_from = ev.still_from or slot
        else:
            ev.still, ev.still_from = 0, None
        if z1 < self.z_low and ev.apex is not None and slot.seq > ev.apex.seq \
                and d < 0.6 * ev.peak:
            ev.settle += 1
            ev.settle_from = ev.settle_from or slot
        else:
            ev.settle, ev.settle_from = 0, None
        if ev.still >= self.hold_n and ev.settle < self.settle_n:
            assert ev.apex is not None and ev.still_from is not None
            start = ev.still_from if ev.still_from.seq > ev.apex.seq else slot
            ev.settle, ev.settle_from = self.settle_n, start
        settled = ev.settle >= self.settle_n
        too_long = slot.seq - ev.onset.seq >= self.max_event
        if settled and ev.below < self.confirm and ev.settle_from is not None:
            ev.first_below, ev.first_below_d = ev.settle_from, 0.0
            ev.below = self.confirm
        if ev.below >= self.confirm or too_long:
            if too_long:
                self.counters["too_long"] += 1
            self._event = None
            self._refractory = True
            self._zhist.clear()
            # Lagged comparisons must not reach back into this event: restart the history.
            last = self._ring[-1]
            self._ring.clear()
            self._ring.append(last)
            self._s1.clear()
            self._s2.clear()
            end = ev.first_below if (ev.first_below and not too_long) else slot
            out = self._finish(ev, end, slot)
            return [out] if out is not None else []
        return []

    def _bounds(self, ev: _Event, end: _Slot) -> tuple[_Slot, _Slot]:
        """Onset and offset refined with a raised-cosine time course.

        The detector sees the movement only once it rises above noise, and lets go
        while it is still a fraction f of the peak; a raised-cosine rise/decay says
        how much of the course was already done at that fraction, so the edge is
        extrapolated back (onset) or forward (offset), never beyond one extra
        rise/decay length.
        """
        apex = ev.apex
        assert apex is not None and ev.first is not None
        onset = ev.onset
        f = ev.first_d / max(ev.peak, 1e-9)
        if 0.0 < f < 0.95 and ev.first.seq < apex.seq:
            s = float(np.arccos(1.0 - 2.0 * f) / np.pi)  # share of the rise already done
            span = (apex.seq - ev.first.seq) / (1.0 - s)
            model = apex.seq - round(min(span, 2 * (apex.seq - ev.first.seq)))
            if model < onset.seq:
                onset = _Slot(model, apex.t_ns - round((apex.seq - model) * 1e9 / self.fps),
                              onset.crop, onset.centre)
        offset = end
        if ev.first_below is end:
            f = min(max(ev.first_below_d / max(ev.peak, 1e-9), 0.0), 0.95)
            s = max(float(np.arccos(2.0 * f - 1.0) / np.pi), 0.5)  # share of the decay done
            model = apex.seq + round((end.seq - apex.seq) / s)
            offset = _Slot(model, apex.t_ns + round((model - apex.seq) * 1e9 / self.fps),
                           end.crop, end.centre)
        return onset, offset

    def _finish(self, ev: _Event, end: _Slot, now: _Slot) -> SpottedInterval | None:
        assert ev.apex is not None and ev.apex_motion is not None
        if ev.peak < self.min_px:  # faded before it became a movement: noise
            self.counters["weak"] += 1
            return None
        onset, end = self._bounds(ev, end)
        dur_s = (end.t_ns - onset.t_ns) / 1e9
        bm = ev.apex_motion
        if dur_s <= self.blink_max_s and eye_dominance(ev.ref.crop, ev.apex.crop) > self.blink_eye:
            self.counters["blinks"] += 1
            return None
        if ev.head_px > max(self.head_min_px, self.head_ratio * ev.peak):
            self.counters["head_moves"] += 1
            return None
        rs = bm.region_scores()
        top = max(rs.values())
        regions = tuple(r for r, v in rs.items() if v >= 0.5 * top)
        aus = tuple(dict.fromkeys(a for r in regions for a in REGION_AUS[r]))
        thr = self._floor.mean + self.z_on * max(self._floor.dev, self._floor.min_dev)
        ratio = ev.peak / max(thr, self.min_px)
        conf = float(np.clip(1.0 - np.exp(-max(ratio - 0.5, 0.0)), 0.0, 1.0))
        self.counters["emitted"] += 1
        return SpottedInterval(
            onset=onset.seq, apex=ev.apex.seq, offset=end.seq,
            onset_ns=onset.t_ns, apex_ns=ev.apex.t_ns, offset_ns=end.t_ns,
            kind="micro" if dur_s <= ME_MAX_S else "macro",
            regions=regions, au_groups=aus, confidence=conf, peak_px=float(ev.peak),
            region_px=rs, emitted_seq=now.seq,
            onset_crop=ev.ref.crop, apex_crop=ev.apex.crop,
        )
