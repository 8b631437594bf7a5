"""ADS1299 EEG front end (8 channels per chip, one or two chips) over the SPI seam.

The driver talks only through ``sensors.seams``: one :class:`SpiBus` per chip (each chip
on its own chip select, "multiple readback" mode), one :class:`EdgeInput` for DRDY of
the first chip, and optional RESET / START :class:`OutputLine` pins (START wired to both
chips). Register facts follow the TI datasheet (SBAS499): opcodes, a 27-byte frame of a
24-bit status word (``1100``, LOFF_STATP, LOFF_STATN, GPIO[7:4]) then 8 x 24-bit two's
complement MSB first, and an LSB of ``VREF / (2^23 - 1) / gain``.

Timing model (why ``poll`` looks the way it does): the chip holds ONE frame, overwritten at
every DRDY. Each DRDY edge is one sample; when several edges are pending at a wake only the
newest frame can still be read, so the older ones are counted as dropped ("overwritten").
Edges the kernel lost show up as a jump in the gpiod sequence number or as a gap of more
than 1.5 sample periods between edge timestamps ("missed_drdy"). A frame read that ends
later than 0.9 sample periods after its edge may already belong to the next sample (or be
torn mid-update on real silicon), so it is discarded and counted ("late_read"). The sample
index advances by the true number of DRDY periods, so every loss is a visible index gap.

Trigger bits: the sync pulse is wired to the chip's GPIO4 pin (configured as input). The
status word's low nibble is GPIO[7:4] of the GPIO register, i.e. status bit 3 = GPIO4,
bit 2 = GPIO3, bit 1 = GPIO2, bit 0 = GPIO1. ``SampleBlock.trigger`` bit 0 = GPIO4 (sync),
bit 1 = GPIO1, bit 2 = GPIO2, bit 3 = GPIO3 (chip 0).

``SampleBlock.status``: for one chip, the raw 24-bit status word. For two or more chips,
chip 0's 24-bit word with chip 1's LOFF_STATP byte in bits 31:24 (chip 1's LOFF_STATN does not fit
a uint32; with SRB1 all N inputs share the reference so chip 0's N bits tell the same).
:func:`lead_off_from_block_status` decodes either layout.

DRDY stuck: ``poll`` returns ``[]`` and :attr:`Ads1299.stalled` turns true once no DRDY
edge came for ``stall_after_s`` while started; each poll that ends empty while stalled adds
to ``counters.extra["drdy_timeouts"]``. :meth:`Ads1299.check` raises
:class:`~sensors.errors.DeviceTimeout` then, for callers that prefer an exception.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sensors.blocks import (
    STATUS_ADS1299,
    Edge,
    SampleBlock,
    StreamCounters,
    StreamInfo,
    monotonic_ns,
)
from sensors.errors import DeviceError, DeviceTimeout, WrongDevice
from sensors.seams import EdgeInput, OutputLine, SpiBus

# Opcodes (datasheet table "SPI command definitions").
WAKEUP, STANDBY, RESET, START, STOP = 0x02, 0x04, 0x06, 0x08, 0x0A
RDATAC, SDATAC, RDATA = 0x10, 0x11, 0x12
RREG, WREG = 0x20, 0x40

# Register map.
ID, CONFIG1, CONFIG2, CONFIG3, LOFF = 0x00, 0x01, 0x02, 0x03, 0x04
CH1SET = 0x05  # .. CH8SET 0x0C
BIAS_SENSP, BIAS_SENSN, LOFF_SENSP, LOFF_SENSN, LOFF_FLIP = 0x0D, 0x0E, 0x0F, 0x10, 0x11
LOFF_STATP, LOFF_STATN, GPIO, MISC1, MISC2, CONFIG4 = 0x12, 0x13, 0x14, 0x15, 0x16, 0x17
N_REGS = 0x18

EXPECTED_ID = 0x3E  # ADS1299, 8 channels
KNOWN_IDS = {0x3C: "ADS1299-4", 0x3D: "ADS1299-6", 0x3E: "ADS1299", 0x00: "nothing (MISO low)",
             0xFF: "nothing (MISO high)"}
FRAME_BYTES = 27
CHANNELS_PER_CHIP = 8
MAX_CHIPS = 8  # 64 channels
STATUS_HEADER = 0xC  # top nibble of every status word

RATES_HZ = {16000: 0, 8000: 1, 4000: 2, 2000: 3, 1000: 4, 500: 5, 250: 6}  # CONFIG1 DR[2:0]
GAIN_CODES = {1: 0, 2: 1, 4: 2, 6: 3, 8: 4, 12: 5, 24: 6}  # CHnSET bits 6:4
MUX_CODES = {"normal": 0, "shorted": 1, "bias_meas": 2, "mvdd": 3, "temperature": 4,
             "test": 5, "bias_drp": 6, "bias_drn": 7, "off": 1}  # "off": powered down, shorted
# CONFIG2 test-signal choices: (CAL_AMP bit 2, CAL_FREQ bits 1:0). Square wave of
# +/-(VREF / 2.4) mV (1x) or twice that (2x) at fCLK/2^21 (~0.98 Hz) or fCLK/2^20 (~1.95 Hz).
TEST_SIGNALS = {"1x_slow": 0b000, "1x_fast": 0b001, "1x_dc": 0b011,
                "2x_slow": 0b100, "2x_fast": 0b101, "2x_dc": 0b111}
DEFAULT_CHANNELS = ("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2")
# Read-only bits masked out when verifying a configuration by read-back.
_READBACK_MASK = {CONFIG3: 0xFE, GPIO: 0x0F, LOFF_STATP: 0x00, LOFF_STATN: 0x00}
# A read that completes this many sample periods after its DRDY edge may hold the next
# sample: the chip replaces its one frame at the next DRDY. The margin covers the
# edge-to-edge spread of a +-200 ppm crystal, not scheduling.
LATE_READ_PERIODS = 0.98


@dataclass(frozen=True)
class Ads1299Settings:
    """What to configure. ``gains`` and ``inputs`` accept one value for every channel."""

    fs_hz: int = 1000
    gains: Sequence[int] | int = 24
    channels: Sequence[str] = DEFAULT_CHANNELS
    n_chips: int = 1  # 1..8 (direct SPI: one bus per chip; bridge: the board's chips)
    inputs: Sequence[str] | str = "normal"
    bias: bool = True
    srb1: bool = True
    lead_off: bool = True
    test_signal: str = "1x_slow"
    vref_v: float = 4.5
    daisy: bool = False  # chips daisy-chained on one chip select (CONFIG1.DAISY_EN)

    def __post_init__(self) -> None:
        if not 1 <= self.n_chips <= MAX_CHIPS:
            raise ValueError(f"n_chips: must be 1 to {MAX_CHIPS}, not {self.n_chips!r}")
        n = CHANNELS_PER_CHIP * self.n_chips
        if self.fs_hz not in RATES_HZ:
            raise ValueError(f"fs_hz: must be one of {sorted(RATES_HZ)}, not {self.fs_hz!r}")
        channels = tuple(self.channels)
        if len(channels) != n:
            raise ValueError(
                f"channels: need {n} names for {self.n_chips} chip(s), got {len(channels)}")
        if len(set(channels)) != n:
            raise ValueError("channels: names must be unique")
        gains = (self.gains,) * n if isinstance(self.gains, int) else tuple(self.gains)
        if len(gains) != n or any(g not in GAIN_CODES for g in gains):
            raise ValueError(f"gains: need {n} values from {sorted(GAIN_CODES)}, got {gains!r}")
        inputs = (self.inputs,) * n if isinstance(self.inputs, str) else tuple(self.inputs)
        if len(inputs) != n or any(i not in MUX_CODES for i in inputs):
            raise ValueError(f"inputs: need {n} values from {sorted(MUX_CODES)}, got {inputs!r}")
        if self.test_signal not in TEST_SIGNALS:
            raise ValueError(f"test_signal: must be one of {sorted(TEST_SIGNALS)}")
        if not (0.0 < self.vref_v <= 5.0):
            raise ValueError(f"vref_v: must be in (0, 5] V, not {self.vref_v!r}")
        object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "gains", gains)
        object.__setattr__(self, "inputs", inputs)

    @property
    def n_channels(self) -> int:
        return CHANNELS_PER_CHIP * self.n_chips

    def uv_per_count(self) -> np.ndarray:
        """Physical scale per channel: VREF / (2^23 - 1) / gain, in microvolts."""
        return self.vref_v / (2**23 - 1) / np.asarray(self.gains, dtype=np.float64) * 1e6


def register_plan(s: Ads1299Settings, chip: int) -> dict[int, int]:
    """The register values to write to ``chip`` (0 .. n_chips - 1) for settings ``s``."""
    sl = slice(chip * CHANNELS_PER_CHIP, (chip + 1) * CHANNELS_PER_CHIP)
    inputs, gains = s.inputs[sl], s.gains[sl]  # type: ignore[index]
    # CONFIG1: bit7 1 and bits 4:3 = 10 reserved; bit6 = 1 multiple readback (own CS per
    # chip), 0 daisy chain; bit5 CLK_EN on the first chip so the others run on its clock.
    readback = 0x00 if s.daisy else 0x40
    config1 = 0x90 | readback | (0x20 if (s.n_chips > 1 and chip == 0) else 0) | RATES_HZ[s.fs_hz]
    uses_test = any(i == "test" for i in inputs)
    config2 = 0xC0 | (0x10 if uses_test else 0) | TEST_SIGNALS[s.test_signal]
    # CONFIG3: internal reference buffer on, reserved 11; bias: BIASREF_INT + PD_BIAS.
    config3 = 0xE0 | (0x0C if s.bias else 0)
    plan = {CONFIG1: config1, CONFIG2: config2, CONFIG3: config3,
            LOFF: 0x00}  # 95% comparator, 6 nA, DC lead-off detection
    for i, (mux, gain) in enumerate(zip(inputs, gains, strict=True)):
        pd = 0x80 if mux == "off" else 0
        plan[CH1SET + i] = pd | (GAIN_CODES[gain] << 4) | MUX_CODES[mux]
    normal = sum(1 << i for i, m in enumerate(inputs) if m == "normal")
    plan[BIAS_SENSP] = normal if s.bias else 0
    plan[BIAS_SENSN] = 0 if s.srb1 else (normal if s.bias else 0)  # N inputs are SRB1
    plan[LOFF_SENSP] = normal if s.lead_off else 0
    plan[LOFF_SENSN] = 0
    plan[LOFF_FLIP] = 0
    plan[GPIO] = 0x0F  # all four GPIO pins inputs (GPIO4 carries the sync pulse)
    plan[MISC1] = 0x20 if s.srb1 else 0x00
    plan[MISC2] = 0x00
    plan[CONFIG4] = 0x02 if s.lead_off else 0x00  # PD_LOFF_COMP: comparators on
    return plan


# ---------------------------------------------------------------- vectorised decoding


def decode_frames(raw: np.ndarray, n_chips: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``(n, 27 * n_chips)`` uint8 frames into status ``(n, n_chips)`` uint32 and
    counts ``(n, 8 * n_chips)`` int32 (24-bit two's complement, MSB first)."""
    raw = np.asarray(raw, dtype=np.uint8)
    n = raw.shape[0]
    if raw.ndim != 2 or raw.shape[1] != FRAME_BYTES * n_chips:
        raise ValueError(f"raw: expected (n, {FRAME_BYTES * n_chips}) bytes, got {raw.shape}")
    words = raw.reshape(n, n_chips, 9, 3).astype(np.uint32)
    w = (words[..., 0] << 16) | (words[..., 1] << 8) | words[..., 2]  # (n, chips, 9)
    status = w[..., 0]
    counts = ((w[..., 1:].astype(np.int32) ^ 0x800000) - 0x800000).reshape(n, -1)
    return status, counts


def counts_to_uv(counts: np.ndarray, gains: Sequence[int] | np.ndarray,
                 vref_v: float = 4.5) -> np.ndarray:
    """Microvolts at the input: counts * VREF / (2^23 - 1) / gain."""
    scale = vref_v / (2**23 - 1) / np.asarray(gains, dtype=np.float64) * 1e6
    return np.asarray(counts, dtype=np.float64) * scale


def decode_lead_off(status: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel lead-off flags from raw per-chip status words ``(n, n_chips)``.

    Returns ``(p_off, n_off)``, each ``(n, 8 * n_chips)`` bool: LOFF_STATP bit i is
    status bit 12 + i (channel i + 1 of that chip), LOFF_STATN bit i is status bit 4 + i.
    """
    s = np.asarray(status, dtype=np.uint32)
    s = s[:, None] if s.ndim == 1 else s
    bits = np.arange(CHANNELS_PER_CHIP, dtype=np.uint32)
    p = ((s[..., None] >> (12 + bits)) & 1).astype(bool).reshape(s.shape[0], -1)
    nn = ((s[..., None] >> (4 + bits)) & 1).astype(bool).reshape(s.shape[0], -1)
    return p, nn


def lead_off_from_block_status(status: np.ndarray, n_chips: int) -> tuple[np.ndarray, np.ndarray]:
    """Lead-off flags from ``SampleBlock.status`` (see the module docstring's layout).

    Returns ``(p_off (n, 8 * n_chips), n_off (n, 8))``: N flags are chip 0's. Chips 2..7
    (17..64 channels) do not fit the word: their P flags read False (an open input still
    rails to full scale, which the features flag as saturated).
    """
    s = np.asarray(status, dtype=np.uint32)
    p0, n0 = decode_lead_off(s & 0xFFFFFF)
    if n_chips == 1:
        return p0, n0
    bits = np.arange(CHANNELS_PER_CHIP, dtype=np.uint32)
    p1 = ((s[:, None] >> (24 + bits)) & 1).astype(bool)
    rest = np.zeros((s.shape[0], CHANNELS_PER_CHIP * (n_chips - 2)), dtype=bool)
    return np.concatenate([p0, p1, rest], axis=1), n0


def trigger_bits(status0: np.ndarray) -> np.ndarray:
    """Trigger byte from chip 0's status word: bit 0 = GPIO4 (sync), bits 1..3 = GPIO1..3."""
    s = np.asarray(status0, dtype=np.uint32)
    return (((s >> 3) & 1) | ((s & 0x7) << 1)).astype(np.uint8)


# ---------------------------------------------------------------- shared register logic
# Used as they are by the direct driver below and by the bridge (sensors.eeg_bridge),
# whose register pass-through makes each chip look like an SpiBus.


def reset_chips(buses: Sequence[SpiBus], reset_pin: OutputLine | None = None) -> None:
    """Pulse RESET (pin, else the RESET opcode on every bus) and wait for the chips."""
    if reset_pin is not None:
        # RESET low for >= 2 tCLK, then 18 tCLK before the first command: 1 ms is ample.
        reset_pin.set(1)
        reset_pin.set(0)
        time.sleep(0.001)
        reset_pin.set(1)
    else:
        for bus in buses:
            bus.xfer(bytes([RESET]))
    time.sleep(0.002)


def rreg(bus: SpiBus, addr: int, count: int) -> bytes:
    """RREG ``count`` registers from ``addr`` (the chip must be in SDATAC)."""
    out = bus.xfer(bytes([RREG | addr, count - 1]) + bytes(count))
    return out[2:]


def write_plan(bus: SpiBus, plan: dict[int, int]) -> None:
    """WREG the plan, contiguous runs in one WREG each (LOFF_STATP/N split the map)."""
    addrs = sorted(plan)
    run: list[int] = []
    for a in [*addrs, -1]:
        if run and a != run[-1] + 1:
            bus.xfer(bytes([WREG | run[0], len(run) - 1, *(plan[r] for r in run)]))
            run = []
        if a >= 0:
            run.append(a)


def configure_chips(buses: Sequence[SpiBus], settings: Ads1299Settings,
                    reset_pin: OutputLine | None = None) -> list[int]:
    """Reset, SDATAC + STOP, check every chip's ID, write and verify the register plan.

    ``buses``: one per chip (separate chip selects), or one for a daisy chain (the plan of
    chip 0 reaches every chip; only the first chip's registers can be read back). Returns
    the chip IDs read; raises WrongDevice / DeviceError with the chip and the reason.
    """
    reset_chips(buses, reset_pin)
    for bus in buses:
        bus.xfer(bytes([SDATAC]))  # the chip wakes in RDATAC, where RREG/WREG are ignored
        bus.xfer(bytes([STOP]))
    ids: list[int] = []
    for chip, bus in enumerate(buses):
        chip_id = rreg(bus, ID, 1)[0]
        if chip_id != EXPECTED_ID:
            what = KNOWN_IDS.get(chip_id, "an unknown part")
            raise WrongDevice(
                f"eeg chip {chip}: ID register reads 0x{chip_id:02X} ({what}), expected "
                f"0x{EXPECTED_ID:02X} (ADS1299, 8 channels)"
            )
        ids.append(chip_id)
    for chip, bus in enumerate(buses):
        plan = register_plan(settings, chip)
        write_plan(bus, plan)
        got = rreg(bus, 0, N_REGS)
        bad = [
            f"0x{a:02X}: wrote 0x{v:02X}, read 0x{got[a]:02X}"
            for a, v in sorted(plan.items())
            if (got[a] ^ v) & _READBACK_MASK.get(a, 0xFF)
        ]
        if bad:
            raise DeviceError(f"eeg chip {chip}: register read-back mismatch: {'; '.join(bad)}")
    return ids


def stream_info(settings: Ads1299Settings) -> StreamInfo:
    """The ``eeg`` stream's description: device time is the sample index."""
    n = settings.n_channels
    return StreamInfo(
        name="eeg",
        fs_hz=float(settings.fs_hz),
        channels=tuple(settings.channels),
        units=("uV",) * n,
        scale=tuple(float(x) for x in settings.uv_per_count()),
        offset=(0.0,) * n,
        device_time_unit="sample",
        status_layout=STATUS_ADS1299,
    )


def frames_to_block(raw: np.ndarray, index: np.ndarray, device_t: np.ndarray,
                    host_t_ns: np.ndarray, settings: Ads1299Settings, scale: np.ndarray,
                    counters: StreamCounters) -> SampleBlock | None:
    """Raw chip frames ``(n, 27 * n_chips)`` -> one ``eeg`` SampleBlock, vectorised.

    Frames whose status word lacks the ``1100`` header are dropped and counted
    (``errors``, ``bad_header``); ``counters.samples`` counts what is delivered.
    """
    n = raw.shape[0]
    status, counts = decode_frames(raw, settings.n_chips)
    ok = ((status >> 20) == STATUS_HEADER).all(axis=1)
    n_bad = int(n - ok.sum())
    if n_bad:
        counters.errors += n_bad
        counters.extra["bad_header"] = counters.extra.get("bad_header", 0) + n_bad
        status, counts = status[ok], counts[ok]
        index, device_t, host_t_ns = index[ok], device_t[ok], host_t_ns[ok]
    if not len(counts):
        return None
    packed = status[:, 0].copy()
    if settings.n_chips >= 2:
        packed |= ((status[:, 1] >> 12) & 0xFF) << 24
    counters.samples += len(index)
    return SampleBlock(
        stream="eeg",
        index=np.asarray(index, dtype=np.int64),
        device_t=np.asarray(device_t, dtype=np.int64),
        host_t_ns=np.asarray(host_t_ns, dtype=np.int64),
        raw=counts,
        values=counts * scale,
        trigger=trigger_bits(status[:, 0]),
        status=packed.astype(np.uint32),
    )


# ---------------------------------------------------------------- the driver


class Ads1299:
    """One or two ADS1299 chips as one ``eeg`` stream of ``SampleBlock`` s."""

    def __init__(
        self,
        spi: list[SpiBus],
        drdy: EdgeInput,
        settings: Ads1299Settings,
        reset: OutputLine | None = None,
        start_pin: OutputLine | None = None,
        *,
        block_s: float = 0.02,
        stall_after_s: float = 0.25,
        drdy_rising: bool = False,
    ) -> None:
        if len(spi) != settings.n_chips:
            raise ValueError(f"spi: need one bus per chip ({settings.n_chips}), got {len(spi)}")
        self._spi = list(spi)
        self._drdy = drdy
        self._reset_pin = reset
        self._start_pin = start_pin
        self.settings = settings
        self._drdy_rising = drdy_rising  # True when the line is configured active-low
        self._scale = settings.uv_per_count()
        self.info = stream_info(settings)
        self.counters = StreamCounters(extra={
            "missed_drdy": 0, "overwritten": 0, "late_read": 0, "bad_header": 0,
            "drdy_timeouts": 0,
        })
        self._period_ns = 1e9 / settings.fs_hz
        self._stall_ns = int(stall_after_s * 1e9)
        self._block_n = max(1, round(settings.fs_hz * block_s))
        fb = FRAME_BYTES * settings.n_chips
        self._raw = np.zeros((self._block_n, fb), dtype=np.uint8)
        self._idx = np.zeros(self._block_n, dtype=np.int64)
        self._t = np.zeros(self._block_n, dtype=np.int64)
        self._n_acc = 0
        self._opened = False
        self._running = False
        self._last_index = -1
        self._last_edge_ns = 0
        self._last_seq = 0
        self._seq_seen = 0  # last gpiod-style sequence number seen on the DRDY line
        self._seq_ok = True  # False once the line reports both polarities (seq counts both)
        self._started_ns = 0
        self.chip_ids: list[int] = []

    # ---- lifecycle

    def open(self) -> None:
        """Reset, stop continuous reads, identify every chip, configure and verify."""
        self.chip_ids = configure_chips(self._spi, self.settings, self._reset_pin)
        if self._start_pin is not None:
            self._start_pin.set(0)
        self._opened = True

    def start(self) -> None:
        """START conversions (pin to both chips, or opcode per chip) and RDATAC."""
        if not self._opened:
            raise DeviceError("eeg: start() before open()")
        stale = self._drdy.read_edges(0.0)  # drop edges from before this run
        if stale:
            self._seq_seen = stale[-1].seq
        if self._start_pin is not None:
            self._start_pin.set(1)
        else:
            for bus in self._spi:
                bus.xfer(bytes([START]))
        for bus in self._spi:
            bus.xfer(bytes([RDATAC]))
        self._running = True
        self._started_ns = monotonic_ns()
        self._last_edge_ns = 0
        self._last_seq = self._seq_seen  # the line's counter runs on across runs

    def poll(self, timeout_s: float) -> list[SampleBlock]:
        """Read frames until a block (~``block_s``) is full or ``timeout_s`` passes."""
        if not self._running:
            return [self._flush()] if self._n_acc else []
        deadline = monotonic_ns() + int(max(timeout_s, 0.0) * 1e9)
        blocks: list[SampleBlock | None] = []
        got_edges = False
        while True:
            remaining_s = (deadline - monotonic_ns()) / 1e9
            edges = self._drdy.read_edges(max(remaining_s, 0.0))
            drdy = [e for e in edges if e.rising == self._drdy_rising]
            if len(drdy) != len(edges):
                self._seq_ok = False
            if drdy:
                got_edges = True
                self._on_drdy(drdy)
            if self._n_acc >= self._block_n:
                blocks.append(self._flush())
                break
            if monotonic_ns() >= deadline:
                if self._n_acc:
                    blocks.append(self._flush())
                break
        if not got_edges and self.stalled:
            self.counters.extra["drdy_timeouts"] += 1
        return [b for b in blocks if b is not None]

    @property
    def stalled(self) -> bool:
        """True while started and no DRDY edge arrived for ``stall_after_s``."""
        if not self._running:
            return False
        last = self._last_edge_ns or self._started_ns
        return monotonic_ns() - last > self._stall_ns

    def check(self) -> None:
        """Raise DeviceTimeout when DRDY has stalled (for callers wanting an exception)."""
        if self.stalled:
            raise DeviceTimeout(
                f"eeg: no DRDY edge for more than {self._stall_ns / 1e9:.2f} s while started"
            )

    def stop(self) -> None:
        """SDATAC and STOP (START pin low); accumulated samples come out of the next poll."""
        for bus in self._spi:
            bus.xfer(bytes([SDATAC]))
        if self._start_pin is not None:
            self._start_pin.set(0)
        for bus in self._spi:
            bus.xfer(bytes([STOP]))
        self._running = False

    def close(self) -> None:
        if self._running:
            self.stop()
        for seam in (*self._spi, self._drdy, self._reset_pin, self._start_pin):
            if seam is not None:
                seam.close()
        self._opened = False

    # ---- internals

    def _on_drdy(self, edges: list[Edge]) -> None:
        """Account for a batch of DRDY edges and read the newest frame."""
        # Plain ints: usually one edge per wake, where numpy's per-call cost would dominate.
        period = self._period_ns
        prev_t, prev_seq = self._last_edge_ns, self._last_seq
        use_seq = self._seq_ok and all(e.seq for e in edges)
        total = 0
        for e in edges:
            dt = e.t_ns - prev_t if prev_t else period
            step = round(dt / period) if dt > 1.5 * period else 1
            if use_seq:
                step = max(step, e.seq - prev_seq)
            total += max(step, 1)
            prev_t, prev_seq = e.t_ns, e.seq
        missed = total - len(edges)
        overwritten = len(edges) - 1
        if missed:
            self.counters.extra["missed_drdy"] += missed
        if overwritten:
            self.counters.extra["overwritten"] += overwritten
        self.counters.dropped += missed + overwritten
        index = self._last_index + total
        self._last_index = index
        t_edge = edges[-1].t_ns
        self._last_edge_ns = t_edge
        self._last_seq = self._seq_seen = edges[-1].seq
        frame = b"".join(bus.xfer(bytes(FRAME_BYTES)) for bus in self._spi)
        if monotonic_ns() - t_edge > LATE_READ_PERIODS * self._period_ns:
            # The next DRDY may have replaced (or torn) this frame while we read it.
            self.counters.extra["late_read"] += 1
            self.counters.dropped += 1
            return
        i = self._n_acc
        self._raw[i] = np.frombuffer(frame, dtype=np.uint8)
        self._idx[i] = index
        self._t[i] = t_edge
        self._n_acc = i + 1

    def _flush(self) -> SampleBlock | None:
        n = self._n_acc
        self._n_acc = 0
        index = self._idx[:n].copy()
        return frames_to_block(self._raw[:n], index, index, self._t[:n].copy(), self.settings,
                               self._scale, self.counters)
