"""The ADS1299 driver, run against the register-level emulator: what it must deliver.

Every test goes through the real driver code (sensors.ads1299) and the SpiBus /
EdgeInput seams; the emulator (hil.sim.ads1299) knows the ground truth of every sample
it produced. Nothing here asserts tight timing: losses from a busy machine are allowed,
but every loss must be counted and visible as an index gap.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
from driver_runs import cat, collect, run

from hil.sim.ads1299 import Ads1299Emulator, shared_start_line
from hil.sim.crystal import Crystal
from hil.sim.eeg_model import EegModel
from hil.sim.scenario import Blink, Scenario
from hil.sim.wire import SYNC, SimOutputLine, Wire
from sensors import ads1299
from sensors.ads1299 import Ads1299, Ads1299Settings, decode_frames
from sensors.blocks import SampleBlock, monotonic_ns
from sensors.errors import (
    BackendUnavailable,
    DeviceError,
    DeviceNotFound,
    DeviceTimeout,
    WrongDevice,
)

UV_PER_COUNT_G1 = 4.5 / (2**23 - 1) * 1e6


def make_rig(
    settings: Ads1299Settings | None = None,
    chip_ids: tuple[int, ...] = (0x3E,),
    capacity: int = 1024,
    wire: Wire | None = None,
    seed: int = 0,
    start_pin: bool = False,
) -> tuple[Ads1299, list[Ads1299Emulator]]:
    settings = settings or Ads1299Settings()
    crystal = Crystal(ppm=40.0)
    emus = [
        Ads1299Emulator(crystal, wire, seed=seed, chip_id=cid, chip_index=i)
        for i, cid in enumerate(chip_ids)
    ]
    pin = shared_start_line(*emus) if start_pin else None
    drv = Ads1299(list(emus), emus[0].drdy_line(capacity=capacity), settings, start_pin=pin)
    return drv, emus


def assert_matches_truth(blocks: list[SampleBlock], emu: Ads1299Emulator, cols: slice) -> None:
    index, raw, status = cat(blocks, "index"), cat(blocks, "raw"), cat(blocks, "status")
    t_status, t_counts = emu.truth(int(index[0]), int(index[-1] - index[0] + 1))
    rows = index - index[0]
    np.testing.assert_array_equal(raw[:, cols], t_counts[rows])
    if cols.start == 0:
        np.testing.assert_array_equal(status & 0xFFFFFF, t_status[rows])


# ---------------------------------------------------------------- pure decoding


def test_decode_known_byte_patterns() -> None:
    words = [0x7FFFFF, 0x800000, 0xFFFFFF, 0x000000, 0x000001, 0x123456, 0xEDCBAA, 0x400000]
    frame = bytes([0xC0, 0x10, 0x08]) + b"".join(w.to_bytes(3, "big") for w in words)
    raw = np.frombuffer(frame * 3, dtype=np.uint8).reshape(3, 27)
    status, counts = decode_frames(raw, 1)
    assert status.shape == (3, 1) and status.dtype == np.uint32
    assert status[0, 0] == 0xC01008
    assert counts.dtype == np.int32
    assert counts[0].tolist() == [2**23 - 1, -(2**23), -1, 0, 1, 0x123456, -0x123456, 2**22]


def test_decode_two_chips_keeps_chip_order() -> None:
    chip0 = bytes([0xC0, 0, 0]) + (5).to_bytes(3, "big") * 8
    chip1 = bytes([0xC0, 0, 1]) + (0xFFFFFB).to_bytes(3, "big") * 8
    raw = np.frombuffer(chip0 + chip1, dtype=np.uint8).reshape(1, 54)
    status, counts = decode_frames(raw, 2)
    assert status[0].tolist() == [0xC00000, 0xC00001]
    assert counts[0].tolist() == [5] * 8 + [-5] * 8


def test_counts_to_uv_uses_vref_over_2p23_minus_1_per_gain() -> None:
    uv = ads1299.counts_to_uv(np.array([[1, 2**23 - 1]]), [24, 1])
    assert uv[0, 0] == pytest.approx(UV_PER_COUNT_G1 / 24)
    assert uv[0, 1] == pytest.approx(4.5e6)


def test_lead_off_and_trigger_bit_layout() -> None:
    # LOFF_STATP bit 2 (channel 3) and LOFF_STATN bit 7 (channel 8); GPIO4 high.
    status = np.array([0xC00000 | (0x04 << 12) | (0x80 << 4) | 0x8], dtype=np.uint32)
    p, n = ads1299.decode_lead_off(status)
    assert np.flatnonzero(p[0]).tolist() == [2]
    assert np.flatnonzero(n[0]).tolist() == [7]
    assert ads1299.trigger_bits(status).tolist() == [1]  # GPIO4 -> trigger bit 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"fs_hz": 300}, "fs_hz"),
        ({"gains": 3}, "gains"),
        ({"gains": (24,) * 7}, "gains"),
        ({"n_chips": 9}, "n_chips"),
        ({"channels": ("a",) * 8}, "channels"),
        ({"n_chips": 2}, "channels"),
        ({"inputs": "floating"}, "inputs"),
        ({"test_signal": "3x"}, "test_signal"),
        ({"vref_v": 0.0}, "vref_v"),
    ],
)
def test_settings_reject_bad_values_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        Ads1299Settings(**kwargs)


def test_spidev_backend_reports_a_missing_package_clearly() -> None:
    try:
        import spidev  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("spidev is installed here")
    from sensors.spi import SpidevBus

    with pytest.raises(BackendUnavailable, match="spidev"):
        SpidevBus(0, 0)


def test_spidev_backend_without_the_device_node_says_how_to_enable_spi(monkeypatch) -> None:
    from sensors.fakes import make_fake_spidev
    from sensors.spi import SpidevBus

    monkeypatch.setitem(sys.modules, "spidev", make_fake_spidev())
    with pytest.raises(DeviceNotFound, match=r"/dev/spidev7\.3 does not exist.*dtparam=spi=on"):
        SpidevBus(7, 3)


def test_spidev_backend_sets_mode_1_and_keeps_cs_low_per_transfer(monkeypatch) -> None:
    from sensors import spi
    from sensors.fakes import make_fake_spidev

    fake = make_fake_spidev()
    monkeypatch.setitem(sys.modules, "spidev", fake)
    monkeypatch.setattr(spi.os.path, "exists", lambda p: p == "/dev/spidev0.1")
    bus = spi.SpidevBus(0, 1, max_speed_hz=2_000_000)
    dev = fake.devices[-1]
    assert (dev.bus, dev.device, dev.mode, dev.max_speed_hz, dev.bits_per_word) == (
        0, 1, 1, 2_000_000, 8)
    dev.respond = lambda out: bytes(b ^ 0xFF for b in out)
    assert bus.xfer(b"\x20\x00\x00") == b"\xdf\xff\xff"
    assert dev.sent == [b"\x20\x00\x00"]  # one xfer2: CS held for the whole command
    bus.close()
    assert dev.closed


# ---------------------------------------------------------------- against the emulator


def test_decoded_eeg_equals_ground_truth_at_every_gain() -> None:
    gains = (1, 2, 4, 6, 8, 12, 24, 24)
    wire = Wire()
    drv, (emu,) = make_rig(Ads1299Settings(fs_hz=1000, gains=gains), wire=wire)
    sync = SimOutputLine(wire[SYNC])
    drv.open()
    drv.start()
    blocks = collect(drv, 0.15)
    sync.set(1)  # a sync pulse mid-run must show in trigger bit 0 (GPIO4)
    blocks += collect(drv, 0.15)
    sync.set(0)
    blocks += collect(drv, 0.15)
    drv.stop()
    blocks += drv.poll(0.0)

    assert_matches_truth(blocks, emu, slice(0, 8))
    values, raw = cat(blocks, "values"), cat(blocks, "raw")
    scale = UV_PER_COUNT_G1 / np.array(gains)
    assert np.all(np.abs(values - raw * scale) <= scale)  # within 1 LSB, every gain
    assert drv.info.scale == pytest.approx(tuple(scale))
    assert drv.info.units == ("uV",) * 8 and drv.info.device_time_unit == "sample"
    # EEG-sized signals (tens of uV), not rails or zeros, at every gain.
    rms = values.std(axis=0)
    assert np.all((rms > 3) & (rms < 100)), rms
    # Trigger bit 0 is the sync net's level at each sample's DRDY time.
    host_t = cat(blocks, "host_t_ns")
    np.testing.assert_array_equal(cat(blocks, "trigger") & 1, wire[SYNC].value_at(host_t))
    assert (cat(blocks, "trigger") & 1).any()
    # Host time per sample is its DRDY edge, one sample period apart.
    index = cat(blocks, "index")
    assert np.all(np.diff(host_t) == pytest.approx(np.diff(index) * 1e6, rel=1e-3))
    assert drv.counters.samples == len(index)
    assert drv.counters.errors == 0


@pytest.mark.parametrize("chip_id", [0x3C, 0x00, 0xFF])
def test_wrong_id_raises_naming_the_value_and_delivers_nothing(chip_id: int) -> None:
    drv, (emu,) = make_rig(chip_ids=(chip_id,))
    with pytest.raises(WrongDevice, match=f"chip 0: ID register reads 0x{chip_id:02X}"):
        drv.open()
    with pytest.raises(DeviceError):
        drv.start()
    assert drv.poll(0.01) == []
    assert not emu.converting


def test_wrong_second_chip_is_named() -> None:
    drv, _ = make_rig(Ads1299Settings(n_chips=2, channels=[f"E{i}" for i in range(16)]),
                      chip_ids=(0x3E, 0x3D))
    with pytest.raises(WrongDevice, match="chip 1: ID register reads 0x3D"):
        drv.open()


def test_register_writes_in_rdatac_are_ignored_so_the_driver_sdatacs_first() -> None:
    drv, (emu,) = make_rig(Ads1299Settings(fs_hz=500, gains=8, inputs="shorted"))
    before = emu.registers
    assert emu.rdatac  # the chip wakes in RDATAC
    emu.xfer(bytes([ads1299.WREG | ads1299.CONFIG1, 0, 0xF4]))
    assert emu.registers == before
    drv.open()
    plan = ads1299.register_plan(drv.settings, 0)
    after = emu.registers
    assert all(after[a] == v for a, v in plan.items())
    drv.start()
    emu.xfer(bytes([ads1299.WREG | ads1299.CH1SET, 0, 0x00]))  # ignored while streaming
    assert emu.registers == after
    drv.stop()
    drv.close()


@pytest.mark.parametrize(("test_signal", "amp_uv", "half_s"),
                         [("1x_fast", 1875.0, 0.256), ("2x_fast", 3750.0, 0.256)])
def test_self_test_square_wave_has_datasheet_amplitude_and_period(
    test_signal: str, amp_uv: float, half_s: float
) -> None:
    fs = 500
    settings = Ads1299Settings(fs_hz=fs, gains=(1, 2, 4, 6, 8, 12, 24, 24), inputs="test",
                               test_signal=test_signal)
    drv, _ = make_rig(settings)
    blocks = run(drv, 0.75)
    values, index = cat(blocks, "values"), cat(blocks, "index")
    for ch in range(8):
        v = values[:, ch]
        high, low = v > 0, v < 0
        assert high.any() and low.any()
        assert np.median(v[high]) == pytest.approx(amp_uv, rel=0.01)
        assert np.median(v[low]) == pytest.approx(-amp_uv, rel=0.01)
    # Level changes sit on multiples of the half period (counted in samples from START).
    half_n = round(half_s * fs)
    sign = values[:, 0] > 0
    flips = np.flatnonzero(sign[1:] != sign[:-1])
    contiguous = np.diff(index)[flips] == 1
    assert np.all(index[flips + 1][contiguous] % half_n == 0)


def test_lead_off_bits_report_the_disconnected_channel() -> None:
    drv, (emu,) = make_rig(Ads1299Settings(fs_hz=1000, lead_off=True))
    drv.open()
    drv.start()
    collect(drv, 0.05)
    emu.disconnect("O1")
    blocks = collect(drv, 0.3)
    drv.stop()
    status = cat(blocks, "status")
    p_off, _ = ads1299.lead_off_from_block_status(status, 1)
    flagged = p_off.any(axis=0)
    assert np.flatnonzero(flagged).tolist() == [drv.info.index("O1")]
    assert_matches_truth(blocks, emu, slice(0, 8))
    # An open input rails: the flagged samples read positive full scale.
    assert np.all(cat(blocks, "raw")[p_off[:, 6], 6] == 2**23 - 1)


def test_lead_off_bits_stay_clear_when_detection_is_off() -> None:
    drv, (emu,) = make_rig(Ads1299Settings(fs_hz=1000, lead_off=False))
    drv.open()
    drv.start()
    emu.disconnect(2)
    blocks = collect(drv, 0.25)
    drv.stop()
    p_off, n_off = ads1299.lead_off_from_block_status(cat(blocks, "status"), 1)
    assert not p_off.any() and not n_off.any()


def test_daisy_chain_gives_16_aligned_channels() -> None:
    names = [f"E{i}" for i in range(16)]
    drv, (emu0, emu1) = make_rig(
        Ads1299Settings(n_chips=2, channels=names, fs_hz=1000), chip_ids=(0x3E, 0x3E),
        start_pin=True,
    )
    drv.open()
    drv.start()
    collect(drv, 0.05)
    emu1.disconnect(2)  # chip 1's third channel = E10
    blocks = collect(drv, 0.35)
    drv.stop()
    assert cat(blocks, "raw").shape[1] == 16 and len(drv.info.channels) == 16
    assert_matches_truth(blocks, emu0, slice(0, 8))
    assert_matches_truth(blocks, emu1, slice(8, 16))
    # Both chips convert on one schedule: sample k has the same instant on each.
    now = monotonic_ns()
    assert emu0.sample_index_at(now) == emu1.sample_index_at(now)
    p_off, _ = ads1299.lead_off_from_block_status(cat(blocks, "status"), 2)
    assert np.flatnonzero(p_off.any(axis=0)).tolist() == [10]


@pytest.mark.parametrize("capacity", [1024, 16])
def test_stalled_reader_loses_frames_counted_and_visible_as_an_index_gap(capacity: int) -> None:
    drv, (emu,) = make_rig(Ads1299Settings(fs_hz=1000), capacity=capacity)
    drv.open()
    drv.start()
    blocks = collect(drv, 0.1)
    time.sleep(0.12)  # the reader stalls for ~120 sample periods
    blocks += collect(drv, 0.1)
    drv.stop()
    blocks += drv.poll(0.0)
    index = cat(blocks, "index")
    assert np.all(np.diff(index) > 0)
    assert np.diff(index).max() >= 100  # the stall is a gap, not silently absorbed
    missing = int(index[-1] - index[0] + 1 - len(index))
    c = drv.counters
    assert c.dropped >= missing  # every missing index is accounted for
    assert c.dropped == (c.extra["overwritten"] + c.extra["missed_drdy"]
                         + c.extra["late_read"])
    if capacity == 16:
        assert c.extra["missed_drdy"] >= 100 - 16  # the kernel buffer overflowed
    assert_matches_truth(blocks, emu, slice(0, 8))  # samples after the gap are labelled right


def test_stuck_drdy_returns_no_data_and_says_so() -> None:
    drv, (emu,) = make_rig(Ads1299Settings(fs_hz=1000), seed=3)
    drv.open()
    drv.start()
    assert collect(drv, 0.1)
    assert not drv.stalled
    emu.stick_drdy()
    drv.poll(0.05)  # whatever was pending before the fault
    deadline = time.monotonic() + 2.0
    empty = 0
    while time.monotonic() < deadline and empty < 3:
        empty = empty + 1 if drv.poll(0.15) == [] else 0
    assert empty == 3
    assert drv.stalled
    assert drv.counters.extra["drdy_timeouts"] >= 1
    with pytest.raises(DeviceTimeout):
        drv.check()
    drv.stop()
    assert not drv.stalled


def test_bad_status_header_is_counted_not_delivered() -> None:
    class Corrupting:
        """Clears the 1100 header of every 10th frame read."""

        def __init__(self, bus: Ads1299Emulator) -> None:
            self.bus, self.n = bus, 0

        def xfer(self, data: bytes) -> bytes:
            out = self.bus.xfer(data)
            if len(data) == 27:
                self.n += 1
                if self.n % 10 == 0:
                    out = b"\x00" + out[1:]
            return out

        def close(self) -> None:
            pass

    crystal = Crystal()
    emu = Ads1299Emulator(crystal)
    drv = Ads1299([Corrupting(emu)], emu.drdy_line(), Ads1299Settings(fs_hz=500))
    blocks = run(drv, 0.3)
    status = cat(blocks, "status")
    assert np.all(status >> 20 == 0xC)
    assert drv.counters.errors >= 5
    assert drv.counters.extra["bad_header"] == drv.counters.errors


# ---------------------------------------------------------------- the signal model


def test_eeg_model_alpha_is_occipital_and_blinks_frontal() -> None:
    fs = 250.0
    scen = Scenario(duration_s=10, blinks=(Blink(t_s=4.0, duration_s=0.2),))
    model = EegModel(("Fp1", "O1"), fs, seed=1, scenario=scen)
    t = np.arange(int(8 * fs)) / fs
    uv = np.concatenate([model.next(500, t[i : i + 500]) for i in range(0, t.size, 500)])
    spec = np.abs(np.fft.rfft(uv[: int(4 * fs)] * np.hanning(int(4 * fs))[:, None], axis=0))
    f = np.fft.rfftfreq(int(4 * fs), 1 / fs)
    alpha = spec[(f > 8) & (f < 13)].mean(axis=0)
    assert alpha[1] > 2 * alpha[0]  # O1 alpha stronger than Fp1
    win = (t >= 4.0) & (t <= 4.2)
    bump = uv[win].mean(axis=0) - uv[(t > 3.0) & (t < 3.8)].mean(axis=0)
    assert bump[0] > 40 and abs(bump[1]) < 40  # blink seen frontally
    assert 5 < uv[(t < 3.5), 0].std() < 40


def test_drift_change_and_clock_step_keep_samples_labelled_right() -> None:
    drv, (emu,) = make_rig(Ads1299Settings(fs_hz=1000))
    drv.open()
    drv.start()
    blocks = collect(drv, 0.1)
    emu.set_drift(300.0)
    emu.crystal.step(monotonic_ns() + 50_000_000, 0.01)  # device clock jumps 10 ms ahead
    blocks += collect(drv, 0.25)
    drv.stop()
    blocks += drv.poll(0.0)
    assert_matches_truth(blocks, emu, slice(0, 8))
    index = cat(blocks, "index")
    assert np.all(np.diff(index) > 0)


@pytest.mark.bench
def test_bench_cpu_cost_of_poll_and_decode_per_second_of_8ch_1khz() -> None:
    """Driver CPU (poll + decode) per second of 8-channel 1 kHz data, emulator excluded."""
    crystal = Crystal()
    emu = Ads1299Emulator(crystal)
    line = emu.drdy_line()
    emu_cpu = [0.0]

    class TimedBus:
        def xfer(self, data: bytes) -> bytes:
            t = time.thread_time()
            out = emu.xfer(data)
            emu_cpu[0] += time.thread_time() - t
            return out

        def close(self) -> None:
            pass

    class TimedLine:
        def read_edges(self, timeout_s: float) -> list:
            t = time.thread_time()
            out = line.read_edges(timeout_s)
            emu_cpu[0] += time.thread_time() - t
            return out

        def value(self) -> int:
            return 1

        def close(self) -> None:
            pass

    drv = Ads1299([TimedBus()], TimedLine(), Ads1299Settings(fs_hz=1000))
    drv.open()
    drv.start()
    seconds = 5.0
    cpu0, wall0 = time.thread_time(), time.monotonic()
    blocks = collect(drv, seconds)
    cpu = time.thread_time() - cpu0
    wall = time.monotonic() - wall0
    drv.stop()
    n = sum(len(b) for b in blocks)
    raw = np.random.default_rng(0).integers(0, 256, (1000, 27), dtype=np.uint8)
    t0 = time.perf_counter()
    for _ in range(100):
        decode_frames(raw, 1)
    decode_ms = (time.perf_counter() - t0) * 10
    print(f"\nADS1299 8 ch @ 1 kHz over {wall:.2f} s: driver {(cpu - emu_cpu[0]) / wall * 1e3:.0f}"
          f" ms CPU per s, emulator {emu_cpu[0] / wall * 1e3:.0f} ms per s; {n} samples, "
          f"dropped {drv.counters.dropped} {drv.counters.extra}; "
          f"decode_frames(1000 frames) {decode_ms:.3f} ms")
    assert n > 0
