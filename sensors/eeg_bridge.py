"""ADS1299 chips behind the EEG bridge (docs/eeg-bridge-protocol.md), over one SpiBus.

The bridge's microcontroller services every DRDY and keeps >= 1 s of frames; this driver
drains its FIFO in bursts every ``drain_s`` (10..50 ms), so no host deadline is tighter
than the FIFO's second. The chips are configured by the same code as in direct mode
(``sensors.ads1299.configure_chips``) through register pass-through (REG_XFER: each chip
looks like an SpiBus), and the frames are decoded by the same ``frames_to_block``.

Time. ``index`` and ``device_t`` come from the bridge's sequence number (one per DRDY
period since START): device time stays the sample index, the ADS1299's own conversion
clock, without jitter. The bridge's microsecond stamps are another crystal plus interrupt
latency, and the sync pulse is seen by the chip at sample instants anyway, so they would
not make the pulse pairs better; they place each sample on the host clock instead:
``host_t_ns = t_us * 1000 + offset``, a causal stamp within the quickest read's latency
of the truth, where a burst's arrival time would be 10..50 ms late.
That is what feeds the clock's coarse model. The offset (host ns - MCU ns) is
the least one seen, each older bound loosened by ``MAX_DRIFT_PPM`` of the time since: a
read the scheduler held up (its offset too large) does not move it, and it stays causal
as long as the two crystals differ by less than that. After a bridge reset the sequence (and so
``device_t``) restarts at 0: the clock keeper takes that as a device reset (new
segment); ``index`` runs on across it, advanced by the host time that passed.

Link faults, all counted in ``counters`` and none raised out of ``poll``:

- a response with a wrong CRC is read again (the bridge re-sends its answer until the
  next request): ``errors`` and ``extra["crc_errors"]``; after ``retries`` bad copies the
  exchange is abandoned (``resyncs``), a READ_FIFO's frames then show as a sequence gap;
- a request the bridge refused for its CRC, or a stale answer: sent again (``retries``);
- sequence gaps (FIFO overflow, missed DRDYs, abandoned reads) are ``dropped``; the
  bridge's own counters say why (``fifo_overflow``, ``bridge_drdy_missed``);
- a bridge reset (BOOTED flag, its reset counter, or the sequence restarting) is
  recovered by running the register plan again and restarting: ``bridge_resets``;
- no answer within ``response_timeout_s``: ``timeouts``; the link is then probed with
  IDENTIFY at a growing back-off (``backoff_s`` doubling to ``backoff_max_s``) while
  ``poll`` keeps returning within its timeout; :attr:`stalled` is true meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sensors import bridge_protocol as bp
from sensors.ads1299 import (
    Ads1299Settings,
    configure_chips,
    frames_to_block,
    stream_info,
)
from sensors.blocks import SampleBlock, StreamCounters, monotonic_ns
from sensors.errors import DeviceError, DeviceTimeout, WrongDevice
from sensors.seams import SpiBus

U32 = 1 << 32
TURNAROUND_NS = 50_000  # request CS high -> response read, at least (the protocol's)
OFFSET_SEED_READS = 5  # STATUS reads at START that seed the host - MCU offset
MAX_DRIFT_PPM = 500.0  # MCU crystal vs host clock, at most (the offset filter's slack)


@dataclass(frozen=True)
class LinkSettings:
    """How the host drives the link."""

    drain_s: float = 0.02  # one burst read every this often (10..50 ms)
    response_timeout_s: float = 0.02  # no sync byte for this long: the bridge is not answering
    retries: int = 3  # bad copies of one answer (or refused requests) before giving up
    max_xfer_bytes: int = 4096  # spidev's default buffer: a READ_FIFO answer fits in it
    backoff_s: float = 0.05  # first re-probe after a timeout, doubling ...
    # ... up to this: a link back within 0.8 s is drained before the 1-s FIFO fills.
    backoff_max_s: float = 0.2

    def __post_init__(self) -> None:
        if not 0.005 <= self.drain_s <= 0.1:
            raise ValueError(f"drain_s: 0.005..0.1 s, not {self.drain_s!r}")


class _PassThrough:
    """One chip behind the bridge as an SpiBus: every xfer is one REG_XFER."""

    def __init__(self, bridge: EegBridge, chip: int) -> None:
        self._bridge, self._chip = bridge, chip

    def xfer(self, data: bytes) -> bytes:
        return self._bridge.exchange(bp.REG_XFER, bytes([self._chip]) + bytes(data), len(data))

    def close(self) -> None:
        pass


class EegBridge:
    """The ``eeg`` stream from ADS1299 chips behind the bridge."""

    def __init__(self, bus: SpiBus, settings: Ads1299Settings,
                 link: LinkSettings | None = None) -> None:
        self._bus = bus
        self.settings = settings
        self.link = link or LinkSettings()
        self.info = stream_info(settings)
        self._scale = settings.uv_per_count()
        self.counters = StreamCounters(extra={
            "crc_errors": 0, "rejected": 0, "stale": 0, "not_ready": 0, "timeouts": 0,
            "seq_gap": 0, "fifo_overflow": 0, "bridge_drdy_missed": 0, "bridge_resets": 0,
            "reset_gap": 0, "bad_header": 0, "drdy_timeouts": 0, "max_fifo_level": 0,
        })
        self.identity: bp.Identity | None = None
        self.chip_ids: list[int] = []
        self._tag = 0
        # One exchange at a time: the runtime's pump thread polls while another thread
        # may call stop(); a request and its answer must not interleave with another's.
        self._lock = threading.RLock()
        self._period_ns = 1e9 / settings.fs_hz
        self._per_read = bp.frames_per_read(self.link.max_xfer_bytes, settings.n_chips)
        self._opened = False
        self._running = False
        self._down = False  # the bridge stopped answering
        self._drdy_stuck = False  # the bridge says DRDY stopped
        self._next_probe_ns = 0
        self._backoff_s = self.link.backoff_s
        self._next_drain_ns = 0
        self._known_resets: int | None = None
        self._expect_seq = 0  # next sequence number of this run
        self._index_base = 0  # index = base + seq
        self._last_index = -1
        self._last_host_ns = 0
        self._pending: list[SampleBlock] = []
        self._parts: list[tuple[np.ndarray, ...]] = []
        self._last_overflow = 0
        self._last_missed = 0
        self._offset_ns: float | None = None  # host ns - MCU ns, least causal bound
        self._offset_at = 0
        self._mcu_ns = 0  # the MCU counter unwrapped, in ns, at the last answer
        self._mcu_us = 0

    # ---- lifecycle

    def open(self) -> None:
        """Identify the bridge, configure every chip through it, set the rate."""
        try:
            self._open()
        except bp.LinkError as exc:
            raise DeviceError(f"eeg bridge: the link keeps failing while opening ({exc})"
                              ) from None

    def _open(self) -> None:
        try:
            ident = bp.Identity.unpack(self.exchange(bp.IDENTIFY, b"", bp.IDENTITY.size))
        except DeviceTimeout:
            raise DeviceTimeout(
                "eeg bridge: no answer on SPI (check power, wiring, spi_bus/spi_devices and "
                "that the bridge firmware runs)") from None
        except ValueError as exc:
            raise WrongDevice(f"eeg bridge: not an EEG bridge answering ({exc})") from None
        if ident.protocol_major != bp.PROTOCOL_MAJOR:
            raise WrongDevice(f"eeg bridge: protocol {ident.protocol_major}.{ident.protocol_minor}"
                              f", this driver speaks {bp.PROTOCOL_MAJOR}.x")
        if ident.n_chips != self.settings.n_chips:
            raise WrongDevice(
                f"eeg bridge: has {ident.n_chips} chip(s) ({8 * ident.n_chips} channels), the "
                f"config names {self.settings.n_channels} channels")
        if ident.topology != bp.TOPOLOGY_SEPARATE_CS:
            raise WrongDevice("eeg bridge: daisy-chained chips (topology 1); this driver "
                              "configures chips on separate chip selects only")
        if ident.fifo_frames < self.settings.fs_hz:
            raise WrongDevice(f"eeg bridge: FIFO of {ident.fifo_frames} frames holds less than "
                              f"1 s at {self.settings.fs_hz} Hz")
        self.identity = ident
        self._configure()
        self._opened = True

    def start(self) -> None:
        if not self._opened:
            raise DeviceError("eeg: start() before open()")
        try:
            self._start_run(first=True)
        except bp.LinkError as exc:
            raise DeviceError(f"eeg bridge: START failed ({exc})") from None

    def poll(self, timeout_s: float) -> list[SampleBlock]:
        """Sleep to the next drain (at most ``timeout_s``), then drain the FIFO."""
        out, self._pending = self._pending, []
        if out:
            return out
        if not self._running:  # stopped: nothing will come, so wait as allowed, not spin
            time.sleep(max(timeout_s, 0.0))
            return []
        now = monotonic_ns()
        due = self._next_probe_ns if self._down else self._next_drain_ns
        wait_ns = min(due - now, int(max(timeout_s, 0.0) * 1e9))
        if wait_ns > 0:
            time.sleep(wait_ns / 1e9)
        if monotonic_ns() < due:
            return []
        with self._lock:
            if not self._running:
                return self._pending_out()
            if self._down:
                self._probe()
                return self._pending_out()
            self._next_drain_ns = max(due + int(self.link.drain_s * 1e9), monotonic_ns())
            self._guarded(self._drain)
            return self._pending_out()

    @property
    def stalled(self) -> bool:
        """True while the bridge does not answer or reports that DRDY stopped."""
        return self._running and (self._down or self._drdy_stuck)

    def stop(self) -> None:
        """STOP; what the FIFO still holds comes out of the next poll."""
        with self._lock:
            if self._running and not self._down:
                self._running = False
                self._guarded(lambda: (self.exchange(bp.STOP, b"", 0), self._drain(),
                                       self._count_tail()))
            self._running = False

    def _count_tail(self) -> None:
        """Frames dropped after the last one read (a full FIFO at STOP) leave no gap to
        see in the sequence: the bridge's next_seq says how many."""
        status = bp.BridgeStatus.unpack(self.exchange(bp.STATUS, b"", bp.STATUS_WORD.size))
        self._note_status(status)
        tail = (status.next_seq - self._expect_seq) % U32
        if 0 < tail < U32 // 2:
            self.counters.dropped += tail
            self.counters.extra["seq_gap"] += tail
            self._expect_seq += tail

    def close(self) -> None:
        if self._running:
            self.stop()
        self._bus.close()
        self._opened = False

    # ---- one exchange

    def exchange(self, command: int, payload: bytes, answer_len: int) -> bytes:
        """Send a request, read its answer; retries corrupted copies and refused requests.

        Raises DeviceTimeout when nothing answers within ``response_timeout_s``, and
        LinkError (CrcMismatch / Rejected / Stale) when retries are exhausted.
        """
        with self._lock:
            return self._exchange(command, payload, answer_len)

    def _exchange(self, command: int, payload: bytes, answer_len: int) -> bytes:
        c = self.counters
        n_read = bp.response_bytes(answer_len)
        zeros = bytes(n_read)
        err: bp.LinkError | None = None
        for _ in range(self.link.retries + 1):
            self._tag = (self._tag + 1) & 0xFF
            tag = self._tag
            self._bus.xfer(bp.request(command, payload, tag))
            sent = monotonic_ns()
            deadline = sent + int(self.link.response_timeout_s * 1e9)
            while monotonic_ns() - sent < TURNAROUND_NS:
                pass  # the protocol's 50 us before a response read (sleep is far coarser)
            copies = 0
            while True:
                try:
                    return bp.parse_response(self._bus.xfer(zeros), command, tag)
                except bp.NotReady:
                    c.extra["not_ready"] += 1
                    if monotonic_ns() > deadline:
                        raise DeviceTimeout(
                            f"eeg bridge: no answer to {bp.COMMANDS.get(command)} within "
                            f"{self.link.response_timeout_s * 1e3:.0f} ms") from None
                    time.sleep(0.0001)
                except bp.CrcMismatch as exc:
                    c.errors += 1
                    c.extra["crc_errors"] += 1
                    copies += 1
                    err = exc
                    if copies > self.link.retries:
                        raise
                except bp.Rejected as exc:
                    err = exc
                    if exc.result != bp.BAD_CRC:
                        raise
                    c.errors += 1
                    c.extra["rejected"] += 1
                    break  # our request arrived corrupted: send it again
                except bp.Stale as exc:
                    err = exc
                    c.extra["stale"] += 1
                    break  # our request was lost: send it again
        assert err is not None
        raise err

    # ---- internals

    def _guarded(self, action: Callable[[], object]) -> None:
        """Run a link action; turn its failures into counters, never exceptions."""
        try:
            action()
        except DeviceTimeout:
            self.counters.extra["timeouts"] += 1
            self._down = True
            self._backoff_s = self.link.backoff_s
            self._next_probe_ns = monotonic_ns() + int(self._backoff_s * 1e9)
        except bp.LinkError:
            self.counters.resyncs += 1  # an abandoned exchange; lost frames show as a gap

    def _probe(self) -> None:
        try:
            self.exchange(bp.IDENTIFY, b"", bp.IDENTITY.size)
            status = bp.BridgeStatus.unpack(self.exchange(bp.STATUS, b"", bp.STATUS_WORD.size))
        except (DeviceTimeout, bp.LinkError):
            self._backoff_s = min(self._backoff_s * 2, self.link.backoff_max_s)
            self._next_probe_ns = monotonic_ns() + int(self._backoff_s * 1e9)
            return
        self._down = False
        self._next_drain_ns = monotonic_ns()
        if self._was_reset(status):
            self._guarded(self._recover)
        else:
            self._guarded(self._drain)

    def _configure(self) -> None:
        buses = [_PassThrough(self, i) for i in range(self.settings.n_chips)]
        self.chip_ids = configure_chips(buses, self.settings)
        self.exchange(bp.SET_RATE, int(self.settings.fs_hz).to_bytes(2, "little"), 0)
        self.exchange(bp.CLEAR_FLAGS, b"", 0)
        status = bp.BridgeStatus.unpack(self.exchange(bp.STATUS, b"", bp.STATUS_WORD.size))
        self._known_resets = status.resets

    def _start_run(self, first: bool) -> None:
        self.exchange(bp.START, b"", 4)
        self._running = True
        self._down = False
        self._expect_seq = 0
        self._last_overflow = self._last_missed = 0
        self._offset_ns = None  # a new run (or a rebooted MCU): its counter anew
        for _ in range(OFFSET_SEED_READS):  # the least of a few quick reads: a first read
            # held up by the scheduler would stamp the first bursts late
            status = bp.BridgeStatus.unpack(self.exchange(bp.STATUS, b"", bp.STATUS_WORD.size))
            self._mcu_now_ns(status.now_us, monotonic_ns())
        if first:
            self._index_base = self._last_index + 1  # a new run: the index runs on
        else:
            # After a reset: the samples the host time since the last one says were lost.
            gap = round((monotonic_ns() - self._last_host_ns) / self._period_ns)
            self._index_base = self._last_index + max(gap, 1)
        self._next_drain_ns = monotonic_ns() + int(self.link.drain_s * 1e9)

    def _recover(self) -> None:
        """The bridge rebooted: configure the chips again and restart the run."""
        self.counters.extra["bridge_resets"] += 1
        self._configure()
        before = self._last_index
        self._start_run(first=False)
        lost = self._index_base - before - 1
        if before >= 0 and lost > 0:
            self.counters.dropped += lost
            self.counters.extra["reset_gap"] += lost

    def _was_reset(self, s: bp.BridgeStatus) -> bool:
        return s.booted or (self._known_resets is not None and s.resets != self._known_resets) \
            or (self._running and not s.running)

    def _drain(self) -> None:
        """STATUS, then READ_FIFO in chunks until what was there at STATUS time is read."""
        try:
            self._drain_chunks()
        finally:
            self._flush()

    def _drain_chunks(self) -> None:
        status = bp.BridgeStatus.unpack(self.exchange(bp.STATUS, b"", bp.STATUS_WORD.size))
        if self._was_reset(status):
            self._recover()
            return
        self._note_status(status)
        todo = status.fifo_level
        chips = self.settings.n_chips
        while todo > 0:
            want = min(todo, self._per_read)
            payload = self.exchange(bp.READ_FIFO, want.to_bytes(2, "little"),
                                    bp.fifo_payload_bytes(want, chips))
            host_ns = monotonic_ns()
            st, seq, t_us, frames = bp.decode_fifo(payload, chips)
            if self._was_reset(st):
                self._recover()
                return
            self._note_status(st)
            if seq.size:
                self._take(seq, t_us, frames, st.now_us, host_ns)
            if seq.size < want:
                break
            todo -= seq.size

    def _note_status(self, s: bp.BridgeStatus) -> None:
        x = self.counters.extra
        x["fifo_overflow"] += max(0, s.overflow_frames - self._last_overflow)
        x["bridge_drdy_missed"] += max(0, s.drdy_missed - self._last_missed)
        self._last_overflow, self._last_missed = s.overflow_frames, s.drdy_missed
        x["max_fifo_level"] = max(x["max_fifo_level"], s.fifo_level)
        self._drdy_stuck = bool(s.flags & bp.FLAG_DRDY_TIMEOUT)
        if self._drdy_stuck:
            x["drdy_timeouts"] += 1

    def _take(self, seq32: np.ndarray, t_us: np.ndarray, frames: np.ndarray, now_us: int,
              host_ns: int) -> None:
        # Unwrap the 32-bit sequence against the one expected (2^32 periods: 50 days at 1 kHz).
        seq = self._expect_seq + ((seq32 - self._expect_seq) % U32)
        seq = np.where(seq - self._expect_seq >= U32 // 2, seq - U32, seq)
        new = seq >= self._expect_seq  # a copy of frames already taken is not taken twice
        if not new.all():
            seq, t_us, frames = seq[new], t_us[new], frames[new]
            if not seq.size:
                return
        gaps = int(seq[-1] - self._expect_seq + 1 - seq.size)
        if gaps:
            self.counters.dropped += gaps
            self.counters.extra["seq_gap"] += gaps
        self._expect_seq = int(seq[-1]) + 1
        now_mcu_ns = self._mcu_now_ns(now_us, host_ns)
        host_t = (now_mcu_ns - ((now_us - t_us) % U32) * 1000 + self._offset_ns).astype(np.int64)
        index = self._index_base + seq
        self._last_index = int(index[-1])
        self._last_host_ns = int(host_t[-1])
        self._parts.append((index, seq, host_t, frames))

    def _mcu_now_ns(self, now_us: int, host_ns: int) -> int:
        """Unwrap the MCU's 32-bit microseconds and update the host - MCU offset bound."""
        if self._offset_ns is None:
            self._mcu_ns = now_us * 1000
        else:
            self._mcu_ns += ((now_us - self._mcu_us) % U32) * 1000
        self._mcu_us = now_us
        bound = host_ns - self._mcu_ns  # >= the true offset: the answer was built before
        if self._offset_ns is None:
            self._offset_ns = float(bound)
        else:
            slack = MAX_DRIFT_PPM * 1e-6 * (host_ns - self._offset_at)
            self._offset_ns = min(self._offset_ns + slack, float(bound))
        self._offset_at = host_ns
        return self._mcu_ns

    def _flush(self) -> None:
        """What this drain read, as one block."""
        parts, self._parts = self._parts, []
        if not parts:
            return
        index, seq, host_t, frames = (np.concatenate(x) for x in zip(*parts, strict=True))
        block = frames_to_block(frames, index, seq, host_t, self.settings, self._scale,
                                self.counters)
        if block is not None:
            self._pending.append(block)

    def _pending_out(self) -> list[SampleBlock]:
        out, self._pending = self._pending, []
        return out

