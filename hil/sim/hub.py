"""The peripheral hub's MCU, emulated behind a real pseudo-terminal.

The emulator speaks docs/hub-protocol.md on the master side of a pty, in its own
thread; the driver opens ``port`` (a stable symlink to the current pty slave, like a
udev name) with pyserial, so the code under test is the code that runs on the rig.
Samples are taken on the emulator's own :class:`hil.sim.crystal.Crystal` at ``fs_hz``,
from a :class:`HubSignal`: by default :class:`PhysioSignal` (:class:`hil.sim.physio.PhysioModel`
at the true host instant of each sample); a playback signal (``hil.sim.playback``) serves a
recording instead. ``wire["sync"]`` is sampled into trigger bit 0, and frames are sent every
``send_period_s``. The sample grid is anchored on ``t0_ns``: grid row k is taken at the MCU's
reading of t0 plus k / fs_hz, and a signal with a finite span is sampled over its rows only.

Every sample taken is recorded with its sequence number (ground truth, bounded ring)
together with whether it went out on the wire. Faults: :meth:`corrupt`, :meth:`unplug`
/ :meth:`replug`, :meth:`drop_frames`, :meth:`set_wrong_identity`, :meth:`stop_answering`.

``python -m hil.sim.hub [seconds]`` runs emulator + driver at 1 kHz and prints CPU use.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from hil.sim.crystal import Crystal, SteppedCrystal
from hil.sim.physio import CHANNELS, UNITS, PhysioModel
from hil.sim.pty_device import PtyDevice
from hil.sim.scenario import Scenario
from hil.sim.wire import SYNC, Wire
from sensors import hub_protocol as hp
from sensors.blocks import monotonic_ns

# Physical value = raw * scale + offset (declared in the INFO reply).
SCALE = (1e-4, 1e-4, 1e-4, 1e-5, 1e-4)  # 0.1 uV ECG, 10 nS EDA, 0.1 mdegC SKT
OFFSET = (0.0, 0.0, 0.0, 0.0, 0.0)
OUTBOX_BYTES = 64 * 1024  # the MCU's TX queue; beyond it new frames are dropped
LOOKAHEAD_S = 0.25  # samples computed ahead, at once: per-batch numpy overhead dominates


@dataclass
class HubSamples:
    """What the MCU's ADC reads for a run of samples."""

    raw: np.ndarray  # (n, n_channels) int32 counts
    status: np.ndarray  # (n,) uint16 device status bits (TX_OVERFLOW is the MCU's own)
    din: np.ndarray  # (n,) uint8 trigger bits 1..7 (bit 0, the sync line, comes from the wire)
    present: np.ndarray | None = None  # (n,) bool; False: no sample there (a recorded gap)


class HubSignal(Protocol):
    """What the hub's sensors see: channel declarations and samples on demand."""

    channels: tuple[str, ...]
    units: tuple[str, ...]
    scale: tuple[float, ...]
    offset: tuple[float, ...]

    def rows(self) -> tuple[int, int | None]:
        """Grid rows the signal covers, [first, stop); stop None: endless."""
        ...

    def samples(self, seq: np.ndarray, row: np.ndarray, t_s: np.ndarray) -> HubSamples:
        """Samples with sequence numbers ``seq`` (increasing, never asked twice backwards),
        grid rows ``row`` and scenario times ``t_s`` (true host instants)."""
        ...


class PhysioSignal:
    """The simulated subject: :class:`PhysioModel` values plus sensor noise, in counts.

    Noise is kept per sequence number, so a rebuild of the emulator's lookahead (new grid
    after START, crystal step) reuses the draws already made: the seq-th draw always
    belongs to sample seq, as when drawing batch by batch.
    """

    channels = CHANNELS
    units = UNITS
    scale = SCALE
    offset = OFFSET

    def __init__(self, scenario: Scenario, seed: int = 0) -> None:
        self.physio = PhysioModel(scenario, seed=seed)
        self._scale = np.asarray(SCALE)
        self._offset = np.asarray(OFFSET)
        self._noise_seq0 = 0
        self._noise = np.zeros((0, len(CHANNELS)))

    def rows(self) -> tuple[int, int | None]:
        return (-(2**62), None)

    def samples(self, seq: np.ndarray, row: np.ndarray, t_s: np.ndarray) -> HubSamples:
        s0, s1 = int(seq[0]), int(seq[-1]) + 1
        keep = self._noise[max(s0 - self._noise_seq0, 0):]
        drawn = max(s0, self._noise_seq0) + keep.shape[0]
        if s1 > drawn:
            keep = np.concatenate([keep, self.physio.noise(s1 - drawn)])
        self._noise, self._noise_seq0 = keep, max(s0, self._noise_seq0)
        values = self.physio.values(t_s) + keep[: seq.size]
        raw = np.clip(np.rint((values - self._offset) / self._scale), -(2**31), 2**31 - 1)
        n = seq.size
        return HubSamples(raw.astype(np.int32), np.zeros(n, np.uint16), np.zeros(n, np.uint8))


class HubEmulator(PtyDevice):
    """The hub MCU: answers commands, streams DATA frames paced on its own crystal."""

    def __init__(
        self,
        scenario: Scenario,
        crystal: Crystal,
        wire: Wire | None = None,
        seed: int = 0,
        fs_hz: int = 1000,
        t0_ns: int | None = None,
        send_period_s: float = 0.01,
        truth_capacity: int = 1 << 18,
        signal: HubSignal | None = None,
    ) -> None:
        super().__init__(send_period_s)
        self.scenario = scenario
        self.crystal = crystal
        self.wire = wire
        self.t0_ns = monotonic_ns() if t0_ns is None else t0_ns  # host time of scenario t = 0
        self.signal: HubSignal = signal if signal is not None else PhysioSignal(scenario, seed)
        self.fs_hz = int(fs_hz)
        self._rng = np.random.default_rng([seed, 7])
        self._boot_id = int(self._rng.integers(1, 2**32))
        n_ch = len(self.signal.channels)
        self._parser = hp.HubParser(n_channels=None)
        # MCU state
        self._streaming = False
        self._next_seq = 0
        self._grid_seq = 0  # seq of the sample at device time _grid_dev_s
        self._grid_dev_s = 0.0
        self._grid_row = 0  # its row on the grid anchored at t0 (the signal's index)
        self.start_row: int | None = None  # grid row of the first sample after the last START
        self._overflowed = False
        # faults
        self._corrupt_rate = 0.0
        self._on_corrupted: Callable[[bytes, bytes], None] | None = None
        self._drop_n = 0
        self._identity = "ok"
        # Truth ring, indexed by seq % capacity: the last 262 s at 1 kHz (tests read seconds
        # of it). np.full, not np.zeros: calloc'd pages become resident only when first
        # written, so a zeros ring enters RSS at 1 kHz until it wraps and reads as a leak
        # in the soak (2**20 samples: +38 MB over 17.5 min). Written now, it is resident
        # (~10 MB) from the start.
        self._cap = truth_capacity
        self._t_seq = np.full(truth_capacity, -1, dtype=np.int64)
        self._t_raw = np.full((truth_capacity, n_ch), 0, dtype=np.int32)
        self._t_host = np.full(truth_capacity, 0, dtype=np.int64)
        self._t_us = np.full(truth_capacity, 0, dtype=np.int64)
        self._t_trig = np.full(truth_capacity, 0, dtype=np.uint8)
        self._t_sent = np.full(truth_capacity, False, dtype=bool)
        # samples computed ahead (see _lookahead), from sequence number _la_seq0 on
        self._frame_len = hp.OVERHEAD + hp.data_payload_len(n_ch)
        self._la_key: tuple | None = None
        self._la_seq0 = 0
        self._la_host = np.zeros(0, dtype=np.int64)
        self._la_tus = np.zeros(0, dtype=np.int64)
        self._la_raw = np.zeros((0, n_ch), dtype=np.int32)
        self._la_status = np.zeros(0, dtype=np.uint16)
        self._la_din = np.zeros(0, dtype=np.uint8)
        self._la_present = np.zeros(0, dtype=bool)
        self._la_frames = b""
        self.samples_taken = 0
        self.frames_sent = 0
        self.bytes_corrupted = 0
        self.commands = 0
        self._serve(prefix="sim_hub_", name="ttyHUB0", thread_name="sim-hub")

    # ------------------------------------------------------------ faults
    def corrupt(self, rate: float,
                on_corrupted: Callable[[bytes, bytes], None] | None = None) -> None:
        """Flip each outgoing byte with probability ``rate`` (XOR with a nonzero byte).

        ``on_corrupted(clean, damaged)`` is called (emulator thread) for every batch of
        DATA frames that went out damaged, so a test can tell which frames were hit.
        """
        with self._lock:
            self._corrupt_rate = float(rate)
            self._on_corrupted = on_corrupted

    def step_clock(self, seconds: float) -> int:
        """Step the MCU's clock forward by ``seconds`` now; returns the step's host ns.

        The microsecond timestamps jump; the sample pace (sequence numbers) carries on.
        The crystal becomes a :class:`~hil.sim.crystal.SteppedCrystal` and the sample grid
        moves with the step, so :meth:`truth` stays exact.
        """
        if seconds <= 0:
            raise ValueError("step_clock: forward steps only")
        with self._lock:
            self._sample_and_send()  # what was due before the step keeps its true times
            old = self.crystal
            new = SteppedCrystal(ppm=old.ppm, origin_host_ns=old.origin_host_ns,
                                 origin_device_s=old.origin_device_s, steps=list(old.steps))
            at = monotonic_ns()
            new.step(at, seconds)
            self.crystal = new
            self._grid_dev_s += seconds
        return at

    def drop_frames(self, n: int) -> None:
        """Lose the next ``n`` DATA frames inside the MCU (the sequence counter still runs)."""
        with self._lock:
            self._drop_n += int(n)

    def set_wrong_identity(self, kind: str = "magic") -> None:
        """Answer IDENTIFY as another device ("magic") or another protocol ("version")."""
        if kind not in ("magic", "version", "ok"):
            raise ValueError(f"unknown identity fault {kind!r}")
        with self._lock:
            self._identity = kind

    def stop_answering(self) -> None:
        """The MCU hangs: no replies, no data."""
        with self._lock:
            self._answering = False

    def resume_answering(self) -> None:
        with self._lock:
            self._answering = True

    # ------------------------------------------------------------ truth
    def truth(self, seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(raw (k, 5) int32, known (k,) bool) of the samples with sequence numbers ``seq``."""
        seq = np.asarray(seq, dtype=np.int64)
        with self._lock:
            slot = seq % self._cap
            known = self._t_seq[slot] == seq
            return self._t_raw[slot].copy(), known

    def truth_table(self) -> dict[str, np.ndarray]:
        """Every sample still in the ring, in sequence order: seq, host_ns, t_us, trigger,
        raw, sent (False: dropped in the MCU, lost while unplugged, or TX overflow)."""
        with self._lock:
            order = np.argsort(self._t_seq)
            order = order[self._t_seq[order] >= 0]
            return {
                "seq": self._t_seq[order].copy(), "host_ns": self._t_host[order].copy(),
                "t_us": self._t_us[order].copy(), "trigger": self._t_trig[order].copy(),
                "raw": self._t_raw[order].copy(), "sent": self._t_sent[order].copy(),
            }

    @property
    def streaming(self) -> bool:
        return self._streaming

    # ------------------------------------------------------------ the link
    def _on_plug(self) -> None:
        self._parser.clear_buffer()
        self._outbox.clear()

    # ------------------------------------------------------------ MCU loop
    def _on_bytes(self, data: bytes) -> None:
        for msg in self._parser.feed(data).messages:
            self._handle(msg)

    def _on_tick(self) -> None:
        self._sample_and_send()

    def _device_us(self, host_ns: int) -> int:
        return int(np.floor(self.crystal.device_s(host_ns) * 1e6))

    def _handle(self, msg: hp.Message) -> None:
        self.commands += 1
        cmd_seq = int.from_bytes(msg.payload[:2], "little")
        t = msg.ftype
        if t == hp.IDENTIFY:
            self._outbox += self._info(cmd_seq)
        elif t == hp.START:
            if not self._streaming:
                self._start_grid(monotonic_ns())
                self._streaming = True
            self._outbox += hp.encode_ack(cmd_seq, t, self._device_us(monotonic_ns()))
        elif t == hp.STOP:
            self._sample_and_send()  # what is due before STOP still goes out
            self._streaming = False
            self._outbox += hp.encode_ack(cmd_seq, t, self._device_us(monotonic_ns()))
        elif t == hp.SET_RATE:
            rate = int.from_bytes(msg.payload[2:4], "little")
            if self._streaming:
                self._outbox += hp.encode_nak(cmd_seq, t, hp.NAK_BUSY)
            elif not 250 <= rate <= 2000:
                self._outbox += hp.encode_nak(cmd_seq, t, hp.NAK_BAD_ARG)
            else:
                self.fs_hz = rate
                self._outbox += hp.encode_ack(cmd_seq, t, self._device_us(monotonic_ns()))
        elif t == hp.PING:
            self._outbox += hp.encode_ack(cmd_seq, t, self._device_us(monotonic_ns()))
        else:
            self._outbox += hp.encode_nak(cmd_seq, t, hp.NAK_UNKNOWN)

    def _start_grid(self, now_ns: int) -> None:
        """The first sample after START: the next grid row after now (and not before the
        signal's first row). Rows count from the MCU's reading of t0."""
        dev0 = float(self.crystal.device_s(self.t0_ns))
        first, _ = self.signal.rows()
        row = max(math.floor((float(self.crystal.device_s(now_ns)) - dev0) * self.fs_hz) + 1,
                  first)
        self._grid_seq, self._grid_row = self._next_seq, row
        self.start_row = row
        self._grid_dev_s = dev0 + row / self.fs_hz

    def _info(self, cmd_seq: int) -> bytes:
        sig = self.signal
        ident = hp.HubIdentity(
            channels=tuple(sig.channels), units=tuple(sig.units), scale=tuple(sig.scale),
            offset=tuple(sig.offset), fs_hz=self.fs_hz,
            boot_id=self._boot_id, serial=0x5A17, streaming=self._streaming,
        )
        if self._identity == "magic":
            ident = hp.HubIdentity(**{**ident.__dict__, "magic": b"ACME"})
        elif self._identity == "version":
            ident = hp.HubIdentity(**{**ident.__dict__, "protocol_version": 2})
            return hp.encode_info(cmd_seq, ident, version=2)
        return hp.encode_info(cmd_seq, ident)

    def _sample_and_send(self) -> None:
        """Take every sample due by now on the MCU clock; queue those that survive."""
        if not (self._streaming and self._answering):
            return
        now_dev_s = self.crystal.device_s_at(monotonic_ns())
        due = math.floor((now_dev_s - self._grid_dev_s) * self.fs_hz) + 1
        s0 = self._next_seq
        n = min(due - (s0 - self._grid_seq), 5 * self.fs_hz)
        _, stop_row = self.signal.rows()
        if stop_row is not None:  # a finite signal: the MCU samples nothing past its end
            n = min(n, stop_row - (self._grid_row + s0 - self._grid_seq))
        if n <= 0:
            return
        i = self._lookahead(s0, n)
        host_ns = self._la_host[i : i + n]
        t_us = self._la_tus[i : i + n]
        raw = self._la_raw[i : i + n]
        din = self._la_din[i : i + n]
        if self.wire is not None:
            trig = din | (self.wire[SYNC].value_at(host_ns) & 1).astype(np.uint8)
        else:
            trig = din
        self._next_seq += n
        self.samples_taken += n
        # The MCU's own losses are one run [a, b): the first `drop` are lost in the MCU,
        # then the newest beyond the TX queue's room; unplugged, nothing is sent. A
        # signal's gaps (samples a recording does not have) are never sent either.
        drop = min(self._drop_n, n)
        self._drop_n -= drop
        room = max(OUTBOX_BYTES - len(self._outbox), 0) // self._frame_len
        a = drop
        b = a + min(n - a, room) if self._plugged else a
        present = self._la_present[i : i + n]
        whole = bool(present[a:b].all())
        sent = np.zeros(n, dtype=bool)
        sent[a:b] = present[a:b]
        self._record(s0, n, host_ns, t_us, trig, raw, sent)
        if not sent.any():
            lost = bool(self._plugged) if b == a else (a > 0 or b < n)
            self._overflowed = self._overflowed or lost
            return
        idx = np.flatnonzero(sent)
        # Only the first frame sent can follow an MCU-side loss (earlier in this batch or
        # before it); a signal's own gaps are not the MCU's and are not flagged.
        flag = np.zeros(idx.size, dtype=bool)
        flag[0] = a > 0 or self._overflowed
        self._overflowed = b < n
        if flag.any() or (trig[a:b] != din[a:b]).any() or not whole:
            status = self._la_status[i : i + n][idx].copy()
            status[flag] |= hp.STATUS_TX_OVERFLOW
            seq = s0 + idx.astype(np.int64)
            frames = hp.encode_data(seq, t_us[idx], status, trig[idx], raw[idx])
        else:  # the common case: the pre-encoded frames are exactly what goes out
            frames = self._la_frames[(i + a) * self._frame_len : (i + b) * self._frame_len]
        self.frames_sent += idx.size
        self._outbox += self._maybe_corrupt(frames)

    def _lookahead(self, s0: int, n: int) -> int:
        """Make samples s0..s0+n-1 available pre-computed; return s0's index in the block.

        The signal, crystal conversions and encoding cost mostly per-call overhead at ~10
        samples a batch, so they run for LOOKAHEAD_S of samples at once. Everything here
        depends only on the sample grid, the crystal and t0 (the key); the trigger input
        and faults are still applied per batch. Samples already computed are reused on a
        rebuild (the signal is asked for each sequence number once, in order).
        """
        c = self.crystal
        key = (self._grid_seq, self._grid_dev_s, self.fs_hz, self.t0_ns, c.ppm,
               c.origin_host_ns, c.origin_device_s, tuple(c.steps))
        i = s0 - self._la_seq0
        if key == self._la_key and i >= 0 and i + n <= self._la_host.size:
            return i
        s1 = s0 + max(n, round(LOOKAHEAD_S * self.fs_hz))
        seq = np.arange(s0, s1, dtype=np.int64)
        dev_s = self._grid_dev_s + (seq - self._grid_seq) / self.fs_hz
        host_ns = c.host_ns(dev_s)
        t_us = np.floor(c.device_s(host_ns) * 1e6).astype(np.int64)
        got = self.signal.samples(seq, self._grid_row + (seq - self._grid_seq),
                                  (host_ns - self.t0_ns) * 1e-9)
        raw = np.ascontiguousarray(got.raw, dtype=np.int32)
        status = np.asarray(got.status, dtype=np.uint16) & ~np.uint16(hp.STATUS_TX_OVERFLOW)
        din = np.asarray(got.din, dtype=np.uint8) & np.uint8(0xFE)
        present = (np.ones(seq.size, dtype=bool) if got.present is None
                   else np.asarray(got.present, dtype=bool))
        self._la_frames = hp.encode_data(seq, t_us, status, din, raw)
        self._la_key, self._la_seq0 = key, s0
        self._la_host, self._la_tus, self._la_raw = host_ns, t_us, raw
        self._la_status, self._la_din, self._la_present = status, din, present
        return 0

    def _record(
        self, s0: int, n: int, host_ns: np.ndarray, t_us: np.ndarray, trig: np.ndarray,
        raw: np.ndarray, sent: np.ndarray,
    ) -> None:
        """Truth for samples s0..s0+n-1, of which those marked ``sent`` went out."""
        at = s0 % self._cap
        if at + n <= self._cap:  # contiguous slots: slices, not fancy indexing
            slot: slice | np.ndarray = slice(at, at + n)
            self._t_seq[slot] = np.arange(s0, s0 + n, dtype=np.int64)
        else:  # the ring wraps inside this batch
            seq = np.arange(s0, s0 + n, dtype=np.int64)
            slot = seq % self._cap
            self._t_seq[slot] = seq
        self._t_host[slot] = host_ns
        self._t_us[slot] = t_us
        self._t_trig[slot] = trig
        self._t_raw[slot] = raw
        self._t_sent[slot] = sent

    def _maybe_corrupt(self, data: bytes) -> bytes:
        if self._corrupt_rate <= 0:
            return data
        buf = np.frombuffer(data, dtype=np.uint8).copy()
        hit = np.flatnonzero(self._rng.random(buf.size) < self._corrupt_rate)
        buf[hit] ^= self._rng.integers(1, 256, hit.size, dtype=np.uint8)
        self.bytes_corrupted += int(hit.size)
        out = buf.tobytes()
        if self._on_corrupted is not None and hit.size:
            self._on_corrupted(data, out)
        return out


def main(argv: list[str] | None = None) -> int:
    """Run emulator + driver at 1 kHz for N seconds and print the CPU they used."""
    import sys

    from hil.sim.scenario import generate
    from sensors.hub import Hub, HubSettings

    args = sys.argv[1:] if argv is None else argv
    seconds = float(args[0]) if args else 10.0
    scenario = generate(max(seconds, 10.0), 3, seed=1)
    crystal = Crystal(ppm=30.0, origin_host_ns=monotonic_ns())
    with HubEmulator(scenario, crystal) as emu:
        hub = Hub(HubSettings(port=emu.port, fs_hz=1000))
        hub.open()
        hub.start()
        cpu0, wall0, n = time.process_time(), time.monotonic(), 0
        while time.monotonic() - wall0 < seconds:
            n += sum(len(b) for b in hub.poll(0.02))
        cpu = time.process_time() - cpu0
        wall = time.monotonic() - wall0
        hub.stop()
        hub.close()
    print(f"{n} samples in {wall:.1f} s ({n / wall:.0f}/s); emulator + driver CPU "
          f"{cpu / wall * 100:.1f} % of one core; dropped {hub.counters.dropped}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
