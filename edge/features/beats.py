"""The streaming skeleton shared by beat detectors (ECG R peaks, PPG systolic peaks).

Per block: fill non-finite samples, compute a refinement column and a detection column
(subclass), push them to a ring, decide the candidates that are now ``w`` samples old,
then emit the 1-s tick features whose windows are fully decided. Ticks wait until every
beat that can fall before them has been decided, so output does not depend on block size.
"""

from __future__ import annotations

import numpy as np

from .base import (
    NO_BEATS,
    OK,
    WARMUP,
    Feature,
    OneSecondPieces,
    Ring,
    fill_nonfinite,
    tick_window,
    union_bits,
)
from .peaks import AdaptivePeaks, BeatSeries, local_max_candidates

LOW_SQI = "low_sqi"  # the beats in the window do not look like one beat repeated
MAX_RR_RATIO = 2.2  # Orphanidou et al.: a window's longest interval within 2.2x its shortest


def correlations(shapes: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Pearson correlation of each (mean-removed) row with ``template``; nan for a flat one."""
    den = np.linalg.norm(shapes, axis=1) * np.linalg.norm(template)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (shapes @ template) / den


class BeatStep(OneSecondPieces):
    """Base class: subclasses set the filters and implement ``_columns``, ``_value`` and
    ``_refine``."""

    prefix = "beat"
    unit = ""

    def __init__(self, fs: float, unit: str, *, neighbourhood_s: float, refractory_s: float,
                 pre_s: float, lag_s: float, warmup_s: float = 2.0, hr_window_s: float = 5.0,
                 tick_s: float = 1.0, history_s: float = 6.0, frac: float = 0.25) -> None:
        self.fs = fs
        self.unit = unit
        self.w = round(neighbourhood_s * fs)
        self.pre = round(pre_s * fs)  # samples before a candidate that must be clean
        self.lag = round(lag_s * fs)  # max rows from a beat to its candidate
        self.warm = round(warmup_s * fs)
        self.tick = round(tick_s * fs)
        self.hr_window_ns = int(hr_window_s * 1e9)
        self.ring = Ring(int(history_s * fs), 2)
        self.peaks = AdaptivePeaks(round(refractory_s * fs), frac)
        self.beats = BeatSeries()
        self.amp = np.zeros(0)  # amplitude per beat, aligned with self.beats.t
        self._done = 0
        self._warm_end = self.warm
        self._warm: list[tuple[int, float]] = []
        self._last = np.zeros(1)
        self._next_tick = self.tick
        self._latest_ns = 0

    @property
    def latest_ns(self) -> int:
        """Host ns of the newest sample this step has seen (its stream's "now")."""
        return self._latest_ns

    # --- subclass hooks -------------------------------------------------------------------
    def _columns(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _value(self, pos: int) -> float:
        raise NotImplementedError

    def _refine(self, pos: int) -> tuple[int, float] | None:
        """(row, amplitude) of the beat near candidate ``pos``; None when the rows it
        needs are no longer held (a search-back beat older than the history)."""
        raise NotImplementedError

    def _tick_features(self, t_ns: int, reason: str) -> list[Feature]:
        return []

    def _relearn(self, after: int) -> None:
        """Learn the detection levels again from the candidates of the warm-up that starts
        at row ``after``; no interval spans the relearning."""
        self.peaks.reset()
        self.peaks.spk = None
        self.beats.break_()
        self._warm_end = after + self.warm
        self._warm.clear()

    def _window_quality(self, bt: np.ndarray, rr: np.ndarray) -> str:
        """OK, or why the beats of a rate window cannot be trusted (a signal-quality index);
        a window that fails relearns the detection levels."""
        return OK

    def _intervals_agree(self, ok: np.ndarray) -> bool:
        """The interval rules a rate window's valid intervals ``ok`` (s) share for ECG and
        PPG: Orphanidou's ratio rule, and intervals covering half the window (beats found
        in a few places only are not a rate)."""
        if ok.size and ok.max() > MAX_RR_RATIO * ok.min():
            return False
        return bool(ok.sum() >= 0.5 * self.hr_window_ns / 1e9)

    def _beat_shapes(self, bt: np.ndarray, rr: np.ndarray, column: int) -> np.ndarray | None:
        """One row per beat of the window: ``column`` over the median interval centred on
        the beat, mean removed (Orphanidou's template window); None with under 3 beats."""
        ok = rr[np.isfinite(rr)]
        half = int(np.median(ok) * 0.5e9) if ok.size else 0
        segs = [self.ring.between(int(tb) - half, int(tb) + half)[1][:, column] for tb in bt]
        n = min((sg.size for sg in segs), default=0)
        if len(segs) < 3 or n < 4:
            return None
        m = np.stack([sg[:n] for sg in segs])
        return m - m.mean(axis=1, keepdims=True)

    # --- streaming ----------------------------------------------------------------------------
    def _update(self, t_ns: np.ndarray, x: np.ndarray, bad: np.ndarray) -> list[Feature]:
        """``x`` (n,) one channel, ``bad`` (n,) quality bits -> features decided now."""
        if x.shape[0] == 0:
            return []
        x, self._last = fill_nonfinite(x.astype(float), self._last)
        self.ring.push(t_ns, self._columns(x), bad[:, None])
        self._latest_ns = int(t_ns[-1])
        return self._detect()

    def _detect(self) -> list[Feature]:
        """Beats and ticks the rows now in the ring decide: candidates are local maxima of
        column 1 (a subclass with another detector overrides this)."""
        out: list[Feature] = []
        cands, self._done = local_max_candidates(self.ring, 1, self._done, self.w)
        for p in cands:
            # A tick sees exactly the candidates before tick + lag (search-back included),
            # whatever the block size.
            out += self._ticks_until(int(p))
            out += self._candidate(int(p))
        return out + self._ticks_until(self._done)

    def _ticks_until(self, row: int) -> list[Feature]:
        out: list[Feature] = []
        while self._next_tick + self.lag <= row:
            out += self._tick(self._next_tick)
            self._next_tick += self.tick
        return out

    def _candidate(self, p: int) -> list[Feature]:
        _, _, b = self.ring.rows(p - self.pre, p + self.w)
        v = self._value(p)
        if union_bits(b) or not np.isfinite(v):
            # Bad data near the candidate (or a value that overflowed): no beat, no interval
            # across it, relearn levels.
            self._relearn(p + self.w)
            return []
        if self.peaks.spk is None:
            if p < self._warm_end:
                self._warm.append((p, v))
                return []
            vals = np.array([wv for _, wv in self._warm] + [v])
            self.peaks.start(vals)
            replay, self._warm = [*self._warm, (p, v)], []
        else:
            replay = [(p, v)]
        out: list[Feature] = []
        for q, qv in replay:
            for beat in self.peaks.step(q, qv):
                out += self._beat(beat)
        return out

    def _beat(self, pos: int) -> list[Feature]:
        found = self._refine(pos)
        if found is None:
            return []
        row, amp = found
        t, _, _ = self.ring.rows(row, row + 1)
        if t.size == 0:
            return []
        tb = int(t[0])
        if self.beats.t.size and tb <= self.beats.t[-1]:
            return []  # refinement landed on an earlier beat: not a new one
        rr = self.beats.add(tb)
        self.amp = np.append(self.amp, amp)[-self.beats.cap:]
        now = self._latest_ns
        p = self.prefix
        out = [Feature.make(f"{p}_peak", amp, self.unit, tb, now)]
        reason = OK if np.isfinite(rr) else WARMUP
        out.append(Feature.make(f"{p}_rr_ms", rr * 1e3, "ms", tb, now, reason))
        out.append(Feature.make(f"{p}_hr_inst_bpm", 60.0 / rr if rr else np.nan, "bpm", tb, now,
                                reason))
        return out

    def _tick(self, k: int) -> list[Feature]:
        window = tick_window(self.ring, k, self.tick)
        if window is None:
            return []
        t_end, _, reason = window
        if reason == OK and (self.peaks.spk is None or k <= self._warm_end):
            reason = WARMUP
        bt, rr = self.beats.window(t_end - self.hr_window_ns, t_end + 1)
        hr = 60.0 / rr[np.isfinite(rr)]
        if reason == OK and hr.size < 2:
            reason = NO_BEATS
        if reason == OK:
            reason = self._window_quality(bt, rr)
            if reason != OK:
                # Its intervals stay out of every later window (HRV looks back 30 s), and
                # levels learnt on noise can sit above every real beat for tens of seconds
                # (the search-back adds one beat per detection): learn them again.
                self.beats.distrust(t_end - self.hr_window_ns, t_end + 1)
                self._relearn(k + self.lag)  # the tick's horizon: the same rows for any block size
        out = [Feature.make(f"{self.prefix}_hr_bpm", float(np.mean(hr)) if hr.size else np.nan,
                            "bpm", t_end, self._latest_ns, reason)]
        return out + self._tick_features(t_end, reason)
