"""The clock model: device time -> host CLOCK_MONOTONIC ns.

Each stream (EEG sample index, hub MCU microseconds, camera sensor ns) gets one
:class:`ClockModel`. The host's sync pulse train gives *pairs*: the device time at which
the stream saw pulse ``k`` rise, and the host time at which the host drove it
(``sensors.trigger.SyncPulser``). :func:`match_pulses` pairs decoded device pulses with
emitted host pulses; :meth:`ClockModel.add_pair` fits them.

The model
---------
Within one *segment* (a stretch where the device clock is continuous) the map is
affine. With an anchor pair ``(x0, y0)`` (device units, host ns) and ``u`` device units
per second::

    x = (device_t - x0) / u                   device seconds since the anchor
    z = (host_ns - y0) - 1e9 * x              host ns minus the nominal rate
    z = c + d * (x - xbar)                    fitted line (c: offset ns, d: ns per s)
    host_ns = y0 + 1e9 * x + c + d * (x - xbar)

so ``d`` is the rate error in ns per device second and the device runs fast by
``drift_ppm = (1e9 / (1e9 + d) - 1) * 1e6`` (the sign convention of ``hil.sim.crystal``).

The fit is a MAP weighted least squares over the last ``window_pairs`` pairs with a
Gaussian prior on the slope, ``d ~ N(d0, s_d^2)``. In centred coordinates the offset and
slope decouple, so the solution is closed form::

    c   = sum(w z) / sum(w)                          Var(c) = sigma^2 / sum(w)
    d   = (Sxz / sigma^2 + d0 / s_d^2) * Var(d)      Var(d) = 1 / (Sxx / sigma^2 + 1 / s_d^2)
    Sxx = sum(w (x - xbar)^2),  Sxz = sum(w (x - xbar)(z - zbar))

For a fresh session ``d0 = 0`` and ``s_d`` is the crystal tolerance (``crystal_ppm``):
one pair gives an offset-only fit, a few pairs already estimate drift. After a reset or
a step the crystal is the same, so the new segment keeps the old slope as its prior
(with ``wander_ppm`` of slack) and is right from its first pair.

Robustness: the weights ``w`` are 0/1. The fit starts from the median offset at the
prior slope, then iterates: residuals ``r``, robust scale
``sigma = max(1.4826 * MAD(r), noise_floor_ns)``, ``w = |r| <= reject_mads * sigma``,
refit. Host scheduling jitter and rare bad decodes fall out this way.

Segments: a new pair is *far* when its residual exceeds
``max(step_sigmas * sqrt(sigma^2 + Var(prediction)), step_floor_ns)``. Far pairs are held
back; ``confirm_pairs`` far pairs in a row that agree with each other (same offset
within the same bound) mean the device clock stepped or the device reset: a new segment
starts from them. A good pair in between discards them as outliers. Block arrivals
(:meth:`ClockModel.note_arrival`) catch the large faults at once: device time going
backwards is a reset, and data that would have arrived before it was sampled
(``host_ns`` earlier than the mapped device time by ``causality_tol_ns``) is a forward
step.

Pair noise: a device sees an edge only at its next sample, so a pair is uncertain by a
uniform sample period (std ``period / sqrt(12)``: 0.29 ms at 1 kHz, 1.9 ms for a 150 fps
camera) on top of the host's jitter; ``sample_period_s`` floors ``sigma`` there. The fit
averages this out only as the edge's phase against the sample grid varies: crystal
drift sweeps it (one sample per ``1 / drift`` seconds), and :func:`fall_pairs` adds each
pulse's fall, whose 5 ms width steps land at other phases of a camera's 6.7 ms frame.
Until one sweep is complete the quantisation error is correlated and looks like drift,
so in the first tens of seconds the true error can exceed ``uncertainty_ns``.

Before any pulse: the *coarse* model. Arrival host times are never earlier than the
sample they carry, so with the prior slope the least latency seen,
``c = min(z_arrival)``, is an upper-biased offset (biased by the smallest delivery
latency). It is flagged ``quality == "coarse"``; it is good enough to pair pulses (its
error is far below the 1 s pulse period), not to align data.

Uncertainty: ``uncertainty_ns`` is the standard error of the fitted line at the newest
pair, ``sqrt(Var(c) + (x_new - xbar)^2 Var(d))``; ``state["residual_ns"]`` is the scale
of single pairs about the line.

All state is bounded: a ring of pairs, a ring of arrivals, a short pending list and the
final fits of the last ``history_segments`` segments (so data tagged with an old
segment still maps with that segment's fit).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np

from sensors import sync_code

NS_PER_S = 1e9
MAD_TO_SIGMA = 1.4826


class _Fit(NamedTuple):
    """One segment's affine map (see the module docstring for the symbols)."""

    x0: float  # anchor device time, device units
    y0: int  # anchor host ns
    units_per_s: float
    c: float  # ns
    d: float  # ns per device second
    xbar: float  # s
    var_c: float  # ns^2
    var_d: float  # (ns/s)^2
    sigma: float  # ns, scale of single pairs about the line
    n: int  # pairs used (weight 1)
    quality: str  # "coarse" | "pulse"

    def seconds(self, device_t: np.ndarray) -> np.ndarray:
        return (np.asarray(device_t, dtype=np.float64) - self.x0) / self.units_per_s

    def rel_ns(self, device_t: np.ndarray) -> np.ndarray:
        """Host ns minus ``y0`` (float, to keep sub-ns for residuals)."""
        x = self.seconds(device_t)
        return NS_PER_S * x + self.c + self.d * (x - self.xbar)

    def host_ns(self, device_t: np.ndarray) -> np.ndarray:
        return self.y0 + np.rint(self.rel_ns(device_t)).astype(np.int64)

    def pred_var(self, device_t: float) -> float:
        x = float(self.seconds(np.float64(device_t)))
        return self.var_c + (x - self.xbar) ** 2 * self.var_d


@dataclass
class ClockCounters:
    """What the model did; never reset."""

    pairs: int = 0  # pairs offered
    accepted: int = 0
    rejected: int = 0  # gated, held-back-then-discarded, or failing the coarse gate
    segments: int = 0  # segments started after the first
    resets: int = 0  # device time went backwards (seen in arrivals)
    steps: int = 0  # forward steps seen in arrivals (causality) or far-pair runs


class ClockModel:
    """Online robust device-time -> host-ns map for one stream (maths: module docstring)."""

    def __init__(
        self,
        name: str,
        device_units_per_s: float,
        *,
        window_pairs: int = 600,
        reject_mads: float = 3.0,
        noise_floor_ns: float = 50_000.0,
        min_pairs_to_reject: int = 5,
        step_sigmas: float = 6.0,
        step_floor_ns: float = 3_000_000.0,
        confirm_pairs: int = 3,
        crystal_ppm: float = 200.0,
        wander_ppm: float = 1.0,
        coarse_arrivals: int = 64,
        coarse_gate_ns: float = 250_000_000.0,
        causality_tol_ns: float = 20_000_000.0,
        history_segments: int = 8,
        sample_period_s: float | None = None,
    ) -> None:
        if device_units_per_s <= 0:
            raise ValueError(f"clock {name}: device_units_per_s must be > 0")
        if window_pairs < 2 or confirm_pairs < 1:
            raise ValueError(f"clock {name}: window_pairs >= 2 and confirm_pairs >= 1")
        self.name = name
        self.units_per_s = float(device_units_per_s)
        self.window_pairs = int(window_pairs)
        self.reject_mads = float(reject_mads)
        # A pair can be no better than the stream's sampling: a uniform error over one
        # sample period has std period / sqrt(12).
        q_ns = 0.0 if sample_period_s is None else sample_period_s * NS_PER_S / np.sqrt(12.0)
        self.noise_floor_ns = max(float(noise_floor_ns), q_ns)
        self.min_pairs_to_reject = int(min_pairs_to_reject)
        self.step_sigmas = float(step_sigmas)
        self.step_floor_ns = float(step_floor_ns)
        self.confirm_pairs = int(confirm_pairs)
        self.causality_tol_ns = float(causality_tol_ns)
        self.coarse_gate_ns = float(coarse_gate_ns)
        self._wander = wander_ppm * 1e3  # ppm -> ns per s
        self._d0, self._var_d0 = 0.0, (crystal_ppm * 1e3) ** 2
        # Pair ring (current segment only).
        self._px = np.zeros(self.window_pairs, dtype=np.float64)  # device units
        self._py = np.zeros(self.window_pairs, dtype=np.int64)  # host ns
        self._pcode = np.full(self.window_pairs, -1, dtype=np.int64)
        self._pn = 0  # pairs ever put in this segment's ring
        self._w = np.zeros(0, dtype=bool)  # weights of the ring's pairs, ring order
        # Arrival ring for the coarse model (current segment only).
        self._az = np.zeros(int(coarse_arrivals), dtype=np.float64)
        self._an = 0
        self._last_device_t: float | None = None
        self._pending: list[tuple[float, int, int]] = []
        self._fit: _Fit | None = None
        self._segment = 0
        self._history: OrderedDict[int, _Fit] = OrderedDict()
        self._history_cap = int(history_segments)
        self.version = 0  # bumps whenever the map changes (consumers remap lazily)
        self.counters = ClockCounters()

    # ------------------------------------------------------------------ reading

    @property
    def quality(self) -> str:
        """``"none"`` (no data yet), ``"coarse"`` (arrivals only) or ``"pulse"``."""
        return "none" if self._fit is None else self._fit.quality

    @property
    def segment(self) -> int:
        """Id of the current segment; tag data with it to map it after a later reset."""
        return self._segment

    def to_host_ns(self, device_t: np.ndarray | float, segment: int | None = None) -> np.ndarray:
        """Host CLOCK_MONOTONIC ns for device times (vectorised, int64).

        ``segment`` picks an earlier segment's final fit; an unknown or evicted one uses
        the current fit. Raises ``RuntimeError`` before any arrival or pair.
        """
        fit = self._fit_for(segment)
        return fit.host_ns(np.asarray(device_t))

    def to_device_t(self, host_ns: np.ndarray | int, segment: int | None = None) -> np.ndarray:
        """Inverse map, device units (float64)."""
        fit = self._fit_for(segment)
        rel = np.asarray(host_ns, dtype=np.int64) - fit.y0
        # host_rel = (1e9 + d) x + c - d xbar  ->  solve for x.
        x = (rel.astype(np.float64) - fit.c + fit.d * fit.xbar) / (NS_PER_S + fit.d)
        return fit.x0 + x * fit.units_per_s

    @property
    def uncertainty_ns(self) -> float:
        """1-sigma error of the map at the newest pair (coarse: latency spread, >= 1 ms)."""
        fit = self._fit
        if fit is None:
            return float("inf")
        if fit.quality == "coarse":
            z = self._arrivals()
            return max(float(np.median(z) - z.min()), 1e6)
        return float(np.sqrt(fit.pred_var(self._newest_pair_device_t())))

    @property
    def drift_ppm(self) -> float:
        d = 0.0 if self._fit is None else self._fit.d
        return (NS_PER_S / (NS_PER_S + d) - 1.0) * 1e6

    @property
    def state(self) -> dict[str, Any]:
        """A JSON-ready snapshot for the recorder's /clock topic."""
        fit = self._fit
        s: dict[str, Any] = {
            "stream": self.name,
            "quality": self.quality,
            "segment": self._segment,
            "n_pairs": 0 if fit is None or fit.quality != "pulse" else int(fit.n),
            "drift_ppm": round(self.drift_ppm, 4),
            "uncertainty_ns": round(self.uncertainty_ns, 1) if fit else None,
            **{k: int(v) for k, v in vars(self.counters).items()},
        }
        if fit is not None:
            s.update(
                offset_ns=int(fit.host_ns(np.float64(0.0))),  # host ns at device_t == 0
                residual_ns=round(fit.sigma, 1),
                anchor_device_t=fit.x0,
                anchor_host_ns=int(fit.y0),
                c_ns=fit.c,
                d_ns_per_s=fit.d,
                xbar_s=fit.xbar,
                units_per_s=fit.units_per_s,
            )
        return s

    # ------------------------------------------------------------------ feeding

    def note_arrival(self, device_t: float, host_ns: int) -> str:
        """A block arrived: newest device time in it and a host time not before its sampling.

        Feeds the coarse model and catches resets (device time backwards) and forward
        steps (the block would predate its own sampling). Returns ``"ok"``, ``"reset"``
        or ``"step"``.
        """
        dev, host = float(device_t), int(host_ns)
        verdict = "ok"
        if self._fit is None:
            self._start_segment(dev, host, first=True)
        elif self._last_device_t is not None and dev < self._last_device_t:
            self.counters.resets += 1
            self._start_segment(dev, host)
            verdict = "reset"
        elif host < self._fit.host_ns(np.float64(dev)) - self.causality_tol_ns:
            self.counters.steps += 1
            self._start_segment(dev, host)
            verdict = "step"
        self._last_device_t = dev
        if self._fit is not None and self._fit.quality == "coarse":
            self._push_arrival(dev, host)
        return verdict

    def add_pair(self, device_t: float, host_ns: int, code: int | None = None) -> str:
        """One pulse seen at ``device_t`` and driven by the host at ``host_ns``.

        ``code`` (``k % 16``) is kept for diagnostics only: pairing is
        :func:`match_pulses`' job. Returns ``"accepted"``, ``"rejected"``, ``"pending"``
        (held back as a possible step) or ``"new_segment"``.
        """
        dev, host = float(device_t), int(host_ns)
        code_i = -1 if code is None else int(code)
        self.counters.pairs += 1
        fit = self._fit
        if fit is None:
            self._start_segment(dev, host, first=True)
            return self._accept(dev, host, code_i)
        r = host - fit.y0 - float(fit.rel_ns(np.float64(dev)))
        if fit.quality == "coarse":
            # The first pair of a segment: only a gross mismatch (a stale pulse) is refused.
            if abs(r) > self.coarse_gate_ns:
                self.counters.rejected += 1
                return "rejected"
            return self._accept(dev, host, code_i)
        bound = self._far_bound(fit, dev)
        if abs(r) <= bound:
            self.counters.rejected += len(self._pending)
            self._pending.clear()
            return self._accept(dev, host, code_i)
        self._pending.append((dev, host, code_i))
        if len(self._pending) < self.confirm_pairs:
            return "pending"
        px = np.array([p[0] for p in self._pending])
        py = np.array([p[1] for p in self._pending], dtype=np.int64)
        res = (py - fit.y0) - fit.rel_ns(px)
        if float(res.max() - res.min()) <= bound:
            pending = self._pending
            self.counters.steps += 1
            self._start_segment(pending[0][0], pending[0][1])
            for pdev, phost, pcode in pending:
                self._insert(pdev, phost, pcode)
            self.counters.accepted += len(pending)
            self._refit()
            return "new_segment"
        self._pending.pop(0)  # the oldest disagrees with the run: an outlier
        self.counters.rejected += 1
        return "pending"

    # ------------------------------------------------------------------ internals

    def _fit_for(self, segment: int | None) -> _Fit:
        if self._fit is None:
            raise RuntimeError(f"clock {self.name}: no arrival or pulse pair yet")
        if segment is None or segment == self._segment:
            return self._fit
        return self._history.get(segment, self._fit)

    def _far_bound(self, fit: _Fit, dev: float) -> float:
        spread = np.sqrt(fit.sigma**2 + fit.pred_var(dev))
        return max(self.step_sigmas * float(spread), self.step_floor_ns)

    def _start_segment(self, dev: float, host: int, *, first: bool = False) -> None:
        """Open a segment anchored at (dev, host); keep the old slope as the new prior."""
        if not first and self._fit is not None:
            if self._fit.quality == "pulse":
                self._d0 = self._fit.d
                self._var_d0 = self._fit.var_d + self._wander**2
            self._history[self._segment] = self._fit
            while len(self._history) > self._history_cap:
                self._history.popitem(last=False)
            self._segment += 1
            self.counters.segments += 1
        self._pn, self._an = 0, 0
        self._w = np.zeros(0, dtype=bool)
        self._pending = []
        self._fit = _Fit(dev, host, self.units_per_s, 0.0, self._d0, 0.0,
                         float(self.coarse_gate_ns) ** 2, self._var_d0,
                         self.noise_floor_ns, 0, "coarse")
        self.version += 1

    def _push_arrival(self, dev: float, host: int) -> None:
        fit = self._fit
        assert fit is not None
        z = (host - fit.y0) - NS_PER_S * float(fit.seconds(np.float64(dev)))
        z -= fit.d * float(fit.seconds(np.float64(dev)))
        self._az[self._an % self._az.size] = z
        self._an += 1
        c = float(self._arrivals().min())
        if c != fit.c:
            self._fit = fit._replace(c=c, xbar=0.0)
            self.version += 1

    def _arrivals(self) -> np.ndarray:
        return self._az[: min(self._an, self._az.size)]

    def _insert(self, dev: float, host: int, code: int) -> None:
        i = self._pn % self.window_pairs
        self._px[i], self._py[i], self._pcode[i] = dev, host, code
        self._pn += 1
        # A later arrival older than any pair's device time means the device reset.
        if self._last_device_t is None or dev > self._last_device_t:
            self._last_device_t = dev

    def _accept(self, dev: float, host: int, code: int) -> str:
        self._insert(dev, host, code)
        self.counters.accepted += 1
        self._refit()
        return "accepted"

    def _newest_pair_device_t(self) -> float:
        return float(self._px[(self._pn - 1) % self.window_pairs]) if self._pn else 0.0

    def _refit(self) -> None:
        fit = self._fit
        assert fit is not None
        n = min(self._pn, self.window_pairs)
        x = (self._px[:n] - fit.x0) / self.units_per_s
        z = (self._py[:n] - fit.y0).astype(np.float64) - NS_PER_S * x
        d_start = fit.d if fit.quality == "pulse" else self._d0
        c, d, xbar, var_c, var_d, sigma, w = _robust_map_fit(
            x, z, d_start, self._d0, self._var_d0,
            self.noise_floor_ns, self.reject_mads, self.min_pairs_to_reject,
        )
        self._w = w
        self._fit = _Fit(fit.x0, fit.y0, self.units_per_s, c, d, xbar, var_c, var_d,
                         sigma, int(w.sum()), "pulse")
        self.version += 1


def _robust_map_fit(
    x: np.ndarray,
    z: np.ndarray,
    d_start: float,
    d0: float,
    var_d0: float,
    floor: float,
    reject_mads: float,
    min_reject: int,
    iterations: int = 3,
) -> tuple[float, float, float, float, float, float, np.ndarray]:
    """MAP line fit with a slope prior and MAD-based 0/1 weights (module docstring)."""
    d = d_start
    c_line = float(np.median(z - d * x))  # robust start: median offset at the prior slope
    resid = z - (c_line + d * x)
    w = np.ones(x.size, dtype=bool)
    c, xbar, var_c, var_d, sigma = 0.0, 0.0, 0.0, var_d0, floor
    for _ in range(iterations):
        sigma = max(MAD_TO_SIGMA * float(np.median(np.abs(resid - np.median(resid)))), floor)
        if x.size >= min_reject:
            w = np.abs(resid - np.median(resid)) <= reject_mads * sigma
        if not w.any():
            w = np.ones(x.size, dtype=bool)
        xw, zw = x[w], z[w]
        xbar, zbar = float(xw.mean()), float(zw.mean())
        sxx = float(np.sum((xw - xbar) ** 2))
        sxz = float(np.sum((xw - xbar) * (zw - zbar)))
        var_d = 1.0 / (sxx / sigma**2 + 1.0 / var_d0)
        d = (sxz / sigma**2 + d0 / var_d0) * var_d
        c = zbar
        resid = z - (c + d * (x - xbar))
    acc = resid[w]
    dof = max(acc.size - 2, 1)
    sigma = max(float(np.sqrt(np.sum(acc**2) / dof)), floor) if acc.size > 2 else sigma
    var_c = sigma**2 / max(int(w.sum()), 1)
    var_d = 1.0 / (float(np.sum((x[w] - xbar) ** 2)) / sigma**2 + 1.0 / var_d0)
    return c, d, xbar, var_c, var_d, sigma, w


# ---------------------------------------------------------------------- pairing


class HostMap(Protocol):
    def to_host_ns(self, device_t: np.ndarray) -> np.ndarray: ...


class PulsePairs(NamedTuple):
    """Matched pulse edges: device time, host ns, pulse number ``k``, and where each came
    from in the arrays given to :func:`match_pulses` (to fetch the matching falls)."""

    device_t: np.ndarray  # float64 device units
    host_ns: np.ndarray  # int64
    k: np.ndarray  # int64
    device_index: np.ndarray  # int64, into device_rises
    host_index: np.ndarray  # int64, into host_k / host_rise_ns

    def __len__(self) -> int:
        return int(self.k.size)


def match_pulses(
    device_rises: np.ndarray,
    device_codes: np.ndarray,
    host_k: np.ndarray,
    host_rise_ns: np.ndarray,
    coarse_model: HostMap,
    *,
    code_slack: int = 0,
    max_error_ns: float | None = None,
) -> PulsePairs:
    """Pair a stream's decoded pulses with the host's emitted ones.

    Each device rise is mapped to host time with ``coarse_model`` (any object with
    ``to_host_ns``: a :class:`ClockModel` of any quality) and paired with the nearest
    emitted pulse whose ``k % 16`` agrees with the decoded code (within ``code_slack``;
    code -1 means unknown and agrees with all). The prediction must be within
    ``max_error_ns``: by default 0.45 of the distance to the next pulse that could
    carry the same code, i.e. 7.2 s for exact codes and 0.45 s for unknown or slack
    codes (a camera whose frame period exceeds the 5 ms code step). So the code resolves
    prediction errors of several pulses, and the prediction resolves any gap length,
    however many codes went round: no pair is made from a code alone.

    Device rises may not be mapped yet (model with no data): no pairs then.
    """
    rises = np.asarray(device_rises, dtype=np.float64).ravel()
    codes = np.asarray(device_codes, dtype=np.int64).ravel()
    hk = np.asarray(host_k, dtype=np.int64).ravel()
    hr = np.asarray(host_rise_ns, dtype=np.int64).ravel()
    none = np.zeros(0, np.int64)
    empty = PulsePairs(np.zeros(0), none, none, none, none)
    if rises.size == 0 or hk.size == 0:
        return empty
    try:
        pred = np.asarray(coarse_model.to_host_ns(rises), dtype=np.int64)
    except RuntimeError:
        return empty
    m = sync_code.CODE_MODULUS
    exact = (codes >= 0) & (code_slack == 0)
    default_limit = np.where(exact, 0.45 * m, 0.45) * sync_code.PERIOD_NS
    limit = default_limit if max_error_ns is None else np.minimum(default_limit, max_error_ns)
    code_ok = (codes[:, None] < 0) | (np.abs(codes[:, None] - (hk[None, :] % m)) <= code_slack)
    dist = np.abs((pred[:, None] - hr[None, :]).astype(np.float64))
    dist = np.where(code_ok, dist, np.inf)
    j = np.argmin(dist, axis=1)
    best = dist[np.arange(rises.size), j]
    ok = best <= limit
    # One device pulse per host pulse: where two claim one, the nearer wins.
    order = np.lexsort((best, j))
    first = np.ones(order.size, dtype=bool)
    first[1:] = j[order][1:] != j[order][:-1]
    keep = np.zeros(rises.size, dtype=bool)
    keep[order[first]] = True
    ok &= keep
    i = np.flatnonzero(ok)
    return PulsePairs(rises[i], hr[j[i]], hk[j[i]], i, j[i])


def fall_pairs(rise_pairs: PulsePairs, device_falls: np.ndarray, host_fall_ns: np.ndarray,
               device_units_per_s: float, tolerance_s: float) -> PulsePairs:
    """The falling edges of already matched pulses, as more pairs.

    ``device_falls`` is aligned with the ``device_rises`` given to :func:`match_pulses`
    (NaN where unknown), ``host_fall_ns`` with its host arrays. A fall is kept when the
    width the device saw agrees with the width the host drove within ``tolerance_s``
    (one sample period plus the host jitter): a sample gap next to an edge fails that.
    Falls come ``width_ns(k)`` after rises, 5 ms steps that are not a multiple of a slow
    stream's sample period: a camera samples the falls at phases its rises never see,
    which averages its frame quantisation out of the fit.
    """
    idx_d, idx_h = rise_pairs.device_index, rise_pairs.host_index
    dev = np.asarray(device_falls, dtype=np.float64)[idx_d]
    host = np.asarray(host_fall_ns, dtype=np.int64)[idx_h]
    dev_width_s = (dev - rise_pairs.device_t) / device_units_per_s
    host_width_s = (host - rise_pairs.host_ns) / NS_PER_S
    with np.errstate(invalid="ignore"):
        ok = np.abs(dev_width_s - host_width_s) <= tolerance_s
    return PulsePairs(dev[ok], host[ok], rise_pairs.k[ok], idx_d[ok], idx_h[ok])
