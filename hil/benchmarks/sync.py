"""How well does one clock align every stream? Drifting crystals, host jitter, ground truth.

    mmme-hil bench sync [--minutes M] [--drift-ppm P] [--jitter-ms J] [--seed S]
                        [--jitter-model tail|uniform] [--read-delay-s D] [--faults]
                        [--eeg-link bridge|spi] [--json]

Offline and faster than real time. The host's sync pulse train (``sensors.sync_code``:
a rise every 1.000 s, pulse k high for ``width_ns(k)``) is driven onto a
``hil.sim.wire.Net``; three devices sample it at their own instants, each on its own
``hil.sim.crystal.Crystal`` with a random rate error in +-P ppm:

- EEG: 1000 Hz; device time is the sample index; the sync pin in the status bits.
- hub: 1000 Hz; device time is the MCU microsecond counter; sync in the frame flags.
- camera: 150 fps; device time is the sensor timestamp (CLOCK_MONOTONIC already, with
  its own offset of 1..8 ms and 100 us rms jitter); sync sampled by the strobe input at
  exposure start (``Frame.trigger``).

Host jitter, as modelled. The host records each rise with ``OutputLine.set``'s return
value. ``actual`` is when the line changed, ``recorded`` what the host believes:

- the rise itself wakes late by an exponential 0.15 ms (clipped at 5 ms): harmless, it
  is not an error, the host records it;
- ``--jitter-model tail`` (default, a userspace gpiod write on a loaded non-RT kernel):
  ``recorded - actual`` = 5..40 us of ioctl return plus, in 15% of pulses, a preemption
  of up to J ms between the write and reading the clock. One-sided, so it biases;
- ``--jitter-model uniform``: ``recorded - actual`` uniform in +-J on every pulse (a
  symmetric worst case);
- the fall is scheduled from the recorded rise (as ``SyncPulser`` does), so the width
  that carries the code is off by the same error.

Delivery: 100 ms blocks arrive 0.05..3 ms (EEG, DRDY stamped), 2..30 ms (hub, serial) and
5..15 ms (camera) after their newest sample; these feed the coarse model. With
``--eeg-link bridge`` (the default, ``sensors.eeg_bridge``) the EEG comes in the bridge's
bursts instead: one block per drain, every 10..50 ms (uniform per drain), stamped
0.05..2 ms after its newest sample (the driver maps the bridge's microsecond counter to
the end of the SPI read); device time is the sample index either way, and a bridge
reset (``--faults``) restarts it as the chip reset does. ``--eeg-link spi`` is the direct
reader above.

Pipeline per block and stream, as the rig runs it: ``ClockModel.note_arrival``,
``sensors.trigger.PulseDecoder.feed`` on the sync bit, rise moved back half a sample
(the decoder reports the first high sample; the edge lies uniformly in the interval
before it), ``match_pulses`` against the host's last 64 pulses, ``ClockModel.add_pair``.

Scoring (ground truth from the simulation):

- pulse error: the device time at which the line really rose, mapped by the model as it
  stood ``--read-delay-s`` (default 2 s: any windowed consumer reads at least this late)
  after the rise, minus the true rise host time. ``online`` is the same with the model
  as it stood when the block holding the rise arrived (before that pulse's own pair).
- marker error: the first sample (frame) that saw each marker strobe, mapped the same
  way, minus the true host time at which it was sampled (clock error between pulses;
  sampling quantisation excluded, it is not the clock's).
- the first ``--warmup-s`` (10 s) of pulses are the model's warm-up and are not scored
  (their max is shown); with ``--faults``, neither are 5 s after each fault.

Targets: p99 pulse error < 0.5 ms for the 1 kHz streams, < 3.3 ms (half a frame) for
the camera. The last line with ``--json`` is one object
``{"eeg": {"p50_ms": x, "p99_ms": y, ...}, "hub": {...}, "camera": {...}}``.

``--faults``: EEG reset (counter restarts after 0.5 s) at 40% of the session; hub clock
step of +0.25 s at 60% and 3 s of lost frames (a counter gap, missing pulses) at 25%;
camera 0.5% dropped frames and 20 s with the strobe unplugged (a gap > 16 pulses) at 70%.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field

import numpy as np

from edge.clock.model import ClockModel, fall_pairs, match_pulses
from hil.sim.crystal import Crystal
from hil.sim.wire import MARKER_STROBE, SYNC, Net
from sensors import sync_code
from sensors.trigger import PulseDecoder

H0_NS = 50_000_000_000_000  # an arbitrary CLOCK_MONOTONIC origin (about 14 h after boot)
BLOCK_NS = 100_000_000
FS_HZ = 1000.0
FPS = 150.0
HOST_LOG = 64  # emitted pulses the host keeps for pairing
SETTLE_NS = 5_000_000_000
FALL_TOLERANCE_S = 3e-3  # host jitter allowed on a pulse width, on top of one sample
TARGET_MS = {"eeg": 0.5, "hub": 0.5, "camera": 0.5e3 / FPS}


# ---------------------------------------------------------------------- devices


@dataclass
class Piece:
    """A stretch of a device's life: from ``host_from_ns`` its clock reads ``dev0`` units."""

    host_from_ns: int
    dev0: float
    alive: bool = True


@dataclass
class Device:
    """One simulated stream: its sample instants, what it saw, and the truth to score by."""

    name: str
    units_per_s: float
    step_units: float  # nominal sample spacing in device units
    crystal_ppm: float
    pieces: list[Piece]
    device_t: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    host_true_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    sync: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    cam_offset_ns: float = 0.0  # camera only: sensor ts = host + offset + jitter

    def crystal(self, p: Piece) -> Crystal:
        return Crystal(self.crystal_ppm, p.host_from_ns, p.dev0 / self.units_per_s)

    def true_device_t(self, host_ns: np.ndarray) -> np.ndarray:
        """Device time at host instants (NaN while the device is down)."""
        h = np.asarray(host_ns, dtype=np.int64)
        if self.name == "camera":
            return h.astype(np.float64) + self.cam_offset_ns
        starts = np.array([p.host_from_ns for p in self.pieces])
        which = np.searchsorted(starts, h, side="right") - 1
        out = np.full(h.shape, np.nan)
        for i, p in enumerate(self.pieces):
            sel = (which == i) & p.alive
            out[sel] = self.crystal(p).device_s(h[sel]) * self.units_per_s
        return out


def _sample_grid(dev: Device, end_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Device times on the device's own sample grid and their true host instants."""
    ts, hs = [], []
    for i, p in enumerate(dev.pieces):
        if not p.alive:
            continue
        h_to = dev.pieces[i + 1].host_from_ns if i + 1 < len(dev.pieces) else end_ns
        c = dev.crystal(p)
        d_to = float(c.device_s(h_to)) * dev.units_per_s
        first = np.ceil(p.dev0 / dev.step_units) * dev.step_units
        t = np.arange(first, d_to, dev.step_units)
        ts.append(t)
        hs.append(c.host_ns(t / dev.units_per_s))
    return np.concatenate(ts), np.concatenate(hs).astype(np.int64)


# ---------------------------------------------------------------------- host


@dataclass
class HostPulses:
    k: np.ndarray
    actual_rise_ns: np.ndarray  # when the line changed (ground truth)
    recorded_rise_ns: np.ndarray  # what OutputLine.set returned
    fall_ns: np.ndarray  # when the line fell
    recorded_fall_ns: np.ndarray


def _host_pulses(n: int, jitter_ms: float, model: str, rng: np.random.Generator) -> HostPulses:
    k = np.arange(n, dtype=np.int64)
    j_ns = jitter_ms * 1e6
    wake = np.minimum(rng.exponential(150e3, n), 5e6)
    actual = H0_NS + (k + 1) * sync_code.PERIOD_NS + wake.astype(np.int64)

    def record_error() -> np.ndarray:
        if model == "uniform":
            err = rng.uniform(-j_ns, j_ns, n)
        else:
            err = rng.uniform(5e3, 40e3, n) + (rng.random(n) < 0.15) * rng.uniform(0, j_ns, n)
        return np.rint(err).astype(np.int64)

    recorded = actual + record_error()
    widths = np.array([sync_code.width_ns(int(i)) for i in range(sync_code.CODE_MODULUS)])
    fall_wake = np.minimum(rng.exponential(150e3, n), 5e6).astype(np.int64)
    fall = recorded + widths[k % sync_code.CODE_MODULUS] + fall_wake
    return HostPulses(k, actual, recorded, fall, fall + record_error())


def _net(name: str, rise_ns: np.ndarray, fall_ns: np.ndarray) -> Net:
    net = Net(name, capacity=2 * rise_ns.size + 16)
    for r, f in zip(rise_ns.tolist(), fall_ns.tolist(), strict=True):
        net.drive(r, 1)
        net.drive(f, 0)
    return net


# ---------------------------------------------------------------------- session


@dataclass
class Scores:
    pulse_err_ns: list[float] = field(default_factory=list)
    online_err_ns: list[float] = field(default_factory=list)
    marker_err_ns: list[float] = field(default_factory=list)
    warmup_err_ns: list[float] = field(default_factory=list)


def _devices(duration_ns: int, ppm: float, faults: bool, rng: np.random.Generator
             ) -> dict[str, Device]:
    def draw() -> float:
        return float(rng.uniform(-ppm, ppm))

    start = H0_NS + 300_000_000  # devices start streaming before the first pulse
    eeg = Device("eeg", FS_HZ, 1.0, draw(), [Piece(start, 0.0)])
    mcu0 = float(rng.integers(1_000, 4_000_000) * 1000)
    hub = Device("hub", 1e6, 1e6 / FS_HZ, draw(), [Piece(start + 137_000, mcu0)])
    cam = Device("camera", 1e9, 1e9 / FPS, draw(), [Piece(start + 2_000_000, 0.0)])
    cam.cam_offset_ns = float(rng.uniform(1e6, 8e6))
    if faults:
        t_reset = H0_NS + int(0.4 * duration_ns)
        eeg.pieces += [Piece(t_reset, 0.0, alive=False), Piece(t_reset + 500_000_000, 0.0)]
        t_step = H0_NS + int(0.6 * duration_ns)
        hub_dev_at_step = float(hub.true_device_t(np.array([t_step]))[0])
        hub.pieces.append(Piece(t_step, hub_dev_at_step + 250_000.0))
    return {"eeg": eeg, "hub": hub, "camera": cam}


def _fault_times(duration_ns: int) -> list[int]:
    return [H0_NS + int(f * duration_ns) for f in (0.25, 0.4, 0.6, 0.7)]


def _simulate_samples(devs: dict[str, Device], sync: Net, end_ns: int, faults: bool,
                      duration_ns: int, rng: np.random.Generator) -> None:
    for dev in devs.values():
        t, h = _sample_grid(dev, end_ns)
        keep = np.ones(t.size, dtype=bool)
        if faults and dev.name == "hub":
            lo = H0_NS + int(0.25 * duration_ns)
            keep &= (h < lo) | (h >= lo + 3_000_000_000)
        if dev.name == "camera":
            if faults:
                keep &= rng.random(t.size) >= 0.005
            jitter = rng.normal(0.0, 100e3, h.size)
            t = h + dev.cam_offset_ns + jitter  # sensor timestamps, not the grid
        dev.device_t = np.rint(t[keep]).astype(np.int64)
        dev.host_true_ns = h[keep]
        dev.sync = sync.value_at(dev.host_true_ns)
        if faults and dev.name == "camera":
            lo = H0_NS + int(0.7 * duration_ns)
            dev.sync[(dev.host_true_ns >= lo) & (dev.host_true_ns < lo + 20_000_000_000)] = 0


def _marker_samples(dev: Device, strobe: Net, marker_ns: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per marker: index of the first sample that saw it (or -1) and that sample's times."""
    if dev.name == "camera":  # no strobe on the camera: the first frame exposed after it
        idx = np.searchsorted(dev.host_true_ns, marker_ns, side="left")
    else:
        seen = strobe.value_at(dev.host_true_ns)
        rises = np.flatnonzero(np.diff(seen) > 0) + 1
        pos = np.searchsorted(dev.host_true_ns[rises], marker_ns, side="left")
        idx = np.where(pos < rises.size, rises[np.clip(pos, 0, max(rises.size - 1, 0))], -1)
    ok = (idx >= 0) & (idx < dev.host_true_ns.size)
    ok[ok] &= dev.host_true_ns[idx[ok]] - marker_ns[ok] < 50_000_000  # seen promptly
    idx = np.where(ok, idx, -1)
    safe = np.clip(idx, 0, None)
    return idx, dev.device_t[safe].astype(np.float64), dev.host_true_ns[safe]


def _model_for(dev: Device) -> ClockModel:
    return ClockModel(dev.name, dev.units_per_s, sample_period_s=dev.step_units / dev.units_per_s)


def run(minutes: float, drift_ppm: float, jitter_ms: float, *, seed: int = 1,
        jitter_model: str = "tail", read_delay_s: float = 2.0, warmup_s: float = 10.0,
        faults: bool = False, eeg_link: str = "bridge") -> dict:
    """Simulate a session and score it; returns per-stream figures and model states."""
    rng = np.random.default_rng(seed)
    duration_ns = int(minutes * 60e9)
    n_pulses = int(duration_ns // sync_code.PERIOD_NS) - 1
    end_ns = H0_NS + duration_ns
    host = _host_pulses(n_pulses, jitter_ms, jitter_model, rng)
    sync = _net(SYNC, host.actual_rise_ns, host.fall_ns)
    marker_ns = H0_NS + np.cumsum(rng.uniform(4e9, 8e9, int(minutes * 60 / 4) + 2)).astype(
        np.int64)
    marker_ns = marker_ns[marker_ns < end_ns - 1_000_000_000]
    strobe = _net(MARKER_STROBE, marker_ns, marker_ns + 20_000_000)
    devs = _devices(duration_ns, drift_ppm, faults, rng)
    _simulate_samples(devs, sync, end_ns, faults, duration_ns, rng)

    delay_ns = int(read_delay_s * 1e9)
    warm_end = int(host.actual_rise_ns[0]) + int(warmup_s * 1e9)
    excluded = [(t, t + SETTLE_NS) for t in _fault_times(duration_ns)] if faults else []
    latency_ns = {"eeg": (5e4, 3e6), "hub": (2e6, 30e6), "camera": (5e6, 15e6)}
    out: dict[str, dict] = {}
    for name, dev in devs.items():
        model = _model_for(dev)
        decoder = PulseDecoder(dev.units_per_s, fs_hz=FS_HZ if name != "camera" else FPS)
        scores = Scores()
        pulse_dev = dev.true_device_t(host.actual_rise_ns)
        m_idx, m_dev, m_host = _marker_samples(dev, strobe, marker_ns)
        seg_pulse = np.full(n_pulses, -1)
        seg_marker = np.full(marker_ns.size, -1)
        next_pulse = next_marker = 0  # next to score at the read delay
        edges = np.arange(H0_NS, end_ns + BLOCK_NS, BLOCK_NS)
        if name == "eeg" and eeg_link == "bridge":  # the bridge's drains: 10..50 ms bursts
            steps = rng.uniform(10e6, 50e6, int(duration_ns / 10e6) + 2).astype(np.int64)
            edges = H0_NS + np.r_[0, np.cumsum(steps)]
            edges = edges[edges <= end_ns + 50_000_000]
        cuts = np.searchsorted(dev.host_true_ns, edges)
        span = (5e4, 2e6) if name == "eeg" and eeg_link == "bridge" else latency_ns[name]
        lat = rng.uniform(*span, edges.size)
        for b in range(edges.size - 1):
            lo, hi = cuts[b], cuts[b + 1]
            t_end = int(edges[b + 1])
            if hi > lo:
                arrival = int(dev.host_true_ns[hi - 1] + lat[b])
                decoder = _deliver(dev, model, decoder, host, lo, hi, arrival)
            # Tag pulses and markers that happened in this block with the segment now current.
            in_blk = (host.actual_rise_ns >= edges[b]) & (host.actual_rise_ns < t_end)
            seg_pulse[in_blk] = model.segment
            for k in np.flatnonzero(in_blk):
                _score(model, pulse_dev[k], int(seg_pulse[k]), int(host.actual_rise_ns[k]),
                       scores.online_err_ns)
            seg_marker[(marker_ns >= edges[b]) & (marker_ns < t_end)] = model.segment
            while next_pulse < n_pulses and host.actual_rise_ns[next_pulse] + delay_ns <= t_end:
                k, next_pulse = next_pulse, next_pulse + 1
                t_k = int(host.actual_rise_ns[k])
                if any(a <= t_k < z for a, z in excluded):
                    continue
                sink = scores.warmup_err_ns if t_k < warm_end else scores.pulse_err_ns
                _score(model, pulse_dev[k], int(seg_pulse[k]), t_k, sink)
            while next_marker < marker_ns.size and marker_ns[next_marker] + delay_ns <= t_end:
                j, next_marker = next_marker, next_marker + 1
                t_j = int(marker_ns[j])
                if m_idx[j] < 0 or t_j < warm_end or any(a <= t_j < z for a, z in excluded):
                    continue
                _score(model, m_dev[j], int(seg_marker[j]), int(m_host[j]),
                       scores.marker_err_ns)
        out[name] = _summary(name, scores, model, dev)
    return out


def _deliver(dev: Device, model: ClockModel, decoder: PulseDecoder, host: HostPulses,
             lo: int, hi: int, arrival_ns: int) -> PulseDecoder:
    """One block reaches the host: arrivals, pulse decoding, pairing, fitting.

    Returns the decoder to use next (a fresh one after a counter reset).
    """
    t = dev.device_t[lo:hi]
    cuts = np.flatnonzero(np.diff(t) < 0) + 1  # a reset inside the block
    for a, z in zip(np.r_[0, cuts], np.r_[cuts, t.size], strict=True):
        model.note_arrival(float(t[z - 1]), arrival_ns)
        if a > 0:
            decoder = _reset_decoder(decoder, dev)
        found = decoder.feed(dev.sync[lo + a:lo + z], t[a:z])
        if found.rise_device_t.size == 0:
            continue
        # Each edge lies uniformly between the last sample before it and the first after.
        rises = found.rise_device_t - 0.5 * dev.step_units
        falls = rises + found.width_s * dev.units_per_s
        known = host.recorded_fall_ns <= arrival_ns
        last = np.flatnonzero(known)[-HOST_LOG:]
        pairs = match_pulses(rises, found.code, host.k[last], host.recorded_rise_ns[last], model,
                             code_slack=2 if dev.name == "camera" else 0)
        step_s = dev.step_units / dev.units_per_s
        falls_p = fall_pairs(pairs, falls, host.recorded_fall_ns[last], dev.units_per_s,
                             tolerance_s=step_s + FALL_TOLERANCE_S)
        for p in (pairs, falls_p):
            for d, h, k in zip(p.device_t.tolist(), p.host_ns.tolist(), p.k.tolist(),
                               strict=True):
                model.add_pair(d, h, code=k % sync_code.CODE_MODULUS)
    return decoder


def _reset_decoder(decoder: PulseDecoder, dev: Device) -> PulseDecoder:
    # The bench's own bookkeeping: after a counter reset the driver starts a fresh decoder.
    return PulseDecoder(dev.units_per_s, fs_hz=dev.units_per_s / dev.step_units)


def _score(model: ClockModel, device_t: float, segment: int, truth_ns: int,
           sink: list[float]) -> None:
    if not np.isfinite(device_t) or model.quality == "none":
        return
    mapped = int(model.to_host_ns(np.float64(device_t), segment=segment))
    sink.append(float(mapped - truth_ns))


def _pct_ms(errs: list[float], q: float) -> float:
    return float(np.percentile(np.abs(errs), q) / 1e6) if errs else float("nan")


def _summary(name: str, s: Scores, model: ClockModel, dev: Device) -> dict:
    p99 = _pct_ms(s.pulse_err_ns, 99)
    return {
        "p50_ms": round(_pct_ms(s.pulse_err_ns, 50), 4),
        "p99_ms": round(p99, 4),
        "max_ms": round(_pct_ms(s.pulse_err_ns, 100), 4),
        "online_p99_ms": round(_pct_ms(s.online_err_ns, 99), 4),
        "marker_p99_ms": round(_pct_ms(s.marker_err_ns, 99), 4),
        "warmup_max_ms": round(_pct_ms(s.warmup_err_ns, 100), 4),
        "n_pulses": len(s.pulse_err_ns),
        "n_markers": len(s.marker_err_ns),
        "target_ms": round(TARGET_MS[name], 3),
        "met": bool(p99 < TARGET_MS[name]),
        # Camera timestamps are host CLOCK_MONOTONIC already: their map has no drift.
        "true_ppm": 0.0 if name == "camera" else round(dev.crystal_ppm, 3),
        "fit_ppm": round(model.drift_ppm, 3),
        "segments": model.counters.segments,
        "pairs_rejected": model.counters.rejected,
    }


def _table(res: dict, args: argparse.Namespace) -> str:
    head = (f"sync bench: {args.minutes:g} min, crystals +-{args.drift_ppm:g} ppm, host jitter "
            f"up to {args.jitter_ms:g} ms ({args.jitter_model}), read delay "
            f"{args.read_delay_s:g} s, faults {'on' if args.faults else 'off'}, seed {args.seed}, "
            f"EEG via {args.eeg_link}")
    cols = ("stream", "pulses", "p50 ms", "p99 ms", "max ms", "online p99", "marker p99",
            "target", "met", "ppm true/fit", "segs", "rejected")
    rows = [cols]
    for name, r in res.items():
        rows.append((name, str(r["n_pulses"]), f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}",
                     f"{r['max_ms']:.3f}", f"{r['online_p99_ms']:.3f}",
                     f"{r['marker_p99_ms']:.3f}", f"<{r['target_ms']:g}",
                     "yes" if r["met"] else "NO", f"{r['true_ppm']:+.2f}/{r['fit_ppm']:+.2f}",
                     str(r["segments"]), str(r["pairs_rejected"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    lines = [head] + ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True))
                      for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mmme-hil bench sync")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--drift-ppm", type=float, default=100.0)
    p.add_argument("--jitter-ms", type=float, default=2.0)
    p.add_argument("--jitter-model", choices=("tail", "uniform"), default="tail")
    p.add_argument("--read-delay-s", type=float, default=2.0)
    p.add_argument("--warmup-s", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--faults", action="store_true")
    p.add_argument("--eeg-link", choices=("bridge", "spi"), default="bridge",
                   help="EEG delivery: the bridge's FIFO bursts, or the direct DRDY reader")
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.minutes * 60 < args.warmup_s + 20:
        print("mmme-hil bench sync: session too short for the warm-up", flush=True)
        return 2
    res = run(args.minutes, args.drift_ppm, args.jitter_ms, seed=args.seed,
              jitter_model=args.jitter_model, read_delay_s=args.read_delay_s,
              warmup_s=args.warmup_s, faults=args.faults, eeg_link=args.eeg_link)
    print(_table(res, args))
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
