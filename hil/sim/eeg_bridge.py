"""The EEG bridge's microcontroller, emulated: implements ``sensors.seams.SpiBus``.

It wraps one to eight register-level ADS1299 emulators (``hil.sim.ads1299``) on separate
chip selects and speaks docs/eeg-bridge-protocol.md to the host. As the firmware would:

- register pass-through (REG_XFER) goes to a chip's own ``xfer``, so the host's reset,
  SDATAC, ID check and register plan reach the chip emulator unchanged;
- START / STOP run the chips (START then RDATAC per chip; they share one crystal, so
  one conversion epoch); while running, every DRDY of the chips' own crystal is serviced:
  the frame of that sample (``Ads1299Emulator.frames``) goes into the FIFO with the
  sequence number and the MCU's microsecond counter (its own :class:`Crystal`, plus the
  interrupt latency). Servicing is computed lazily at each host transaction for every
  DRDY since the last one: with no pop in between this is exactly what servicing on
  time gives (a full FIFO drops the newest frame, the sequence number still advances);
- READ_FIFO pops up to the requested count; the answer is kept and re-sent by every
  response read until the next request (so a host re-reads a corrupted answer).

Fault hooks (public, thread-safe): :meth:`corrupt_responses`, :meth:`corrupt_requests`
(bytes flipped on MISO / MOSI), :meth:`force_overflow` (the next frames find the FIFO
full, as when the host stalls for more than a second), :meth:`reset` (the MCU reboots:
FIFO and state lost, chips reset by their RESET pins, ``resets`` counter + 1),
:meth:`stop_answering` / :meth:`resume_answering` (MISO stuck: every read returns one
level; DRDY servicing goes on unless ``hung``). A chip's ``stick_drdy`` stops the
servicing (DRDY_TIMEOUT after 100 ms); once DRDY is back (seen at the next transaction)
the periods without it are counted as missed and skipped in the sequence.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from hil.sim.ads1299 import Ads1299Emulator
from hil.sim.cpu import SIM_CPU
from hil.sim.crystal import Crystal
from sensors import bridge_protocol as bp
from sensors.blocks import monotonic_ns

FIRMWARE = 0x0100
ISR_LATENCY_NS = 2_000  # DRDY falling edge to the MCU's timestamp
DRDY_TIMEOUT_NS = 100_000_000  # no DRDY for this long while running: FLAG_DRDY_TIMEOUT


class EegBridgeEmulator:
    """The bridge MCU in front of ``chips`` (each on its own chip select)."""

    def __init__(self, chips: Sequence[Ads1299Emulator], mcu: Crystal | None = None,
                 fifo_frames: int = 1024, uid: bytes = b"SIMBRDG1", seed: int = 0) -> None:
        if not 1 <= len(chips) <= bp.MAX_CHIPS:
            raise ValueError(f"chips: 1 to {bp.MAX_CHIPS}, got {len(chips)}")
        self.chips = list(chips)
        self.mcu = mcu or Crystal(ppm=-15.0, origin_host_ns=monotonic_ns(), origin_device_s=5.0)
        self.fifo_frames = int(fifo_frames)
        self.uid = uid[:8].ljust(8, b"\0")
        self._rng = np.random.default_rng(seed)
        self._lock = threading.RLock()
        self._width = bp.record_bytes(len(self.chips))
        self._ring = np.zeros((self.fifo_frames, self._width), dtype=np.uint8)
        self.resets = 0
        self.rx_crc_errors = 0
        self.transactions = 0
        self._corrupt_rsp = 0
        self._corrupt_req = 0
        self._force_overflow = 0
        self._answering = True
        self._stuck_level = 0x00
        self._hung = False
        self._boot()

    # ---- SpiBus

    def xfer(self, data: bytes) -> bytes:
        with SIM_CPU.charge():  # the MCU's work, done in the driver's thread
            return self._xfer(data)

    def _xfer(self, data: bytes) -> bytes:
        now = monotonic_ns()
        with self._lock:
            self.transactions += 1
            if not self._answering:
                return bytes([self._stuck_level]) * len(data)
            if data and data[0] == bp.SYNC_REQUEST:
                self._service(now)  # the answer is built now, from the FIFO as it is
                req = bytearray(data)
                if self._corrupt_req:
                    self._corrupt_req -= 1
                    self._flip(req)
                self._on_request(bytes(req), now)
                return bytes(len(data))
            out = bytearray(self._response[: len(data)].ljust(len(data), b"\0"))
            if self._corrupt_rsp and self._response:
                self._corrupt_rsp -= 1
                self._flip(out)
            return bytes(out)

    def close(self) -> None:
        pass

    # ---- fault hooks and inspection

    def corrupt_responses(self, count: int = 1) -> None:
        """Flip one bit in each of the next ``count`` response reads (MISO noise)."""
        with self._lock:
            self._corrupt_rsp += count

    def corrupt_requests(self, count: int = 1) -> None:
        """Flip one bit in each of the next ``count`` requests (MOSI noise)."""
        with self._lock:
            self._corrupt_req += count

    def force_overflow(self, frames: int) -> None:
        """The next ``frames`` DRDYs find the FIFO full: dropped, counted, sequence runs on."""
        with self._lock:
            self._force_overflow += frames

    def reset(self) -> None:
        """The MCU reboots (brown-out, watchdog): FIFO, run and pending answer are lost;
        its boot code pulses the chips' RESET pins; ``resets`` counts it."""
        with self._lock:
            self.resets += 1
            for chip in self.chips:
                line = chip.reset_line()
                line.set(0)
                line.set(1)
            self._boot()

    def stop_answering(self, level: int = 0x00, hung: bool = False) -> None:
        """MISO stuck at ``level`` (0x00: a dead MCU pulling low; 0xFF: a floating line).
        ``hung``: the MCU stopped too, so no DRDY is serviced meanwhile."""
        with self._lock:
            self._service(monotonic_ns())
            self._answering, self._stuck_level, self._hung = False, level & 0xFF, hung

    def resume_answering(self) -> None:
        with self._lock:
            now = monotonic_ns()
            if self._hung and self._running:
                # The DRDYs of the hang were never serviced: missed, not in the FIFO.
                k_now = self.chips[0].sample_index_at(now)
                missed = max(0, k_now + 1 - self._next_k)
                self._drdy_missed += missed
                self._seq += missed
                self._next_k += missed
            self._answering, self._hung = True, False

    @property
    def running(self) -> bool:
        return self._running

    @property
    def fifo_level(self) -> int:
        with self._lock:
            self._service(monotonic_ns())
            return self._level

    # ---- the firmware

    def _boot(self) -> None:
        self._running = False
        self._booted = True
        self._fs_hz = 0
        self._head = 0  # ring index of the oldest frame
        self._level = 0
        self._seq = 0
        self._next_k = 0
        self._overflow = 0
        self._drdy_missed = 0
        self._last_drdy_ns = 0
        self._saw_stuck = False
        self._response = b""

    def _us(self, t_ns: np.ndarray | int) -> np.ndarray:
        d = self.mcu.device_s(np.asarray(t_ns, dtype=np.int64) + ISR_LATENCY_NS)
        return (np.floor(d * 1e6).astype(np.int64)) & 0xFFFFFFFF

    def _service(self, now: int) -> None:
        """Every DRDY up to ``now`` not yet serviced: into the FIFO, or counted as dropped."""
        if not self._running or self._hung:
            return
        k_now = self.chips[0].sample_index_at(now)
        stuck = self.chips[0].drdy_stuck_after
        if stuck is not None:  # no DRDY edge, nothing for the interrupt to read
            k_now = min(k_now, stuck)
            self._saw_stuck = True
        elif self._saw_stuck:
            # DRDY is back (noticed at this transaction): the periods without an edge
            # were missed; the first edge seen is the newest sample's.
            self._saw_stuck = False
            missed = max(0, k_now - self._next_k)
            self._drdy_missed += missed
            self._seq += missed
            self._next_k += missed
        n = k_now + 1 - self._next_k
        if n <= 0:
            return
        k0 = self._next_k
        t, frames0 = self.chips[0].frames(k0, n, ready_k=k_now)
        parts = [frames0] + [c.frames(k0, n, ready_k=k_now)[1] for c in self.chips[1:]]
        frames = np.concatenate(parts, axis=1) if len(parts) > 1 else frames0
        seq = self._seq + np.arange(n, dtype=np.int64)
        forced = min(self._force_overflow, n)
        self._force_overflow -= forced
        free = self.fifo_frames - self._level
        take = max(0, min(n - forced, free))
        if take:
            rec = bp.pack_records(seq[:take], self._us(t[:take]), frames[:take])
            pos = (self._head + self._level + np.arange(take)) % self.fifo_frames
            self._ring[pos] = rec
            self._level += take
        self._overflow += n - take
        self._seq += n
        self._next_k += n
        self._last_drdy_ns = int(t[-1])

    def _status(self, now: int) -> bp.BridgeStatus:
        flags = (bp.FLAG_RUNNING if self._running else 0) | (
            bp.FLAG_BOOTED if self._booted else 0) | (
            bp.FLAG_FIFO_FULL if self._level >= self.fifo_frames else 0)
        if self._running and self._last_drdy_ns and now - self._last_drdy_ns > DRDY_TIMEOUT_NS:
            flags |= bp.FLAG_DRDY_TIMEOUT
        return bp.BridgeStatus(flags, self.resets, self._level, self._overflow,
                               self._drdy_missed, self._seq, int(self._us(now)),
                               self.rx_crc_errors)

    def _on_request(self, data: bytes, now: int) -> None:
        parsed = bp.parse_request(data)
        if parsed is None:
            self.rx_crc_errors += 1
            cmd = data[1] if len(data) > 1 else 0
            tag = data[2] if len(data) > 2 else 0
            self._response = bp.response(cmd, tag, bp.BAD_CRC)
            return
        cmd, tag, payload = parsed
        result, body = self._execute(cmd, payload, now)
        self._response = bp.response(cmd, tag, result, body)

    def _execute(self, cmd: int, payload: bytes, now: int) -> tuple[int, bytes]:
        if cmd == bp.IDENTIFY:
            ident = bp.Identity(bp.PROTOCOL_MAJOR, bp.PROTOCOL_MINOR, FIRMWARE, len(self.chips),
                                bp.TOPOLOGY_SEPARATE_CS, self.fifo_frames, 1_000_000, self.uid)
            return bp.OK, ident.pack()
        if cmd == bp.STATUS:
            return bp.OK, self._status(now).pack()
        if cmd == bp.CLEAR_FLAGS:
            self._booted = False
            return bp.OK, b""
        if cmd == bp.REG_XFER:
            if self._running:
                return bp.NOT_STOPPED, b""
            if not payload or payload[0] >= len(self.chips):
                return bp.BAD_ARGUMENT, b""
            return bp.OK, self.chips[payload[0]].xfer(payload[1:])
        if cmd == bp.SET_RATE:
            fs = int.from_bytes(payload[:2], "little") if len(payload) >= 2 else 0
            if fs not in (250, 500, 1000, 2000, 4000, 8000, 16000) or fs > self.fifo_frames:
                return bp.BAD_ARGUMENT, b""  # the FIFO must hold at least 1 s
            self._fs_hz = fs
            return bp.OK, b""
        if cmd == bp.START:
            if not self._running:
                if not self._fs_hz:
                    return bp.BAD_ARGUMENT, b""  # SET_RATE first
                self._head = self._level = 0
                self._seq = self._next_k = self._overflow = self._drdy_missed = 0
                for chip in self.chips:
                    chip.xfer(bytes([0x08]))  # START (the board's shared START pin)
                for chip in self.chips:
                    chip.xfer(bytes([0x10]))  # RDATAC
                self._running = True
                self._last_drdy_ns = now
            return bp.OK, int(self._us(now)).to_bytes(4, "little")
        if cmd == bp.STOP:
            if self._running:
                self._service(now)
                for chip in self.chips:
                    chip.xfer(bytes([0x11]))  # SDATAC
                    chip.xfer(bytes([0x0A]))  # STOP
                self._running = False
            return bp.OK, b""
        if cmd == bp.READ_FIFO:
            if len(payload) < 2:
                return bp.BAD_ARGUMENT, b""
            want = int.from_bytes(payload[:2], "little")
            n = min(want, self._level)
            pos = (self._head + np.arange(n)) % self.fifo_frames
            records = self._ring[pos]
            self._head = (self._head + n) % self.fifo_frames
            self._level -= n
            return bp.OK, bp.fifo_payload(self._status(now), records, want)
        return bp.BAD_COMMAND, b""

    def _flip(self, buf: bytearray) -> None:
        if buf:
            i = int(self._rng.integers(0, len(buf)))
            buf[i] ^= 1 << int(self._rng.integers(0, 8))
