"""The trigger line: the host's sync pulse train, its decoder, and the marker input.

- :class:`SyncPulser` drives the sync output: a rising edge every ``period_ns`` from a
  fixed origin, pulse ``k`` high for ``sync_code.width_ns(k)``. It records what it
  really emitted (host times of both edges), which is what the clock model fits against.
- :func:`decode_trigger_pulses` / :class:`PulseDecoder` find those pulses in a device's
  sampled trigger column and return the device time of each rise, its width and the
  code ``k % 16``; :func:`resolve_k` turns a code plus a coarse estimate into ``k``.
- :class:`MarkerReader` turns the marker strobe + 8 data lines into
  :class:`sensors.blocks.Marker` s (or, on a single line, pulse counts or bare events).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from sensors import sync_code
from sensors.blocks import Edge, Marker, monotonic_ns
from sensors.seams import EdgeInput, InputBus, OutputLine

log = logging.getLogger(__name__)

# A pulse whose emitted width misses its code by more than this is counted as bad:
# half the decoder's 2 ms tolerance, leaving the rest for one 1 kHz sample.
WIDTH_TOLERANCE_NS = 1_000_000


# --------------------------------------------------------------------------- pulser


class Pulse(NamedTuple):
    """One emitted sync pulse: its number and the host times its edges happened."""

    k: int
    rise_t_ns: int
    fall_t_ns: int


@dataclass
class PulserCounters:
    """Health of the sync output; never reset."""

    pulses: int = 0  # pulses emitted
    skipped: int = 0  # slots given up because we woke too late to fit the pulse in
    late_edges: int = 0  # rising edges later than late_threshold_ns behind schedule
    last_late_ns: int = 0  # lateness of the latest rising edge
    max_late_ns: int = 0
    bad_widths: int = 0  # widths off their code by more than WIDTH_TOLERANCE_NS
    errors: int = 0  # output line failures (the train goes on at the next slot)


class SyncPulser:
    """Emits the sync pulse train on ``out`` from its own thread.

    Rising edge ``k`` is scheduled at ``origin_ns + k * period_ns``, never relative to
    the previous wake-up, so scheduling errors do not accumulate. The fall is scheduled
    from the actual rise so the width (which carries the code) stays right even when the
    rise was late. A slot we wake up too late for is skipped and counted; its number is
    not reused, so ``k`` always means "slot k".

    Widths are only as good as the thread's wake-up latency: on a loaded CPU the fall can
    come milliseconds late (``counters.bad_widths``). ``rt_priority`` (1..99) puts the
    pulser thread alone under SCHED_FIFO, which needs root or CAP_SYS_NICE; without it
    the pulser runs at normal priority and says so in the log.
    """

    def __init__(
        self,
        out: OutputLine,
        period_ns: int = sync_code.PERIOD_NS,
        *,
        capacity: int = 4096,
        late_threshold_ns: int = 1_000_000,
        start_delay_ns: int = 10_000_000,
        rt_priority: int | None = None,
    ) -> None:
        widest = max(sync_code.width_ns(k) for k in range(sync_code.CODE_MODULUS))
        if period_ns <= widest + period_ns // 10:
            raise ValueError(f"period {period_ns} ns leaves no low time after a {widest} ns pulse")
        self._out = out
        self.period_ns = int(period_ns)
        self._late_threshold_ns = late_threshold_ns
        self._start_delay_ns = start_delay_ns
        self._rt_priority = rt_priority
        self._ring: collections.deque[Pulse] = collections.deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.origin_ns: int | None = None
        self.counters = PulserCounters()
        self.last_error: BaseException | None = None

    def start(self, origin_ns: int | None = None) -> None:
        """Start the train; pulse 0 rises at ``origin_ns`` (default: shortly from now)."""
        if self._thread is not None:
            raise RuntimeError("SyncPulser already started")
        self.origin_ns = monotonic_ns() + self._start_delay_ns if origin_ns is None else origin_ns
        self._thread = threading.Thread(target=self._run, name="sync-pulser", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the pulse in progress (at most one pulse width) and leave the line low."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def pulses_since(self, k: int) -> list[Pulse]:
        """Recorded pulses numbered ``k`` or later (those still in the ring)."""
        with self._lock:
            return [p for p in self._ring if p.k >= k]

    def recent(self, n: int | None = None) -> list[Pulse]:
        """The last ``n`` recorded pulses (all in the ring when ``n`` is None), oldest first."""
        with self._lock:
            pulses = list(self._ring)
        return pulses if n is None else pulses[-n:]

    def _sleep_until(self, t_ns: int, interruptible: bool = True) -> bool:
        """Sleep to ``t_ns``; False when stop() came first."""
        while True:
            remaining = t_ns - monotonic_ns()
            if remaining <= 0:
                return True
            if interruptible:
                if self._stop.wait(remaining / 1e9):
                    return False
            else:
                time.sleep(remaining / 1e9)

    def _raise_priority(self) -> None:
        try:  # pid 0 is the calling thread on Linux, so only the pulser is affected
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self._rt_priority))
        except (OSError, AttributeError) as e:
            self.last_error = e
            log.warning("sync pulser stays at normal priority: %s", e)

    def _run(self) -> None:
        assert self.origin_ns is not None
        if self._rt_priority:
            self._raise_priority()
        origin, period = self.origin_ns, self.period_ns
        k = 0
        while not self._stop.is_set():
            target = origin + k * period
            width = sync_code.width_ns(k)
            late = monotonic_ns() - target
            if late > period - width - period // 10:
                # Starved past the point where this pulse fits: move on to the current slot
                # (checked again on the next turn).
                k_now = max((monotonic_ns() - origin) // period, k + 1)
                self.counters.skipped += k_now - k
                k = k_now
                continue
            if not self._sleep_until(target):
                break
            try:
                self._emit(k, target, width)
            except Exception as e:  # a dead thread would silently end the sync train
                self.counters.errors += 1
                self.last_error = e
                log.warning("sync pulse %d failed: %s", k, e)
                self._try_low()
            k += 1
        self._try_low()

    def _emit(self, k: int, target: int, width: int) -> None:
        rise = self._out.set(1)
        self._sleep_until(rise + width, interruptible=False)
        fall = self._out.set(0)
        late = rise - target
        c = self.counters
        c.last_late_ns = late
        c.max_late_ns = max(c.max_late_ns, late)
        if late > self._late_threshold_ns:
            c.late_edges += 1
        if abs((fall - rise) - width) > WIDTH_TOLERANCE_NS:
            c.bad_widths += 1
        with self._lock:
            self._ring.append(Pulse(k, rise, fall))
        c.pulses += 1

    def _try_low(self) -> None:
        try:
            self._out.set(0)
        except Exception as e:
            self.last_error = e


# --------------------------------------------------------------------------- decoding


class DecodedPulses(NamedTuple):
    """Complete pulses found in a trigger column.

    ``rise_device_t`` is the device time of the first sample seen high (the true edge lies
    between it and the sample before); ``code`` is ``k % 16`` or -1 where the width fits no
    code or a sample gap next to either edge makes the width unreliable.
    """

    rise_device_t: np.ndarray  # int64, device units
    width_s: np.ndarray  # float64
    code: np.ndarray  # int64

    @classmethod
    def empty(cls) -> DecodedPulses:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.int64))


class PulseDecoder:
    """Streaming pulse decoder: feed consecutive blocks of one stream's trigger bit.

    Keeps the last sample and any pulse still high at the end of a block, so a pulse
    split across blocks is reported once, in the block where it ends. A pulse already
    high in the very first sample is ignored (its rise was not seen).
    """

    def __init__(self, device_units_per_s: float, fs_hz: float | None = None) -> None:
        self._units = float(device_units_per_s)
        # Nominal sample spacing in device units; estimated from the data when not given.
        self._dt = self._units / fs_hz if fs_hz else None
        self._fixed_dt = fs_hz is not None
        self._last_bit: int | None = None
        self._last_t = 0
        self._pending: tuple[int, bool] | None = None  # (rise device time, rise unreliable)

    def feed(self, trigger_bit: np.ndarray, device_t: np.ndarray) -> DecodedPulses:
        bits = (np.asarray(trigger_bit).astype(np.int64) & 1).ravel()
        t = np.asarray(device_t, dtype=np.int64).ravel()
        if bits.shape != t.shape:
            raise ValueError(f"trigger has {bits.size} samples, device_t {t.size}")
        if bits.size == 0:
            return DecodedPulses.empty()
        if not self._fixed_dt and t.size >= 3:
            self._dt = float(np.median(np.diff(t)))
        if self._last_bit is not None:
            bits = np.concatenate(([self._last_bit], bits))
            t = np.concatenate(([self._last_t], t))
        self._last_bit, self._last_t = int(bits[-1]), int(t[-1])

        d = np.diff(bits)
        at = np.flatnonzero(d) + 1  # first sample after each edge
        rising = d[at - 1] > 0
        edge_t = t[at]
        # A dropped-sample gap next to an edge moves it by more than the code step.
        limit = 1.5 * self._dt if self._dt else np.inf
        unsure = (t[at] - t[at - 1]) > limit

        rise_t: list[np.ndarray] = []
        fall_t: list[np.ndarray] = []
        bad: list[np.ndarray] = []
        start = 0
        if at.size and not rising[0]:
            if self._pending is not None:  # the pulse the previous block left high
                p_t, p_unsure = self._pending
                rise_t.append(np.array([p_t]))
                fall_t.append(edge_t[:1])
                bad.append(np.array([p_unsure or bool(unsure[0])]))
            self._pending = None
            start = 1
        # From here edges alternate rise, fall, rise, ...
        r, f = np.arange(start, at.size, 2), np.arange(start + 1, at.size, 2)
        n = f.size
        rise_t.append(edge_t[r[:n]])
        fall_t.append(edge_t[f])
        bad.append(unsure[r[:n]] | unsure[f])
        if r.size > n:
            self._pending = (int(edge_t[r[-1]]), bool(unsure[r[-1]]))

        rises = np.concatenate(rise_t).astype(np.int64)
        width_s = (np.concatenate(fall_t) - rises) / self._units
        code = sync_code.decode_width(width_s * 1e9)
        code = np.where(np.concatenate(bad).astype(bool), -1, code).astype(np.int64)
        return DecodedPulses(rises, width_s.astype(np.float64), code)


def decode_trigger_pulses(
    trigger_bit: np.ndarray,
    device_t: np.ndarray,
    device_units_per_s: float,
    fs_hz: float | None = None,
) -> DecodedPulses:
    """All complete sync pulses in one stretch of a stream (see :class:`PulseDecoder`).

    ``trigger_bit`` is the sync bit per sample (bit 0 is used); ``device_t`` the device
    time per sample in units of ``1 / device_units_per_s`` seconds (EEG: sample index and
    ``fs``; hub: MCU microseconds and 1e6).
    """
    return PulseDecoder(device_units_per_s, fs_hz).feed(trigger_bit, device_t)


def resolve_k(code: np.ndarray | int, k_estimate: np.ndarray | float) -> np.ndarray:
    """The pulse number ``k`` with ``k % 16 == code`` nearest a coarse estimate (from the
    clock model); -1 where the code is -1. Right while the estimate is within 8 pulses."""
    c = np.asarray(code, dtype=np.int64)
    k0 = np.rint(np.asarray(k_estimate, dtype=np.float64)).astype(np.int64)
    m = sync_code.CODE_MODULUS
    delta = (c - k0) % m
    delta = np.where(delta >= m // 2, delta - m, delta)
    return np.where(c >= 0, k0 + delta, -1).astype(np.int64)


# --------------------------------------------------------------------------- markers

MARKER_MODES = ("bus", "count", "event")


@dataclass
class MarkerCounters:
    """Health of the marker input; never reset."""

    markers: int = 0  # markers handed out
    bad_codes: int = 0  # codes outside code_range (dropped, logged)
    last_bad_code: int = -1
    overruns: int = 0  # strobes whose code was replaced before we could read it (dropped)
    lost_edges: int = 0  # strobe edges the input itself reported lost (Edge.seq gaps)


class MarkerReader:
    """Markers from a strobe line and, in bus mode, the 8 data lines.

    Modes:

    - ``"bus"`` (the study's parallel port): on each strobe rising edge the data lines are
      read; ``Marker(code, t_ns=strobe edge time)``. The code is read when the edge is
      processed, so ``poll`` must run at least once between markers (they are seconds
      apart); two strobes in one batch leave the first one's code unknown: it is dropped
      and counted in ``overruns``.
    - ``"count"`` (one line): the code is the number of strobe pulses in a burst; a burst
      ends after ``burst_gap_s`` without a rising edge; ``t_ns`` is its first edge.
    - ``"event"`` (one line): every rising edge is ``Marker(1, t_ns)``.

    Codes outside ``code_range`` (inclusive) are counted, logged and dropped, never raised.
    Use :meth:`single_line` for the one-line modes.
    """

    def __init__(
        self,
        strobe: EdgeInput,
        data: InputBus | None,
        code_range: tuple[int, int] = (100, 255),
        *,
        mode: str = "bus",
        burst_gap_s: float = 0.05,
    ) -> None:
        if mode not in MARKER_MODES:
            raise ValueError(f"marker mode {mode!r}: expected one of {MARKER_MODES}")
        if mode == "bus" and data is None:
            raise ValueError("marker mode 'bus' needs the data lines")
        self._strobe = strobe
        self._data = data
        self._lo, self._hi = code_range
        self._mode = mode
        self._gap_ns = int(burst_gap_s * 1e9)
        self._last_seq = 0
        self._burst: list[int] = []  # rising-edge times of the burst being counted
        self.counters = MarkerCounters()

    @classmethod
    def single_line(
        cls,
        strobe: EdgeInput,
        mode: str = "event",
        code_range: tuple[int, int] = (1, 255),
        burst_gap_s: float = 0.05,
    ) -> MarkerReader:
        """A marker input on one line: ``mode`` "event" (code 1) or "count" (pulses)."""
        if mode == "bus":
            raise ValueError("single_line: mode must be 'event' or 'count'")
        return cls(strobe, None, code_range, mode=mode, burst_gap_s=burst_gap_s)

    def poll(self, timeout_s: float) -> list[Marker]:
        """Markers completed since the last call, waiting up to ``timeout_s`` for a strobe."""
        if self._burst:  # wake in time to close the open burst
            due = (self._burst[-1] + self._gap_ns - monotonic_ns()) / 1e9
            timeout_s = max(min(timeout_s, due), 0.0)
        rises = [e for e in self._strobe.read_edges(timeout_s) if self._track(e)]
        if self._mode == "bus":
            return self._bus(rises)
        if self._mode == "event":
            return [m for e in rises if (m := self._accept(1, e.t_ns))]
        return self._count(rises)

    def _track(self, e: Edge) -> bool:
        """Count seq gaps; keep rising edges."""
        if e.seq and self._last_seq and e.seq > self._last_seq + 1:
            self.counters.lost_edges += e.seq - self._last_seq - 1
        if e.seq:
            self._last_seq = e.seq
        return e.rising

    def _bus(self, rises: list[Edge]) -> list[Marker]:
        if not rises:
            return []
        assert self._data is not None
        code = self._data.read()
        if len(rises) > 1:
            self.counters.overruns += len(rises) - 1
            log.warning("marker: %d strobes overran before their codes were read",
                        len(rises) - 1)
        m = self._accept(code, rises[-1].t_ns)
        return [m] if m else []

    def _count(self, rises: list[Edge]) -> list[Marker]:
        out = []
        for e in rises:
            if self._burst and e.t_ns - self._burst[-1] > self._gap_ns:
                out.extend(self._close_burst())
            self._burst.append(e.t_ns)
        if self._burst and monotonic_ns() - self._burst[-1] > self._gap_ns:
            out.extend(self._close_burst())
        return out

    def _close_burst(self) -> list[Marker]:
        m = self._accept(len(self._burst), self._burst[0])
        self._burst = []
        return [m] if m else []

    def _accept(self, code: int, t_ns: int) -> Marker | None:
        if not (self._lo <= code <= self._hi):
            self.counters.bad_codes += 1
            self.counters.last_bad_code = code
            log.warning("marker code %d at %d ns outside %d..%d: dropped",
                        code, t_ns, self._lo, self._hi)
            return None
        self.counters.markers += 1
        return Marker(code=code, t_ns=t_ns)
