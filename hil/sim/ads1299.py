"""A register-level ADS1299 emulator that implements ``sensors.seams.SpiBus``.

What it models (datasheet SBAS499 behaviour the driver depends on):

- Opcodes WAKEUP/STANDBY/RESET/START/STOP/RDATAC/SDATAC/RDATA, RREG/WREG with the count
  byte, datasheet default register values, ID 0x3E (or ``chip_id`` to fake another part).
  The chip wakes (and resets) in RDATAC mode, where RREG/WREG are ignored: a driver must
  send SDATAC first. CS is per ``xfer``: a command never spans two transfers.
- While started, sample ``k`` (k = 0, 1, ...) is ready at device time
  ``start + (k + 1) / fs`` on this chip's :class:`~hil.sim.crystal.Crystal`, i.e. at host time
  ``crystal.host_ns(...)`` (clock steps honoured). There is ONE output register: a data
  read returns the frame of the newest sample ready at the time of the read, so a late
  reader loses frames exactly as on the chip. After STOP the last frame stays readable.
- Frames: status ``1100 | LOFF_STATP | LOFF_STATN | GPIO[7:4]`` then 8 channels of 24-bit
  two's complement. Channels follow CHnSET: gain, power-down, and the mux (normal = the
  :class:`~hil.sim.eeg_model.EegModel` EEG; shorted / bias ~ 0 uV + 0.15 uV rms noise; test =
  the internal square wave of +/-(VREF/2.4) mV, doubled by CAL_AMP, at fCLK/2^21 or
  fCLK/2^20 per CONFIG2 (a half period is exactly 0.512 s or 0.256 s of samples), DC for
  CAL_FREQ 11; temperature 145.3 mV + 490 uV/degC at 30 degC; MVDD (AVDD-AVSS)/2 = 2.5 V).
- The sync net (``wire["sync"]``) is sampled at each sample instant into GPIO4 (status
  bit 3) when the GPIO register makes pin 4 an input.
- Lead-off: :meth:`Ads1299Emulator.disconnect` sets a channel's P (or N) input open: its
  data rails to positive full scale and, when CONFIG4.PD_LOFF_COMP and LOFF_SENSP/N
  enable it, its LOFF_STAT bit is set.

Signals are generated lazily in chunks of ``chunk_s`` (sample instants, counts and frame
bytes together, vectorised), so a read costs microseconds. Register or fault changes
while converting take effect at the next chunk boundary (at most ``chunk_s`` later), which
keeps :meth:`Ads1299Emulator.truth` exact for every sample produced.

Daisy pair: two emulators sharing one ``Crystal`` convert on one schedule (the first
START of the pair sets the epoch, as the shared START pin and CLK output do), so sample
``k`` is simultaneous on both. Use the first chip's :meth:`drdy_line` only.

Faults: ``chip_id=`` (wrong or absent part: 0x00 / 0xFF), :meth:`stick_drdy`,
:meth:`set_drift`, a clock step through ``crystal.step``, :meth:`disconnect`.
"""

from __future__ import annotations

import bisect
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from hil.sim.crystal import Crystal
from hil.sim.eeg_model import EegModel
from hil.sim.scenario import Scenario
from hil.sim.wire import SYNC, Wire
from sensors.blocks import Edge, monotonic_ns

DEFAULT_REGS = bytes(
    [0x3E, 0x96, 0xC0, 0x60, 0x00]  # ID, CONFIG1 (250 SPS), CONFIG2, CONFIG3, LOFF
    + [0x61] * 8  # CHnSET: gain 24, input shorted
    + [0x00] * 5  # BIAS_SENSP/N, LOFF_SENSP/N, LOFF_FLIP
    + [0x00, 0x00, 0x0F, 0x00, 0x00, 0x00]  # LOFF_STATP/N, GPIO (inputs), MISC1/2, CONFIG4
)
RATES_HZ = (16000, 8000, 4000, 2000, 1000, 500, 250, 250)  # CONFIG1 DR; 111 is reserved
VREF_UV = 4.5e6
FULL_SCALE = 2**23 - 1
SHORTED_NOISE_UV = 0.15
DEFAULT_CHANNELS = (
    ("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2"),
    ("F3", "F4", "F7", "F8", "T7", "T8", "P3", "P4"),
)


def test_signal_uv(k: np.ndarray, config2: int, fs_hz: float) -> np.ndarray:
    """The internal test signal at sample indices ``k`` (input-referred microvolts)."""
    amp = VREF_UV / 2400.0 * (2.0 if config2 & 0x04 else 1.0)
    freq = config2 & 0x03
    if freq in (0b10, 0b11):  # DC (10 is "not used"; treated as DC)
        return np.full(k.shape, amp)
    half_n = round(fs_hz * (0.512 if freq == 0 else 0.256))  # 2^21 or 2^20 / fCLK / 2
    return np.where((k // half_n) % 2 == 0, amp, -amp)


class EegSource(Protocol):
    """The electrodes' signal: consecutive samples in input-referred microvolts."""

    def next(self, n: int, t_s: np.ndarray | None = None) -> np.ndarray:
        """The next ``n`` samples, ``(n, n_channels)``; ``t_s``: scenario seconds of each."""
        ...


# Builds a conversion run's source: (channel names, fs_hz, seed, scenario) -> EegSource.
EegSourceFactory = Callable[[Sequence[str], float, int, "Scenario | None"], EegSource]


def simulated_eeg(channels: Sequence[str], fs_hz: float, seed: int,
                  scenario: Scenario | None) -> EegSource:
    """The default source: synthetic scalp EEG following the scenario."""
    return EegModel(channels, fs_hz, seed=seed, scenario=scenario)


@dataclass
class _Chunk:
    k0: int
    t_ns: np.ndarray  # (C,) int64 host time of each sample instant
    data: np.ndarray  # (C, 24) uint8 channel bytes as the chip shifts them out
    counts: np.ndarray  # (C, 8) int32


@dataclass
class _Run:
    """One START..STOP conversion run."""

    run_id: int
    epoch_dev_s: float
    fs_hz: float
    chunk_n: int
    t0_ns: int
    model: EegSource
    noise: np.random.Generator
    chunks: OrderedDict[int, _Chunk] = field(default_factory=OrderedDict)
    last_c: int = -1
    loff_k: list[int] = field(default_factory=list)
    loff_p: list[int] = field(default_factory=list)
    loff_n: list[int] = field(default_factory=list)


class _Group:
    """Chips sharing a crystal (a daisy pair): one conversion epoch."""

    def __init__(self) -> None:
        self.epoch_dev_s: float | None = None
        self.members: weakref.WeakSet[Ads1299Emulator] = weakref.WeakSet()


_GROUPS: dict[int, tuple[weakref.ref, _Group]] = {}
_GROUPS_LOCK = threading.Lock()


def _group_for(crystal: Crystal) -> _Group:
    with _GROUPS_LOCK:
        for key in [k for k, (ref, _) in _GROUPS.items() if ref() is None]:
            del _GROUPS[key]
        entry = _GROUPS.get(id(crystal))
        if entry is None or entry[0]() is not crystal:
            entry = (weakref.ref(crystal), _Group())
            _GROUPS[id(crystal)] = entry
        return entry[1]


class Ads1299Emulator:
    """One ADS1299 behind one chip select (implements ``sensors.seams.SpiBus``)."""

    def __init__(
        self,
        crystal: Crystal,
        wire: Wire | None = None,
        scenario: Scenario | None = None,
        seed: int = 0,
        chip_id: int = 0x3E,
        chip_index: int = 0,
        t0_ns: int | None = None,
        channels: tuple[str, ...] | None = None,
        chunk_s: float = 0.1,
        history_s: float = 60.0,
        source: EegSourceFactory | None = None,
        input_noise_uv: float = SHORTED_NOISE_UV,
    ) -> None:
        self.crystal = crystal
        self.wire = wire
        self.scenario = scenario
        self.seed = seed
        self.chip_id = chip_id
        self.chip_index = chip_index
        self.t0_ns = t0_ns
        self.channels = channels or DEFAULT_CHANNELS[chip_index % 2]
        self._chunk_s = chunk_s
        self._source = source or simulated_eeg
        self._input_noise_uv = float(input_noise_uv)  # the chip's own (0 replaying a recording)
        self._max_chunks = max(2, int(np.ceil(history_s / chunk_s)))
        self._lock = threading.RLock()
        self._group = _group_for(crystal)
        self._group.members.add(self)
        self._runs = 0
        self._run: _Run | None = None
        self._held = bytes(27)
        self._stuck_k: int | None = None
        self._disc_p = 0
        self._disc_n = 0
        self.xfers = 0  # transfers served (tests count bus traffic)
        self._reset_state()

    # ---- SpiBus

    def xfer(self, data: bytes) -> bytes:
        now = monotonic_ns()
        with self._lock:
            self.xfers += 1
            out = bytearray(len(data))
            if self._rdatac:
                frame = self._frame_at(now)
                m = min(len(data), len(frame))
                out[:m] = frame[:m]
            self._commands(bytes(data), out, now)
            return bytes(out)

    def close(self) -> None:
        pass

    # ---- test and fault API

    @property
    def registers(self) -> bytes:
        """The register file as last written (read-only status registers as stored)."""
        with self._lock:
            return bytes(self._regs)

    @property
    def converting(self) -> bool:
        return self._run is not None

    @property
    def rdatac(self) -> bool:
        return self._rdatac

    def drdy_line(self, jitter_ns: int = 0, capacity: int = 1024, seed: int = 0) -> _DrdyLine:
        """This chip's DRDY pin as an ``EdgeInput`` (falling edges, gpiod-like seq numbers).

        ``capacity`` is the kernel event buffer: when more edges are pending the oldest are
        discarded (their sequence numbers are skipped). ``jitter_ns`` delays each reported
        timestamp by a uniform 0..jitter_ns.
        """
        return _DrdyLine(self, jitter_ns, capacity, seed)

    def start_line(self) -> _PinLine:
        """This chip's START pin (high: convert) as an ``OutputLine``."""
        return _PinLine([self._start_pin])

    def reset_line(self) -> _PinLine:
        """This chip's RESET pin (low: reset) as an ``OutputLine``."""
        return _PinLine([self._reset_pin])

    def stick_drdy(self) -> None:
        """Fault: DRDY stops toggling from now on (conversions go on)."""
        with self._lock:
            self._stuck_k = self._latest_k(monotonic_ns())

    def release_drdy(self) -> None:
        with self._lock:
            self._stuck_k = None

    @property
    def drdy_stuck_after(self) -> int | None:
        """The last sample index DRDY announced before it stuck (None: DRDY toggles)."""
        return self._stuck_k

    def set_drift(self, ppm: float) -> None:
        """Fault: the crystal's frequency error becomes ``ppm`` from now on (continuous)."""
        with self._lock:
            now = monotonic_ns()
            c = self.crystal
            steps_now = sum(s for at, s in c.steps if now >= at)
            c.origin_device_s = float(c.device_s(now)) - steps_now
            c.origin_host_ns = now
            c.ppm = ppm

    def disconnect(self, channel: int | str, side: str = "p") -> None:
        """Fault: open the channel's P (or N, or both) electrode from the next chunk on."""
        self._set_lead(channel, side, True)

    def reconnect(self, channel: int | str, side: str = "both") -> None:
        self._set_lead(channel, side, False)

    def sample_index_at(self, t_ns: int) -> int:
        """Newest sample index ready at host time ``t_ns`` (-1 if none)."""
        with self._lock:
            return self._latest_k(t_ns)

    def frames(self, first_index: int, n: int, ready_k: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """What the output register held at each of samples ``first_index .. + n - 1`` of
        the current run: their DRDY host instants ``(n,)`` int64 and 27-byte frames
        ``(n, 27)`` uint8. A microcontroller reading at every DRDY gets exactly these
        (hil.sim.eeg_bridge). The samples must have been produced already; ``ready_k``
        (the newest sample a chip on the same crystal reported ready) spares the check."""
        with self._lock:
            run = self._run
            if run is None:
                raise ValueError("frames: the chip is not converting")
            k = np.arange(first_index, first_index + n, dtype=np.int64)
            newest = ready_k if ready_k is not None else self._latest_k(monotonic_ns())
            if n and (first_index < 0 or k[-1] > newest):
                raise ValueError(f"frames: samples {first_index}..{first_index + n - 1} "
                                 "not produced yet")
            if not n:
                return np.zeros(0, np.int64), np.zeros((0, 27), np.uint8)
            t, data, _ = self._gather(run, k)
            st = self._status(run, k, t)
            head = np.stack([(st >> 16) & 0xFF, (st >> 8) & 0xFF, st & 0xFF], axis=-1)
            return t.copy(), np.concatenate([head.astype(np.uint8), data], axis=1)

    def sample_instants(self, first_index: int, n: int) -> np.ndarray:
        """Host ns of the conversion instants (DRDY) of samples ``first_index .. + n - 1``
        of the current (or, once stopped, the last) run."""
        with self._lock:
            run = self._run or self._last_run
            if run is None:
                raise ValueError("sample_instants: no conversion run yet")
            return self._instants(run, np.arange(first_index, first_index + n, dtype=np.int64))

    def truth(self, first_index: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Ground truth of produced samples: status ``(n,)`` uint32, counts ``(n, 8)`` int32."""
        with self._lock:
            run = self._run or self._last_run
            if run is None:
                raise ValueError("truth: no conversion run yet")
            if run is self._run:
                self._latest_k(monotonic_ns())
            k = np.arange(first_index, first_index + n, dtype=np.int64)
            if n and (first_index < 0 or k[-1] > self._produced_k(run)):
                raise ValueError(f"truth: samples {first_index}..{first_index + n - 1} "
                                 "not produced yet")
            t, _, counts = self._gather(run, k)
            return self._status(run, k, t), counts

    # ---- command decoding

    def _commands(self, data: bytes, out: bytearray, now: int) -> None:
        i = 0
        while i < len(data):
            op = data[i]
            if op == 0x00:  # NOP: what a host clocks out while reading data
                i += 1
                continue
            if 0x20 <= op < 0x60:  # RREG / WREG: opcode, count - 1, then the registers
                count = (data[i + 1] + 1) if i + 1 < len(data) else 0
                body = data[i + 2 : i + 2 + count]
                if not self._rdatac:  # ignored in RDATAC, as on the chip
                    addr = op & 0x1F
                    if op < 0x40:
                        regs = self._read_regs(addr, count, now)
                        out[i + 2 : i + 2 + len(regs)] = regs[: max(0, len(out) - i - 2)]
                    else:
                        self._write_regs(addr, body)
                i += 2 + count
                continue
            if op == 0x12 and not self._rdatac:  # RDATA: the frame follows the opcode
                frame = self._frame_at(now)
                m = min(len(frame), len(data) - i - 1)
                out[i + 1 : i + 1 + m] = frame[:m]
                i += 1 + len(frame)
                continue
            self._opcode(op, now)
            i += 1

    def _opcode(self, op: int, now: int) -> None:
        if op == 0x06:  # RESET
            self._end_run(now)
            self._reset_state()
        elif op == 0x08:  # START
            self._started = True
            self._begin_run(now)
        elif op == 0x0A:  # STOP
            self._started = False
            self._end_run(now)
        elif op == 0x04:  # STANDBY
            self._standby = True
            self._end_run(now)
        elif op == 0x02:  # WAKEUP
            self._standby = False
            self._begin_run(now)
        elif op == 0x10:
            self._rdatac = True
        elif op == 0x11:
            self._rdatac = False

    def _reset_state(self) -> None:
        self._regs = bytearray(DEFAULT_REGS)
        self._regs[0] = self.chip_id & 0xFF
        self._rdatac = True  # the chip powers up and resets into RDATAC
        self._started = False
        self._standby = False
        self._run = None
        self._last_run: _Run | None = None
        self._held = bytes(27)

    def _read_regs(self, addr: int, count: int, now: int) -> bytes:
        regs = bytearray(self._regs)
        if self._run is not None and (addr + count - 1 >= 0x12 and addr <= 0x14):
            k = max(self._latest_k(now), 0)
            st = int(self._status(self._run, np.array([k]), np.array([now]))[0])
            regs[0x12], regs[0x13] = (st >> 12) & 0xFF, (st >> 4) & 0xFF
            regs[0x14] = (regs[0x14] & 0x0F) | ((st & 0x0F) << 4)
        return bytes(regs[addr : addr + count]).ljust(count, b"\x00")

    def _write_regs(self, addr: int, body: bytes) -> None:
        for j, v in enumerate(body):
            a = addr + j
            if a >= len(self._regs) or a in (0x00, 0x12, 0x13):
                continue  # ID and LOFF_STAT are read-only
            if a == 0x03:
                v &= 0xFE  # BIAS_STAT is read-only
            self._regs[a] = v

    # ---- pins

    def _start_pin(self, value: int, now: int) -> None:
        with self._lock:
            self._opcode(0x08 if value else 0x0A, now)

    def _reset_pin(self, value: int, now: int) -> None:
        if not value:
            with self._lock:
                self._opcode(0x06, now)

    # ---- conversion schedule

    def _begin_run(self, now: int) -> None:
        if self._run is not None or not self._started or self._standby:
            return
        g = self._group
        others = any(m is not self and m._run is not None for m in list(g.members))
        if g.epoch_dev_s is None or not others:
            g.epoch_dev_s = float(self.crystal.device_s(now))
        fs = float(RATES_HZ[self._regs[0x01] & 0x07])
        self._runs += 1
        seed = self.seed * 7919 + self.chip_index * 104729 + self._runs
        run = _Run(
            run_id=self._runs,
            epoch_dev_s=g.epoch_dev_s,
            fs_hz=fs,
            chunk_n=max(25, round(fs * self._chunk_s)),
            t0_ns=0,
            model=self._source(self.channels, fs, seed, self.scenario),
            noise=np.random.default_rng([seed, 7]),
        )
        # Scenario time 0: the bench's epoch or t0_ns if given, else the START instant.
        start_ns = int(self._instants(run, np.array([-1]))[0])
        t0 = self._scenario_t0()
        run.t0_ns = t0 if t0 is not None else start_ns
        run.loff_k, run.loff_p, run.loff_n = [0], [self._disc_p], [self._disc_n]
        self._run = run

    def _scenario_t0(self) -> int | None:
        """Host ns of scenario t = 0: the epoch on the wire when the bench set it as the rig
        started (a replay begins then, however long the rig took to open), else t0_ns."""
        return self.t0_ns if self.wire is None else self.wire.epoch_ns(self.t0_ns)

    def _end_run(self, now: int) -> None:
        if self._run is None:
            return
        self._held = self._frame_at(now)
        self._last_run = self._run
        self._run = None

    def _instants(self, run: _Run, k: np.ndarray) -> np.ndarray:
        """Host ns of sample instants, honouring the crystal's clock steps."""
        c = self.crystal
        d = run.epoch_dev_s + (k.astype(np.float64) + 1.0) / run.fs_hz
        h = c.host_ns(d)
        cum = 0.0
        for at, s in sorted(c.steps):
            cum += s
            hs = c.host_ns(d - cum)
            h = np.where(h < at, h, np.where(hs >= at, hs, at))
        return h

    def _make_chunk(self, run: _Run, c: int) -> _Chunk:
        n = run.chunk_n
        k = c * n + np.arange(n, dtype=np.int64)
        t = self._instants(run, k)
        eeg = run.model.next(n, (t - run.t0_ns) / 1e9)
        uv = np.zeros((n, 8))
        gains = np.ones(8)
        pos = np.searchsorted(np.asarray(run.loff_k), k, side="right") - 1
        disc_p = np.asarray(run.loff_p)[pos]
        disc_n = np.asarray(run.loff_n)[pos]
        for ch in range(8):
            chset = self._regs[0x05 + ch]
            gains[ch] = (1, 2, 4, 6, 8, 12, 24, 24)[(chset >> 4) & 0x07]
            mux = chset & 0x07
            if chset & 0x80:
                continue  # powered down: zeros
            if mux == 0:
                col = eeg[:, ch]
                opened = ((disc_p >> ch) & 1) | ((disc_n >> ch) & 1)
                col = np.where(opened.astype(bool), VREF_UV, col)  # open input rails
            elif mux == 5 and self._regs[0x02] & 0x10:
                col = test_signal_uv(k, self._regs[0x02], run.fs_hz)
            elif mux == 4:
                col = np.full(n, 145_300.0 + 490.0 * 5.0)
            elif mux == 3:
                col = np.full(n, 2.5e6)
            else:
                col = np.zeros(n)
            uv[:, ch] = col + run.noise.normal(0.0, self._input_noise_uv, n)
        counts = np.clip(np.rint(uv * gains / VREF_UV * FULL_SCALE), -(2**23), FULL_SCALE)
        counts = counts.astype(np.int32)
        u = counts.astype(np.uint32) & 0xFFFFFF
        data = np.stack([(u >> 16) & 0xFF, (u >> 8) & 0xFF, u & 0xFF], axis=-1)
        return _Chunk(k0=c * n, t_ns=t, data=data.astype(np.uint8).reshape(n, 24), counts=counts)

    def _chunk(self, run: _Run, c: int) -> _Chunk:
        ch = run.chunks.get(c)
        if ch is not None:
            return ch
        if c <= run.last_c:
            raise ValueError(f"chunk {c} is older than the emulator's history")
        while run.last_c < c:  # in order: the EEG model is sequential
            run.last_c += 1
            run.chunks[run.last_c] = self._make_chunk(run, run.last_c)
            while len(run.chunks) > self._max_chunks:
                run.chunks.popitem(last=False)
        return run.chunks[c]

    def _latest_k(self, now: int) -> int:
        run = self._run
        if run is None:
            return -1
        c = max(run.last_c, 0)
        ch = self._chunk(run, c)
        while ch.t_ns[-1] <= now:
            c += 1
            ch = self._chunk(run, c)
        pos = int(np.searchsorted(ch.t_ns, now, side="right")) - 1
        if pos >= 0:
            return ch.k0 + pos
        if c == 0:
            return -1
        return ch.k0 - 1  # the previous chunk's last sample (its instant <= now)

    def _produced_k(self, run: _Run) -> int:
        if run is self._run:
            return self._latest_k(monotonic_ns())
        return run.last_c * run.chunk_n + run.chunk_n - 1  # a stopped run: all it made

    def _gather(self, run: _Run, k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = run.chunk_n
        c0, c1 = int(k[0]) // n, int(k[-1]) // n
        if c0 == c1 and k.size == int(k[-1]) - int(k[0]) + 1:  # one chunk, contiguous
            ch = self._chunk(run, c0)
            rows = slice(int(k[0]) - ch.k0, int(k[-1]) - ch.k0 + 1)
            return ch.t_ns[rows], ch.data[rows], ch.counts[rows]
        t = np.empty(k.size, dtype=np.int64)
        data = np.empty((k.size, 24), dtype=np.uint8)
        counts = np.empty((k.size, 8), dtype=np.int32)
        for c in np.unique(k // n):
            ch = self._chunk(run, int(c))
            sel = (k // n) == c
            rows = k[sel] - ch.k0
            t[sel], data[sel], counts[sel] = ch.t_ns[rows], ch.data[rows], ch.counts[rows]
        return t, data, counts

    def _status(self, run: _Run, k: np.ndarray, t_ns: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(np.asarray(run.loff_k), k, side="right") - 1
        p = np.asarray(run.loff_p, dtype=np.uint32)[pos]
        nn = np.asarray(run.loff_n, dtype=np.uint32)[pos]
        if self._regs[0x17] & 0x02:  # PD_LOFF_COMP: comparators powered
            p &= self._regs[0x0F]
            nn &= self._regs[0x10]
        else:
            p, nn = p * 0, nn * 0
        gpio = self._regs[0x14]
        nibble = np.full(k.shape, (gpio >> 4) & 0x0F, dtype=np.uint32)
        inputs = gpio & 0x0F
        nibble &= ~np.uint32(inputs)  # input pins read their level; only GPIO4 is wired
        if inputs & 0x08 and self.wire is not None:
            level = self.wire[SYNC].value_at(t_ns).astype(np.uint32) & 1
            nibble |= level << 3
        return (np.uint32(0xC00000) | (p << 12) | (nn << 4) | nibble).astype(np.uint32)

    def _frame_at(self, now: int) -> bytes:
        run = self._run
        if run is None:
            return self._held
        k = self._latest_k(now)
        if k < 0:
            return bytes(27)
        ch = self._chunk(run, k // run.chunk_n)
        row = k - ch.k0
        st = self._status_one(run, k, int(ch.t_ns[row]))
        return st.to_bytes(3, "big") + ch.data[row].tobytes()

    def _status_one(self, run: _Run, k: int, t_ns: int) -> int:
        """:meth:`_status` for one sample in plain ints: this runs once per DRDY, inside
        the reader's deadline, where a dozen small numpy calls cost tens of us."""
        i = bisect.bisect_right(run.loff_k, k) - 1
        p, nn = int(run.loff_p[i]), int(run.loff_n[i])
        if self._regs[0x17] & 0x02:
            p &= self._regs[0x0F]
            nn &= self._regs[0x10]
        else:
            p = nn = 0
        gpio = self._regs[0x14]
        inputs = gpio & 0x0F
        nibble = ((gpio >> 4) & 0x0F) & ~inputs & 0x0F
        if inputs & 0x08 and self.wire is not None:
            nibble |= (self.wire[SYNC].value_one(t_ns) & 1) << 3
        return 0xC00000 | (p << 12) | (nn << 4) | nibble

    def _set_lead(self, channel: int | str, side: str, opened: bool) -> None:
        ch = self.channels.index(channel) if isinstance(channel, str) else int(channel)
        if not 0 <= ch < 8 or side not in ("p", "n", "both"):
            raise ValueError(f"disconnect: bad channel {channel!r} or side {side!r}")
        bit = 1 << ch
        with self._lock:
            for s, attr in (("p", "_disc_p"), ("n", "_disc_n")):
                if side in (s, "both"):
                    mask = getattr(self, attr)
                    setattr(self, attr, (mask | bit) if opened else (mask & ~bit))
            run = self._run
            if run is not None:
                self._latest_k(monotonic_ns())
                run.loff_k.append((run.last_c + 1) * run.chunk_n)  # from the next chunk on
                run.loff_p.append(self._disc_p)
                run.loff_n.append(self._disc_n)

    # ---- DRDY line support

    def _drdy_poll(self, line: _DrdyLine, now: int) -> tuple[list[Edge], int | None]:
        with self._lock:
            run = self._run
            if run is None:
                return [], None
            if line.run_id != run.run_id:
                line.run_id, line.next_k, line.seq_base = run.run_id, 0, line.last_seq
            k_now = self._latest_k(now)
            limit = k_now if self._stuck_k is None else min(k_now, self._stuck_k)
            nxt = None
            if self._stuck_k is None:
                ch = run.chunks.get((k_now + 1) // run.chunk_n)
                nxt = (int(ch.t_ns[k_now + 1 - ch.k0]) if ch is not None
                       else int(self._instants(run, np.array([k_now + 1]))[0]))
            if limit < line.next_k:
                return [], nxt
            first = max(line.next_k, limit - line.capacity + 1)  # kernel drops the oldest
            k = np.arange(first, limit + 1, dtype=np.int64)
            line.next_k = limit + 1
            t, _, _ = self._gather(run, k)
        if line.jitter_ns:
            t = t + line.rng.integers(0, line.jitter_ns + 1, t.size)
        seq = line.seq_base + k + 1
        line.last_seq = int(line.seq_base + limit + 1)
        return [Edge(t_ns=ti, rising=False, seq=si)
                for ti, si in zip(t.tolist(), seq.tolist(), strict=True)], nxt


class _DrdyLine:
    """DRDY as an ``EdgeInput``: falling edges at the sample instants."""

    def __init__(self, emu: Ads1299Emulator, jitter_ns: int, capacity: int, seed: int) -> None:
        self._emu = emu
        self.jitter_ns = jitter_ns
        self.capacity = max(1, capacity)
        self.rng = np.random.default_rng(seed)
        self.run_id = -1
        self.next_k = 0
        self.seq_base = 0
        self.last_seq = 0

    def read_edges(self, timeout_s: float) -> list[Edge]:
        deadline = monotonic_ns() + int(max(timeout_s, 0.0) * 1e9)
        while True:
            now = monotonic_ns()
            edges, nxt = self._emu._drdy_poll(self, now)
            if edges:
                return edges
            if now >= deadline:
                return []
            wait = deadline - now if nxt is None else min(deadline - now, max(nxt - now, 0))
            time.sleep(min(wait, 5_000_000) / 1e9)  # cap: notice START / release promptly

    def value(self) -> int:
        return 1  # DRDY idles high; the low pulse is shorter than any read of this line

    def close(self) -> None:
        pass


class _PinLine:
    """A chip input pin (START, RESET) as an ``OutputLine``; may fan out to several chips."""

    def __init__(self, targets: list) -> None:
        self._targets = targets

    def set(self, value: int) -> int:
        now = monotonic_ns()
        for target in self._targets:
            target(int(value), now)
        return now

    def close(self) -> None:
        pass


def shared_start_line(*chips: Ads1299Emulator) -> _PinLine:
    """One START net wired to several chips (the daisy pair's START pin)."""
    return _PinLine([c._start_pin for c in chips])


def shared_reset_line(*chips: Ads1299Emulator) -> _PinLine:
    return _PinLine([c._reset_pin for c in chips])
