"""An OpenBCI Cyton (optionally with Daisy), emulated behind a real pseudo-terminal.

It speaks the board's serial protocol (see :mod:`sensors.cyton`) on the master side of a
pty, in its own thread; the driver opens ``port`` (a stable symlink to the pty slave,
like a udev name) with pyserial, as on the rig. The ADS1299 chips sample on the board's
own :class:`hil.sim.crystal.Crystal` at ``fs_hz``; their input is
:class:`hil.sim.eeg_model.EegModel` (or the internal test signal, or a shorted input),
quantised as the chip does at each channel's gain. Packet ``k`` (k = 0 after ``b``)
carries sample number ``k % 256``; with the Daisy attached, odd packets carry the
board chip's channels and even ones the Daisy's, each the average of the chip's current
and previous sample (integer, truncated as the firmware's C division). In digital read
mode (``/3``) aux byte 0 is the D11 pin, where the trigger harness's sync net is wired
(sampled at each sample instant); otherwise the aux bytes are the accelerometer at rest
(0, 0, 1 g), footer ``0xC0``.

Truth: every packet made is recorded (bounded ring) with the input-referred microvolts
it stands for (the average of the two samples with the Daisy) and whether it was sent.

Faults (public hooks): :meth:`drop_packets` (lost on the radio: the sample number runs
on), :meth:`inject_garbage` (stray bytes between packets), :meth:`break_framing` (a bad
header or footer byte), :meth:`corrupt_counter` (one bad sample-number byte),
:meth:`stop_answering`, :meth:`unplug` / :meth:`replug` (the dongle pulled), ``identity="other"``
(a device that is not an OpenBCI board).
"""

from __future__ import annotations

import math
import re

import numpy as np

from hil.sim.ads1299 import EegSource, EegSourceFactory, simulated_eeg, test_signal_uv
from hil.sim.crystal import Crystal
from hil.sim.pty_device import PtyDevice
from hil.sim.scenario import Scenario
from hil.sim.wire import SYNC, Wire
from sensors.blocks import monotonic_ns
from sensors.cyton import (
    CHANNEL_KEYS,
    FOOTER_ACCEL,
    FOOTER_RAW_AUX,
    GAIN_CODES,
    HEADER,
    PACKET_BYTES,
    RATE_CODES,
)

FULL_SCALE = 2**23 - 1
VREF_UV = 4.5e6
SHORTED_NOISE_UV = 0.15
ACCEL_REST = (0, 0, 8000)  # 1 g on Z at 0.002 / 16 g per count
DEFAULT_CHANNELS = ("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2",
                    "F3", "F4", "F7", "F8", "T7", "T8", "P3", "P4")
GAIN_OF_CODE = {v: k for k, v in GAIN_CODES.items()}
RATE_OF_CODE = {v: k for k, v in RATE_CODES.items()}
INPUT_OF_CODE = {0: "normal", 1: "shorted", 5: "test"}
OUTBOX_BYTES = 64 * 1024  # the radio's and dongle's buffers, together


class CytonEmulator(PtyDevice):
    """The board: answers commands, streams packets paced on its own crystal."""

    def __init__(self, crystal: Crystal, wire: Wire | None = None,
                 scenario: Scenario | None = None, seed: int = 0, daisy: bool = False,
                 channels: tuple[str, ...] = DEFAULT_CHANNELS, t0_ns: int | None = None,
                 identity: str = "ok", send_period_s: float = 0.01,
                 truth_capacity: int = 1 << 17,
                 source: EegSourceFactory | None = None) -> None:
        super().__init__(send_period_s)
        self.crystal = crystal
        self.wire = wire
        self.daisy = daisy
        self.t0_ns = monotonic_ns() if t0_ns is None else t0_ns
        self.identity = identity
        self._names = tuple(channels)[:16]
        self._scenario = scenario
        self._seed = seed
        self._source = source or simulated_eeg  # the electrodes' signal (a playback, say)
        self._rng = np.random.default_rng([seed, 11])
        self._rx = bytearray()
        # board state (what a soft reset restores)
        self.fs_hz = 250
        self._reset_board()
        # faults
        self._drop_n = 0
        self._garbage_n = 0
        self._framing_n = 0
        self._counter_n = 0
        # truth ring, by packet index k
        self._cap = truth_capacity
        self._t_k = np.full(truth_capacity, -1, dtype=np.int64)
        self._t_uv = np.zeros((truth_capacity, 8))
        self._t_sent = np.zeros(truth_capacity, dtype=bool)
        self.packets_made = 0
        self.packets_sent = 0
        self._serve(prefix="sim_cyton_", name="ttyCYTON0", thread_name="sim-cyton")

    # ------------------------------------------------------------ faults
    def drop_packets(self, n: int) -> None:
        """The next ``n`` packets are lost on the radio (the sample number runs on)."""
        with self._lock:
            self._drop_n += int(n)

    def inject_garbage(self, n_bytes: int) -> None:
        """``n_bytes`` stray bytes (never 0xA0) go out before the next packet."""
        with self._lock:
            self._garbage_n += int(n_bytes)

    def break_framing(self, n: int) -> None:
        """The next ``n`` packets go out with a bad header or footer byte."""
        with self._lock:
            self._framing_n += int(n)

    def corrupt_counter(self, n: int) -> None:
        """The next ``n`` packets (one in three, so neighbours stay good) carry a wrong
        sample-number byte."""
        with self._lock:
            self._counter_n += int(n)

    def stop_answering(self) -> None:
        with self._lock:
            self._answering = False

    def _on_plug(self) -> None:
        self._rx.clear()

    # ------------------------------------------------------------ truth
    def truth(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(microvolts (n, 8), known (n,), sent (n,)) of packets ``k``."""
        k = np.asarray(k, dtype=np.int64)
        with self._lock:
            slot = k % self._cap
            return self._t_uv[slot].copy(), self._t_k[slot] == k, self._t_sent[slot].copy()

    @property
    def streaming(self) -> bool:
        return self._streaming

    # ------------------------------------------------------------ board state
    def _reset_board(self) -> None:
        self._streaming = False
        self.attached16 = self.daisy
        self.digital = False
        self.fs_hz = 250
        self.gain = [24] * 16
        self.inputs = ["normal"] * 16
        self.config2 = 0x00  # 1x slow test signal
        self._k = 0
        self._prev_uv: np.ndarray | None = None

    def _model(self) -> EegSource:
        return self._source(self._names, self.fs_hz, self._seed, self._scenario)

    # ------------------------------------------------------------ the MCU loop
    def _on_bytes(self, data: bytes) -> None:
        self._rx += data
        self._commands()

    def _on_tick(self) -> None:
        self._stream()

    def _reply(self, text: str) -> None:
        self._outbox += text.encode() + b"$$$"

    def _commands(self) -> None:
        while self._rx:
            c = chr(self._rx[0])
            need = {"x": 9, "~": 2, "/": 2}.get(c, 1)
            if len(self._rx) < need:
                return
            cmd = bytes(self._rx[:need]).decode("ascii", errors="replace")
            del self._rx[:need]
            self._command(cmd)

    def _command(self, cmd: str) -> None:  # one branch per board command
        if cmd == "v":
            self._reset_board()
            if self.identity == "other":
                self._reply("ACME serial thing v1\n")
                return
            daisy = "On Daisy ADS1299 Device ID: 0x3E\n" if self.daisy else ""
            self._reply("OpenBCI V3 8-16 channel\nOn Board ADS1299 Device ID: 0x3E\n"
                        f"{daisy}LIS3DH Device ID: 0x33\nFirmware: v3.1.2\n")
        elif cmd == "b" and not self._streaming:
            self._streaming = True
            self._k = 0
            self._prev_uv = None
            self._run_model = self._model()
            self._epoch_dev_s = float(self.crystal.device_s_at(monotonic_ns()))
        elif cmd == "s":
            if self._streaming:
                self._stream()
            self._streaming = False
        elif cmd == "C":
            if self.daisy:
                self.attached16 = True
                self._reply("daisy attached16")
            else:
                self._reply("no daisy to attach!8")
        elif cmd == "c":
            self.attached16 = False
            self._reply("daisy removed8" if self.daisy else "8")
        elif cmd.startswith("~"):
            code = cmd[1]
            if code != "~":
                if self._streaming or not code.isdigit() or int(code) not in RATE_OF_CODE:
                    self._reply(f"Failure: sample rate code {code!r}")
                    return
                self.fs_hz = RATE_OF_CODE[int(code)]
            self._reply(f"Success: Sample rate is {self.fs_hz}Hz")
        elif cmd.startswith("/"):
            mode = {"0": "default", "3": "digital"}.get(cmd[1])
            if mode is None:
                self._reply(f"Failure: board mode {cmd[1]!r} not emulated")
                return
            self.digital = mode == "digital"
            self._reply(f"Success: {mode}")
        elif cmd.startswith("x"):
            m = re.fullmatch(r"x(.)([01])([0-6])([0-7])([01])([01])([01])X", cmd)
            if m is None or m.group(1) not in CHANNEL_KEYS or int(m.group(4)) not in INPUT_OF_CODE:
                self._reply("Failure: too few chars")
                return
            ch = CHANNEL_KEYS.index(m.group(1))
            self.gain[ch] = GAIN_OF_CODE[int(m.group(3))]
            self.inputs[ch] = "off" if m.group(2) == "1" else INPUT_OF_CODE[int(m.group(4))]
            self._reply(f"Success: Channel set for {ch + 1}")
        elif cmd in "-=[]p0":
            if cmd == "0":
                self.inputs = ["shorted"] * 16
            else:
                self.inputs = ["test"] * 16
                self.config2 = {"-": 0b000, "=": 0b001, "[": 0b100, "]": 0b101, "p": 0b011}[cmd]
            self._reply("Success: Configured internal test signal.")
        # anything else: the firmware ignores it silently

    # ------------------------------------------------------------ streaming
    def _inputs_uv(self, k: np.ndarray, t_ns: np.ndarray) -> np.ndarray:
        """Input-referred microvolts of every channel (16) at ADS samples ``k``."""
        eeg = self._run_model.next(len(k), (t_ns - self.t0_ns) * 1e-9)
        out = np.zeros((len(k), 16))
        out[:, : eeg.shape[1]] = eeg
        for ch, mux in enumerate(self.inputs):
            if mux == "test":
                out[:, ch] = test_signal_uv(k, self.config2, self.fs_hz)
            elif mux in ("shorted", "off"):
                out[:, ch] = self._rng.normal(0.0, SHORTED_NOISE_UV, len(k))
        return out

    def _counts(self, uv: np.ndarray) -> np.ndarray:
        lsb = VREF_UV / FULL_SCALE / np.asarray(self.gain, dtype=np.float64)
        return np.clip(np.rint(uv / lsb), -FULL_SCALE - 1, FULL_SCALE).astype(np.int64)

    def _stream(self) -> None:
        """Make every packet due by now on the board's clock; queue those that survive."""
        if not (self._streaming and self._answering):
            return
        now_dev = self.crystal.device_s_at(monotonic_ns())
        due = math.floor((now_dev - self._epoch_dev_s) * self.fs_hz)  # sample k at (k+1)/fs
        n = min(due - self._k, 5 * self.fs_hz)
        if n <= 0:
            return
        k0 = self._k
        kk = np.arange(k0, k0 + n, dtype=np.int64)
        t_ns = self.crystal.host_ns(self._epoch_dev_s + (kk + 1) / self.fs_hz)
        new = self._inputs_uv(kk, t_ns)
        # The sample before the batch too: the Daisy's averages need it (none before k = 0:
        # the average is the sample itself).
        prev = new[:1] if self._prev_uv is None else self._prev_uv[None, :]
        uv = np.concatenate([prev, new])
        self._prev_uv = new[-1].copy()
        counts = self._counts(uv)
        if self.attached16:
            board = kk % 2 == 1
            cur = np.where(board[:, None], counts[1:, :8], counts[1:, 8:])
            prev = np.where(board[:, None], counts[:-1, :8], counts[:-1, 8:])
            data = np.trunc((cur + prev) / 2).astype(np.int64)  # C's int division
            true_uv = np.where(board[:, None], (uv[1:, :8] + uv[:-1, :8]) / 2,
                               (uv[1:, 8:] + uv[:-1, 8:]) / 2)
        else:
            data = counts[1:, :8]
            true_uv = uv[1:, :8]
        if self.digital and self.wire is not None:
            d11 = self.wire[SYNC].value_at(t_ns) & 1
        else:
            d11 = np.zeros(n, dtype=np.int64)
        self._k += n
        self.packets_made += n
        rows = self._encode(kk, data, d11)
        drop = min(self._drop_n, n)
        self._drop_n -= drop
        room = max(OUTBOX_BYTES - len(self._outbox), 0) // PACKET_BYTES if self._plugged else 0
        sent = np.zeros(n, dtype=bool)
        sent[drop : drop + min(n - drop, room)] = True
        self._record(kk, true_uv, sent)
        self._faults(rows, sent)
        self.packets_sent += int(sent.sum())
        self._outbox += rows[sent].tobytes()

    def _encode(self, k: np.ndarray, data: np.ndarray, d11: np.ndarray) -> np.ndarray:
        n = len(k)
        rows = np.zeros((n, PACKET_BYTES), dtype=np.uint8)
        rows[:, 0] = HEADER
        rows[:, 1] = k % 256
        u = data & 0xFFFFFF
        rows[:, 2:26] = np.stack([(u >> 16) & 0xFF, (u >> 8) & 0xFF, u & 0xFF],
                                 axis=-1).reshape(n, 24)
        if self.digital:
            rows[:, 26] = d11
            rows[:, 32] = FOOTER_RAW_AUX
        else:
            acc = np.array(ACCEL_REST, dtype=np.int16).astype(">i2").view(np.uint8)
            rows[:, 26:32] = acc
            rows[:, 32] = FOOTER_ACCEL
        return rows

    def _faults(self, rows: np.ndarray, sent: np.ndarray) -> None:
        idx = np.flatnonzero(sent)
        if self._framing_n and idx.size:
            hit = idx[: self._framing_n]
            self._framing_n -= hit.size
            rows[hit[::2], 0] = 0x55  # a bad header
            rows[hit[1::2], 32] = 0x3C  # a bad footer
        if self._counter_n and idx.size > 2:
            hit = idx[1:-1:3][: self._counter_n]
            self._counter_n -= hit.size
            rows[hit, 1] ^= 0x5A
        if self._garbage_n:
            junk = self._rng.integers(0, 256, self._garbage_n, dtype=np.uint8)
            junk[junk == HEADER] = 0x5A
            self._outbox += junk.tobytes()
            self._garbage_n = 0

    def _record(self, k: np.ndarray, uv: np.ndarray, sent: np.ndarray) -> None:
        slot = k % self._cap
        self._t_k[slot] = k
        self._t_uv[slot] = uv
        self._t_sent[slot] = sent
