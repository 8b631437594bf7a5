"""The camera emulator: a face that makes the scenario's expressions, at the sensor's pace.

:class:`SimCamera` implements ``sensors.seams.FrameSource``. Frame ``i`` starts its
exposure when the camera's own crystal reads ``device_s(t0) + i / fps``; its ``t_ns`` is
that instant on host CLOCK_MONOTONIC (as picamera2's SensorTimestamp is) and ``seq`` is
the sensor's frame counter, so every lost frame is a gap in ``seq``.

Live, ``read()`` hands out frames in order once their readout has finished (one frame
period after exposure start). The sensor writes into a ring of ``buffer_frames``
buffers: a consumer that falls behind finds the oldest frames overwritten, counted in
``counters.dropped`` (and ``counters.extra["overrun"]``). Frames are rendered lazily,
only when delivered, and rendering is deterministic in (seed, time), so a frame looks
the same live, from :meth:`offline` and from :meth:`render`.

Faults: :meth:`drop_frames` (sensor-side losses), :meth:`freeze` (the same image with
advancing timestamps), :meth:`face_off` (background only), :meth:`set_lighting`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator

import numpy as np

from hil.sim.cpu import SIM_CPU
from hil.sim.crystal import Crystal
from hil.sim.face_render import (
    AUS,
    MAINS_RIPPLE_HZ,
    ROTATION_PER_PX,
    FaceRenderer,
    Pose,
    apex_fraction,
    blink_closure,
    hash_int,
    head_bump,
)
from hil.sim.scenario import Scenario
from hil.sim.wire import SYNC, Wire
from sensors.blocks import Frame, StreamCounters, monotonic_ns

_DROP_SALT = 2


class SimCamera:
    """A simulated high-speed grey camera looking at the scenario's subject."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        fps: float = 150.0,
        width: int = 320,
        height: int = 240,
        seed: int = 0,
        crystal: Crystal | None = None,
        wire: Wire | None = None,
        t0_ns: int | None = None,
        noise_sigma: float = 2.0,
        flicker: float = 0.0,
        buffer_frames: int = 4,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if buffer_frames < 1:
            raise ValueError(f"buffer_frames must be at least 1, got {buffer_frames}")
        self.scenario = scenario
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.seed = int(seed)
        self.crystal = crystal if crystal is not None else Crystal()
        self.wire = wire
        self.t0_ns = t0_ns
        self.noise_sigma = float(noise_sigma)
        self.flicker = float(flicker)
        self.buffer_frames = int(buffer_frames)
        self.counters = StreamCounters()
        self.counters.extra.update({"overrun": 0, "sensor_drop": 0})
        self.renderer = FaceRenderer(self.width, self.height, seed=self.seed)
        self._drop_rate = 0.0
        self._drop_set: set[int] = set()
        self._freezes: list[tuple[float, float]] = []
        self._face_off: list[tuple[float, float]] = []
        self._lighting: list[tuple[float, float, float]] = []  # (from_s, to_s, gain)
        self._running = False
        self._next = 0  # next frame index the consumer may get
        self._last_seq: int | None = None

    # ---- time ---------------------------------------------------------------------------

    def _origin_ns(self) -> int:
        return 0 if self.t0_ns is None else int(self.t0_ns)

    def frame_time_ns(self, i: int | np.ndarray) -> np.ndarray:
        """Host ns of frame ``i``'s exposure start (the camera crystal sets the pace)."""
        dev0 = float(self.crystal.device_s(self._origin_ns()))
        return self.crystal.host_ns(dev0 + np.asarray(i, dtype=np.float64) / self.fps)

    def _frame_index_at(self, host_ns: int) -> int:
        """Index of the last frame whose exposure started at or before ``host_ns``."""
        dev0 = self.crystal.device_s_at(self._origin_ns())
        dev = self.crystal.device_s_at(host_ns)
        i = math.floor((dev - dev0) * self.fps)
        # Float rounding can be off by one either way: settle on integer host ns. Frames i
        # and i + 1 in one crystal call (this runs on every read, numpy calls are not free).
        while True:
            t_i, t_next = self.crystal.host_ns(dev0 + np.array((i, i + 1), np.float64) / self.fps)
            if i >= 0 and t_i > host_ns:
                i -= 1
            elif t_next <= host_ns:
                i += 1
            else:
                return i

    def frame_t_s(self, i: int) -> float:
        """Scenario time (s since t0) of frame ``i``."""
        return (int(self.frame_time_ns(i)) - self._origin_ns()) / 1e9

    # ---- ground truth -------------------------------------------------------------------

    def face_box(self, t_s: float | None = None) -> tuple[int, int, int, int]:
        """Face box (x, y, w, h) in frame pixels; at ``t_s`` it follows the head movement."""
        x, y, w, h = self.renderer.face_box()
        if t_s is None:
            return (x, y, w, h)
        dx, dy, _ = self._head(t_s)
        return (round(x + dx), round(y + dy), w, h)

    def landmarks(self) -> dict[str, tuple[float, float]]:
        """Neutral anchor points (brows, eyes, nose, cheeks, mouth, chin) in frame pixels."""
        return self.renderer.landmarks()

    def region_boxes(self) -> dict[str, tuple[int, int, int, int]]:
        """Boxes (x, y, w, h) of the brows, eyes, nose, cheeks and mouth regions."""
        return self.renderer.region_boxes()

    def au_weights(self, t_s: float) -> dict[str, float]:
        """Fraction of apex (0..1) of every AU active at ``t_s`` (max over events)."""
        out: dict[str, float] = {}
        for e in self.scenario.expressions:
            f = apex_fraction(t_s, e.onset_s, e.apex_s, e.offset_s)
            if f > 0.0:
                for au in e.aus:
                    out[au] = max(out.get(au, 0.0), f)
        return out

    def _pose(self, t_s: float) -> Pose:
        aus: dict[str, float] = {}
        for e in self.scenario.expressions:
            f = apex_fraction(t_s, e.onset_s, e.apex_s, e.offset_s)
            if f > 0.0:
                for au in e.aus:
                    if au not in AUS:
                        raise ValueError(f"expression at {e.onset_s}s: no rendering for {au}")
                    aus[au] = max(aus.get(au, 0.0), f * e.intensity)
        blink = max((blink_closure(t_s, b.t_s, b.duration_s) for b in self.scenario.blinks),
                    default=0.0)
        dx, dy, roll = self._head(t_s)
        return Pose(aus=aus, blink=blink, dx_px=dx, dy_px=dy, roll_rad=roll)

    def _head(self, t_s: float) -> tuple[float, float, float]:
        dx = dy = 0.0
        for m in self.scenario.head_moves:
            b = head_bump(t_s, m.t_s, m.duration_s)
            dx += b * m.dx_px
            dy += b * m.dy_px
        return dx, dy, ROTATION_PER_PX * dx

    def _window(self, windows: list[tuple[float, float]], t_s: float) -> tuple[float, float] | None:
        for a, b in windows:
            if a <= t_s < b:
                return (a, b)
        return None

    def _gain(self, t_s: float) -> float:
        g = 1.0
        for a, b, gain in self._lighting:
            if a <= t_s < b:
                g = gain
        if self.flicker:
            g *= 1.0 + self.flicker * math.sin(2.0 * math.pi * MAINS_RIPPLE_HZ * t_s)
        return g

    def is_dropped(self, i: int) -> bool:
        """Whether the sensor loses frame ``i`` (injected fault)."""
        if i in self._drop_set:
            return True
        if self._drop_rate <= 0.0:
            return False
        # Scalar hash: the same value as hash_uniform without numpy overhead per frame.
        return (hash_int(self.seed, i, _DROP_SALT) >> 11) / float(1 << 53) < self._drop_rate

    def truth(self, t_s: float) -> dict:
        """What the scene shows at scenario time ``t_s`` (after faults)."""
        frozen = self._window(self._freezes, t_s)
        t_eff = frozen[0] if frozen else t_s
        face = self._window(self._face_off, t_eff) is None
        pose = self._pose(t_eff)
        return {
            "t_s": t_s,
            "face": face,
            "frozen": frozen is not None,
            "aus": self.au_weights(t_eff) if face else {},
            "au_scale": dict(pose.aus) if face else {},
            "events": [k for k, e in enumerate(self.scenario.expressions)
                       if e.onset_s < t_eff < e.offset_s] if face else [],
            "blink": pose.blink if face else 0.0,
            "head_px": (pose.dx_px, pose.dy_px),
            "gain": self._gain(t_eff),
            "face_box": self.face_box(t_eff) if face else None,
        }

    def frame_truth(self, i: int) -> dict:
        """Ground truth of frame ``i``: seq, t_ns, dropped, and :meth:`truth` at its time.

        ``aus`` maps each active AU to its fraction of apex (0..1); ``au_scale`` is that
        times the event's intensity (what the renderer used); ``events`` indexes
        ``scenario.expressions``.
        """
        t_ns = int(self.frame_time_ns(i))
        out = self.truth((t_ns - self._origin_ns()) / 1e9)
        out.update(seq=int(i), t_ns=t_ns, dropped=self.is_dropped(i))
        return out

    # ---- rendering ----------------------------------------------------------------------

    def render(self, t_s: float) -> np.ndarray:
        """The frame (uint8, (height, width)) at scenario time ``t_s``; deterministic per seed."""
        frozen = self._window(self._freezes, t_s)
        t_img = frozen[0] if frozen else t_s  # a frozen sensor repeats the first image
        face = self._window(self._face_off, t_img) is None
        key = round(t_img * 1e6)  # noise depends on (seed, time) only
        pose = self._pose(t_img) if face else Pose(aus={})
        return self.renderer.render(pose, gain=self._gain(t_img), noise_sigma=self.noise_sigma,
                                    key=key, face=face)

    def _frame(self, i: int) -> Frame:
        t_ns = int(self.frame_time_ns(i))
        luma = self.render((t_ns - self._origin_ns()) / 1e9)
        trigger = int(self.wire[SYNC].value_at(t_ns)) if self.wire is not None else 0
        return Frame(seq=int(i), t_ns=t_ns, luma=luma, trigger=trigger)

    def offline(self, start_s: float = 0.0, stop_s: float | None = None) -> Iterator[Frame]:
        """Every frame from ``start_s`` to ``stop_s`` (default: scenario end), unpaced.

        Sensor drops still leave ``seq`` gaps; nothing is lost to a slow consumer.
        """
        stop_s = self.scenario.duration_s if stop_s is None else stop_s
        origin = self._origin_ns()
        i = max(self._frame_index_at(origin + round(start_s * 1e9)), 0)
        if self.frame_t_s(i) < start_s:
            i += 1
        while True:
            t_ns = int(self.frame_time_ns(i))
            if (t_ns - origin) / 1e9 >= stop_s:
                return
            if not self.is_dropped(i):
                yield self._frame(i)
            i += 1

    # ---- FrameSource --------------------------------------------------------------------

    def start(self) -> None:
        if self.t0_ns is None:
            self.t0_ns = monotonic_ns()
        self._next = max(self._frame_index_at(monotonic_ns()), 0)
        self._running = True

    def stop(self) -> None:
        self._running = False

    def close(self) -> None:
        self.stop()

    def read(self, timeout_s: float) -> Frame | None:
        """The next frame in sensor order, or None if none is ready within ``timeout_s``."""
        with SIM_CPU.charge():  # rendering runs in the driver's thread: the bench's CPU
            return self._read(timeout_s)

    def _read(self, timeout_s: float) -> Frame | None:
        deadline = time.monotonic() + max(timeout_s, 0.0)
        period_ns = 1e9 / self.fps
        while self._running:
            now = monotonic_ns()
            # A frame is readable once its readout (one period after exposure start) ends.
            newest = self._frame_index_at(now - round(period_ns))
            if newest >= self._next:
                oldest_kept = newest - self.buffer_frames + 1
                if self._next < oldest_kept:
                    self._count_lost(self._next, oldest_kept, overrun=True)
                    self._next = oldest_kept
                for i in range(self._next, newest + 1):
                    if self.is_dropped(i):
                        self._count_lost(i, i + 1, overrun=False)
                        continue
                    self._next = i + 1
                    self._last_seq = i
                    self.counters.samples += 1
                    return self._frame(i)
                self._next = newest + 1
            remaining = deadline - time.monotonic()
            if remaining <= 0.0:
                return None
            due_ns = int(self.frame_time_ns(self._next)) + round(period_ns)
            time.sleep(min(remaining, max((due_ns - monotonic_ns()) / 1e9, 0.0) + 50e-6))
        return None

    def _count_lost(self, first: int, stop: int, *, overrun: bool) -> None:
        sensor = sum(1 for i in range(first, stop) if self.is_dropped(i))
        self.counters.dropped += stop - first
        self.counters.extra["sensor_drop"] += sensor
        if overrun:
            self.counters.extra["overrun"] += (stop - first) - sensor

    # ---- faults -------------------------------------------------------------------------

    def drop_frames(self, spec: float | Iterable[int]) -> None:
        """Sensor-side frame loss: a rate in [0, 1) (deterministic per seed) or frame indices."""
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            if not 0.0 <= float(spec) < 1.0:
                raise ValueError(f"drop rate must be in [0, 1), got {spec}")
            self._drop_rate = float(spec)
        else:
            self._drop_set.update(int(i) for i in spec)

    def freeze(self, from_s: float, to_s: float) -> None:
        """From ``from_s`` to ``to_s`` every frame repeats the image at ``from_s``."""
        self._freezes.append((float(from_s), float(to_s)))

    def face_off(self, from_s: float, to_s: float) -> None:
        """From ``from_s`` to ``to_s`` the subject is out of view: background only."""
        self._face_off.append((float(from_s), float(to_s)))

    def set_lighting(self, gain: float, from_s: float = -math.inf, to_s: float = math.inf) -> None:
        """Scene brightness gain (e.g. 0.05 very dark, 4.0 blown out), optionally in a window."""
        if gain < 0:
            raise ValueError(f"lighting gain must be >= 0, got {gain}")
        self._lighting.append((float(from_s), float(to_s), float(gain)))


def bench_render(n_frames: int = 3000, seed: int = 1) -> dict[str, tuple[float, float]]:
    """Per-frame render cost, (p50, p99) in ms of thread CPU time on one OpenCV thread.

    CPU time, not wall time, so the figure does not depend on what else the (shared)
    machine is running; under load, wall time adds the preemption on top.

    ``all``: every frame of a generated session (mostly neutral); ``active``: frames with
    an expression, blink or head movement; ``worst``: all 14 AUs, a blink and a head move.
    """
    import cv2

    from hil.sim.face_render import Pose
    from hil.sim.scenario import generate

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        cam = SimCamera(generate(60.0, 40, seed=seed, blinks_per_min=30, head_moves_per_min=10),
                        seed=seed, flicker=0.05)
        costs, active = [], []
        for i in range(n_frames):
            t = i / cam.fps * (60.0 * cam.fps / n_frames)  # spread over the whole session
            a = time.thread_time_ns()
            cam.render(t)
            dt = (time.thread_time_ns() - a) / 1e6
            costs.append(dt)
            p = cam._pose(t)
            if p.aus or p.blink or p.dx_px or p.dy_px:
                active.append(dt)
        worst_pose = Pose(aus=dict.fromkeys(AUS, 1.0), blink=0.5, dx_px=1.3, dy_px=0.4,
                          roll_rad=0.003)
        worst = []
        for k in range(300):
            a = time.thread_time_ns()
            cam.renderer.render(worst_pose, gain=1.0, noise_sigma=2.0, key=k)
            worst.append((time.thread_time_ns() - a) / 1e6)
    finally:
        cv2.setNumThreads(threads)

    def pct(x: list[float]) -> tuple[float, float]:
        return (float(np.percentile(x, 50)), float(np.percentile(x, 99)))

    return {"all": pct(costs), "active": pct(active), "worst": pct(worst)}


if __name__ == "__main__":  # python -m hil.sim.camera: render cost at 320x240
    for name, (p50, p99) in bench_render().items():
        print(f"render {name:6s} p50 {p50:.3f} ms  p99 {p99:.3f} ms")
