"""PPG: streaming systolic-peak (beat) detection, heart rate, pulse amplitude.

Detection (Elgendi et al. 2013, PLoS ONE 8:e76585, as NeuroKit2's default, made causal):
the pulse is band-passed 0.5-8 Hz and its positive part squared; a "block of interest"
is where the 111-ms moving average of that exceeds the 667-ms one (plus a small offset);
a block at least 111 ms wide holds one beat, at its largest band-passed value. Both
averages are centred, so a row is decided ``W2/2`` after it. A dicrotic wave sits inside
the systolic wave's 667-ms average and makes no block of its own, whatever its size
relative to the systolic rise (a local-maximum detector counts it as a second beat).
Only ratios of the signal to its own local averages matter, so gain changes and slow
baseline wander do not move the threshold; ``inverted=True`` flips sensors whose output
falls with blood volume.

Artefacts (motion, a sensor knocked or pressed): a block wider than 1.2 s, or a pulse
more than ``artefact_ratio`` times the median of the last beats, is no beat; the span is
marked and the rate features in it are invalid with reason ``motion``, and no interval
spans it. Gain changes that build up over several beats (vasoconstriction, ten times in
a minute) follow the median and stay valid.

The beat is placed at the maximum of the (sign-corrected) pulse within +-100 ms of the
block's peak moved back by the band-pass group delay at 1.2 Hz. Amplitude: that maximum
minus the minimum of the 400 ms before it.

Latency: a beat is reported when its block closes plus W2/2: about 0.4-0.7 s after its
systolic peak; tick features about 0.9 s after the tick.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from .base import (
    NO_BEATS,
    OK,
    WARMUP,
    Feature,
    SosStream,
    butter,
    tick_window,
    union_bits,
)
from .beats import LOW_SQI, BeatStep, correlations

MOTION = "motion"


class PpgFeatures(BeatStep):
    """``update(t_ns, x, bad)`` on one PPG channel (any fs from 25 to 1000 Hz; the
    pipeline feeds 200 Hz). Features: ``ppg_peak`` (pulse amplitude, foot to peak, channel
    unit, per beat), ``ppg_rr_ms``, ``ppg_hr_inst_bpm`` (per beat); every 1 s:
    ``ppg_hr_bpm`` (mean over 5 s) and ``ppg_amp`` (mean pulse amplitude over 5 s)."""

    prefix = "ppg"
    LATENCY_MS = 700.0

    def __init__(self, fs: float, unit: str = "au", hr_window_s: float = 5.0,
                 inverted: bool = False, artefact_ratio: float = 4.0) -> None:
        super().__init__(fs, unit, neighbourhood_s=0.0, refractory_s=0.3, pre_s=0.0,
                         lag_s=1.3, hr_window_s=hr_window_s, history_s=8.0)
        self.sign = -1.0 if inverted else 1.0
        sos = butter(2, (0.5, min(8.0, 0.45 * fs)), "bandpass", fs)
        self.bp = SosStream(sos)
        b, a = signal.sos2tf(sos)
        _, gd = signal.group_delay((b, a), w=[1.2], fs=fs)
        self.delay = round(float(gd[0]))
        self.foot = max(round(0.4 * fs), 1)
        self.search = max(round(0.1 * fs), 1)
        self.w1 = max(round(0.111 * fs), 1)  # systolic-peak window
        self.h2 = max(round(0.667 * fs) // 2, self.w1)  # half the beat window
        self.min_rr = round(0.3 * fs)
        self.max_block = round(1.2 * fs)
        self.ratio = artefact_ratio
        self.zmean: float | None = None  # running mean of the squared pulse (offset)
        self._alpha = 1.0 - np.exp(-1.0 / (3.0 * fs))  # 3-s time constant
        self._block: int | None = None  # first row of the open block
        self._last_beat: int | None = None  # row of the last accepted beat
        self._heights: list[float] = []  # band-passed peak heights of the last beats
        self._motion: list[tuple[int, int]] = []  # artefact spans (rows), newest last
        self._done = 0

    # --- streaming ----------------------------------------------------------------------
    def _columns(self, x: np.ndarray) -> np.ndarray:
        xs = self.sign * x
        y = self.bp.update(xs)
        return np.column_stack((xs, y))

    def _detect(self) -> list[Feature]:
        """Elgendi's blocks of interest over the rows both averages now decide."""
        out: list[Feature] = []
        stop = self.ring.total - self.h2  # rows whose both averages are complete
        base = self.ring.total - self.ring.n
        a = max(self._done, base + self.h2)
        if stop > a:
            _, c, b = self.ring.rows(a - self.h2, self.ring.total)
            y = c[:, 1]
            z = np.maximum(y, 0.0) ** 2
            cs = np.concatenate(([0.0], np.cumsum(z)))
            r = np.arange(self.h2, self.h2 + stop - a)  # local rows being decided
            h1 = self.w1 // 2
            ma1 = (cs[r + h1 + 1] - cs[r - h1]) / (2 * h1 + 1)
            ma2 = (cs[r + self.h2 + 1] - cs[r - self.h2]) / (2 * self.h2 + 1)
            zm = self._running_mean(z[r])
            boi = ma1 > ma2 + 0.02 * zm
            bad_rows = b[r, 0] != 0
            out += self._blocks(a, boi, bad_rows)
        self._done = max(stop, self._done)
        return out + self._ticks_until(self._done)

    def _running_mean(self, z: np.ndarray) -> np.ndarray:
        """Causal exponential mean of the squared pulse (Elgendi's offset), per row."""
        if self.zmean is None or not np.isfinite(self.zmean):
            self.zmean = float(z[0])
        zi = np.array([self.zmean * (1.0 - self._alpha)])
        m, _ = signal.lfilter([self._alpha], [1.0, -(1.0 - self._alpha)], z, zi=zi)
        self.zmean = float(m[-1])
        return m

    def _blocks(self, a: int, boi: np.ndarray, bad_rows: np.ndarray) -> list[Feature]:
        """Open and close blocks over decided rows a, a+1, ... (one Python step per edge)."""
        out: list[Feature] = []
        prev = np.concatenate(([self._block is not None], boi[:-1]))
        edges = np.flatnonzero(boi != prev)
        for e in edges:
            row = a + int(e)
            if boi[e]:
                self._block = row
            elif self._block is not None:
                out += self._ticks_until(row)
                out += self._close(self._block, row)
                self._block = None
        if self._block is not None and a + boi.size - self._block > self.max_block:
            # Wider than any pulse: motion. Mark it now, not when it ends.
            self._artefact(self._block, a + boi.size)
            self._block = a + boi.size
        if bad_rows.any():
            self.beats.break_()
            self._last_beat = None
        return out

    def _artefact(self, r0: int, r1: int) -> None:
        if self._motion and r0 <= self._motion[-1][1]:
            self._motion[-1] = (self._motion[-1][0], max(r1, self._motion[-1][1]))
        else:
            self._motion.append((r0, r1))
            self._motion = self._motion[-16:]
        self.beats.break_()
        self._last_beat = None

    def _close(self, r0: int, r1: int) -> list[Feature]:
        """A block [r0, r1) has ended: one beat, an artefact, or nothing."""
        if r1 - r0 < self.w1:
            return []
        t, c, b = self.ring.rows(r0, r1)
        if t.size == 0:
            return []
        if r1 - r0 > self.max_block:
            self._artefact(r0, r1)
            return []
        if union_bits(b):
            self.beats.break_()
            self._last_beat = None
            return []
        i = int(np.argmax(c[:, 1]))
        height = float(c[i, 1])
        peak = r1 - t.size + i
        # Reference: the median of the last blocks, rejected ones included, so a lasting
        # change of gain is learnt within a few pulses while a burst of motion is not.
        ref = float(np.median(self._heights)) if len(self._heights) >= 3 else None
        self._heights = [*self._heights[-8:], height]
        if ref is not None and height > self.ratio * ref:
            self._artefact(r0, r1)
            return []
        if ref is not None and height < ref / self.ratio:
            return []  # a ripple between pulses (a lasting drop is learnt, see above)
        if self._last_beat is not None and peak - self._last_beat < self.min_rr:
            return []  # inside the refractory period of the last beat
        self._last_beat = peak
        return self._beat(peak)

    # --- BeatStep hooks -----------------------------------------------------------------
    def _refine(self, pos: int) -> tuple[int, float] | None:
        c = pos - self.delay
        a = c - self.search
        _, x, _ = self.ring.rows(a, c + self.search + 1)
        if x.shape[0] == 0:
            return None
        base = max(a, self.ring.total - self.ring.n)
        i = int(np.argmax(x[:, 0]))
        _, xf, _ = self.ring.rows(base + i - self.foot, base + i + 1)
        return base + i, float(x[i, 0] - xf[:, 0].min())

    def _pulses_agree(self, bt: np.ndarray, rr: np.ndarray) -> bool:
        """Orphanidou et al. 2015 (IEEE JBHI 19:832) signal-quality rules on the beats of
        the rate window: intervals within a 2.2 ratio of each other and a mean correlation
        of each pulse with their average of at least 0.86. Noise on an unworn sensor and
        motion make beats, but not alike."""
        if not self._intervals_agree(rr[np.isfinite(rr)]):
            return False
        m = self._beat_shapes(bt, rr, 1)
        if m is None:
            return True  # too few to judge: the rate rules above decide
        corr = correlations(m, m.mean(axis=0))
        return bool(np.nanmean(corr) >= 0.86) if np.isfinite(corr).any() else False

    def _tick(self, k: int) -> list[Feature]:
        window = tick_window(self.ring, k, self.tick)
        if window is None:
            return []
        t_end, _, reason = window
        if reason == OK and any(r0 < k and r1 > k - self.tick for r0, r1 in self._motion):
            reason = MOTION
        if reason == OK and k <= self.warm:
            reason = WARMUP
        bt, rr = self.beats.window(t_end - self.hr_window_ns, t_end + 1)
        hr = 60.0 / rr[np.isfinite(rr)]
        if reason == OK and hr.size < 2:
            reason = NO_BEATS
        if reason == OK and not self._pulses_agree(bt, rr):
            reason = LOW_SQI
            self.beats.distrust(t_end - self.hr_window_ns, t_end + 1)  # out of event HR
        now = self._latest_ns
        a, bb = np.searchsorted(self.beats.t, [t_end - self.hr_window_ns, t_end + 1])
        amp = self.amp[a:bb]  # aligned with beats.t (appended and trimmed together)
        return [
            Feature.make("ppg_hr_bpm", float(np.mean(hr)) if hr.size else np.nan, "bpm",
                         t_end, now, reason),
            Feature.make("ppg_amp", float(np.mean(amp)) if amp.size else np.nan, self.unit,
                         t_end, now, reason),
        ]
