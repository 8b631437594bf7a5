"""The OpenBCI Cyton driver, run against the board's emulator on a real pseudo-terminal.

The same promises as the ADS1299 driver (tests/test_ads1299.py): decoded microvolts
within 1 LSB of the emulator's truth at every gain, every lost packet counted from the
8-bit sample number (a gap of 256 or more bounded by arrival time), bad bytes counted and
skipped, never an exception for what the board sends. Packets are paced by the board's
own crystal; nothing here asserts timing beyond "it arrived".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import driver_runs
import numpy as np
import pytest
from driver_runs import cat, streaming

from hil.sim.crystal import Crystal
from hil.sim.cyton import CytonEmulator
from hil.sim.wire import SYNC, SimOutputLine, Wire
from sensors import cyton
from sensors.blocks import SampleBlock, monotonic_ns
from sensors.cyton import Cyton, CytonSettings, PacketParser
from sensors.errors import DeviceNotFound, DeviceTimeout, WrongDevice

CH8 = ("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2")
CH16 = (*CH8, "F3", "F4", "F7", "F8", "T7", "T8", "P3", "P4")


@pytest.fixture
def board() -> Iterator[CytonEmulator]:
    with CytonEmulator(Crystal(ppm=40.0, origin_host_ns=monotonic_ns()), Wire()) as emu:
        yield emu


@pytest.fixture
def daisy_board() -> Iterator[CytonEmulator]:
    with CytonEmulator(Crystal(ppm=-30.0, origin_host_ns=monotonic_ns()), daisy=True) as emu:
        yield emu


POLL_S = 0.02


def collect(drv: Cyton, seconds: float) -> list[SampleBlock]:
    return driver_runs.collect(drv, seconds, POLL_S)


def run(drv: Cyton, seconds: float) -> list[SampleBlock]:
    return driver_runs.run(drv, seconds, POLL_S)


def packet(counter: int, counts: list[int], footer: int = 0xC0, aux: bytes = bytes(6)) -> bytes:
    body = b"".join((c & 0xFFFFFF).to_bytes(3, "big") for c in counts)
    return bytes([0xA0, counter]) + body + aux + bytes([footer])


def assert_within_one_lsb(blocks: list[SampleBlock], emu: CytonEmulator, gain: int,
                          daisy: bool = False) -> None:
    index, values = cat(blocks, "index"), cat(blocks, "values")
    lsb = cyton.uv_per_count(gain)
    k = 2 * index + 1 if daisy else index  # packet of the board's half
    uv, known, sent = emu.truth(k)
    assert known.all() and sent.all()
    assert np.abs(values[:, :8] - uv).max() <= lsb * (1 + 1e-9)
    if daisy:
        uv2, known2, _ = emu.truth(k + 1)
        assert known2.all()
        assert np.abs(values[:, 8:] - uv2).max() <= lsb * (1 + 1e-9)


# ---------------------------------------------------------------- pure decoding


def test_decode_known_byte_patterns_and_scale() -> None:
    words = [2**23 - 1, -(2**23), -1, 0, 1, 0x123456, -0x123456, 2**22]
    rows = np.frombuffer(packet(7, words) * 2, dtype=np.uint8).reshape(2, 33)
    p = cyton.decode_packets(rows)
    assert p.counter.tolist() == [7, 7] and p.footer.tolist() == [0xC0, 0xC0]
    assert p.counts[0].tolist() == words
    assert cyton.uv_per_count(24) == pytest.approx(4.5 / 24 / (2**23 - 1) * 1e6)


def test_aux_bytes_are_the_accelerometer_or_the_digital_pins() -> None:
    aux = np.array([[0x00, 0x10, 0xFF, 0xF0, 0x1F, 0x40]], dtype=np.uint8)
    assert cyton.accel_g(aux)[0] == pytest.approx(np.array([16, -16, 8000]) * 0.002 / 16)
    pins = np.array([[1, 0, 1, 0, 1, 0], [1, 1, 1, 1, 1, 1]], dtype=np.uint8)
    footer = np.array([0xC1, 0xC0], dtype=np.uint8)
    # D11 (the sync line) is bit 0; packets of the accelerometer kind carry no pins.
    assert cyton.digital_trigger(pins, footer).tolist() == [0b10101, 0]


def test_channel_settings_command_follows_the_sdk_layout() -> None:
    assert cyton.channel_command(1, 24, "normal", bias=True, srb1=False) == b"x1060110X"
    assert cyton.channel_command(9, 1, "test", bias=False, srb1=True) == b"xQ005001X"
    assert cyton.channel_command(16, 8, "shorted", bias=True, srb1=True) == b"xI041101X"


def test_the_parser_skips_stray_bytes_and_broken_frames_whatever_the_chunking() -> None:
    good = [packet(i, [i] * 8) for i in range(6)]
    broken = bytearray(packet(99, [5] * 8))
    broken[32] = 0x3C  # bad footer: a whole packet lost, not misread
    stream = b"\x01\x02\xc0" + good[0] + good[1] + b"junk!" + good[2] + bytes(broken) + b"".join(
        good[3:])
    for chunk in (len(stream), 7, 1):
        parser = PacketParser()
        rows = np.concatenate([parser.feed(stream[i: i + chunk])
                               for i in range(0, len(stream), chunk)])
        assert cyton.decode_packets(rows).counter.tolist() == [0, 1, 2, 3, 4, 5], chunk
        assert parser.bytes_skipped == 3 + 5 + 33, chunk
        assert parser.resyncs >= 3


def test_settings_reject_what_a_cyton_cannot_do() -> None:
    with pytest.raises(ValueError, match=r"^channels:"):
        CytonSettings(port="x", channels=CH8[:4])
    with pytest.raises(ValueError, match=r"^fs_hz:"):
        CytonSettings(port="x", fs_hz=300)
    with pytest.raises(ValueError, match=r"^gain:"):
        CytonSettings(port="x", gain=3)


# ---------------------------------------------------------------- against the emulator


@pytest.mark.parametrize("gain", [1, 2, 4, 6, 8, 12, 24])
def test_decoded_microvolts_are_within_one_lsb_of_the_truth_at_every_gain(
        board: CytonEmulator, gain: int) -> None:
    drv = Cyton(CytonSettings(port=board.port, channels=CH8, gain=gain))
    blocks = run(drv, 0.3)
    assert_within_one_lsb(blocks, board, gain)
    assert board.gain[:8] == [gain] * 8  # the x..X commands set every channel
    index = cat(blocks, "index")
    assert len(index) > 40 and np.all(np.diff(index) == 1)
    assert drv.counters.dropped == 0 and drv.counters.errors == 0
    assert drv.info.fs_hz == 250 and drv.info.units == ("uV",) * 8
    values = cat(blocks, "values")
    rms = values.std(axis=0)
    assert np.all((rms > 3) & (rms < 100)), rms  # EEG-sized, not rails or zeros


def test_the_sync_line_arrives_on_d11_in_trigger_bit_0(board: CytonEmulator) -> None:
    sync = SimOutputLine(board.wire[SYNC])
    drv = Cyton(CytonSettings(port=board.port, channels=CH8))
    drv.open()
    assert drv.digital_aux and board.digital
    drv.start()
    blocks = collect(drv, 0.2)
    sync.set(1)
    blocks += collect(drv, 0.2)
    sync.set(0)
    blocks += collect(drv, 0.2)
    drv.stop()
    blocks += drv.poll(0.0)
    drv.close()
    bit = (cat(blocks, "trigger") & 1).astype(np.int64)
    assert np.count_nonzero(np.diff(bit) == 1) == 1 and np.count_nonzero(np.diff(bit) == -1) == 1
    # ~0.2 s high at 250 Hz, give or take the host's scheduling of the two set() calls.
    assert 30 <= int(bit.sum()) <= 70
    assert (cat(blocks, "status") == 0xC1).all()


def test_every_dropped_packet_is_counted_from_the_sample_number(board: CytonEmulator) -> None:
    drv = Cyton(CytonSettings(port=board.port, channels=CH8))
    with streaming(drv) as blocks:
        blocks += collect(drv, 0.2)
        board.drop_packets(7)
        blocks += collect(drv, 0.2)
        board.drop_packets(1)
        blocks += collect(drv, 0.2)
    index = cat(blocks, "index")
    _, known, sent = board.truth(np.arange(index[0], index[-1] + 1))
    assert known.all()
    lost = np.flatnonzero(~sent) + index[0]
    assert lost.size == 8
    assert np.setdiff1d(np.arange(index[0], index[-1] + 1), index).tolist() == lost.tolist()
    assert drv.counters.dropped == 8 and drv.counters.extra["dropped_packets"] == 8
    assert_within_one_lsb(blocks, board, 24)


def test_a_gap_past_the_counter_wrap_is_bounded_by_arrival_time(board: CytonEmulator) -> None:
    # 300 packets (1.2 s at 250 Hz) lost: the 8-bit number alone says 44.
    drv = Cyton(CytonSettings(port=board.port, channels=CH8))
    with streaming(drv) as blocks:
        blocks += collect(drv, 0.2)
        board.drop_packets(300)
        blocks += collect(drv, 1.6)
    assert drv.counters.extra["wraps_inferred"] == 1
    assert drv.counters.dropped == 300
    index = cat(blocks, "index")
    _, _, sent = board.truth(index)
    assert sent.all()
    assert_within_one_lsb(blocks, board, 24)  # the index is the board's packet number


def test_stray_bytes_and_broken_frames_are_counted_and_resynced(board: CytonEmulator) -> None:
    drv = Cyton(CytonSettings(port=board.port, channels=CH8))
    with streaming(drv) as blocks:
        blocks += collect(drv, 0.15)
        board.inject_garbage(50)
        blocks += collect(drv, 0.15)
        board.break_framing(3)
        blocks += collect(drv, 0.15)
    c = drv.counters
    assert c.extra["bytes_skipped"] >= 50 + 3 * 33 - 3  # the garbage, the broken packets
    assert c.resyncs >= 2
    assert c.dropped == 3 and c.extra["dropped_packets"] == 3  # exactly the broken ones
    assert_within_one_lsb(blocks, board, 24)  # nothing misread after a resync


def test_a_bad_sample_number_byte_is_one_bad_packet_not_255_lost(board: CytonEmulator) -> None:
    drv = Cyton(CytonSettings(port=board.port, channels=CH8))
    with streaming(drv) as blocks:
        blocks += collect(drv, 0.15)
        board.corrupt_counter(2)
        blocks += collect(drv, 0.3)
    c = drv.counters
    assert c.extra["bad_counter"] == 2 and c.errors == 2
    assert c.dropped == 2  # the two untrusted packets, discarded
    assert_within_one_lsb(blocks, board, 24)


def test_daisy_pairs_odd_and_even_packets_into_16_channels(daisy_board: CytonEmulator) -> None:
    drv = Cyton(CytonSettings(port=daisy_board.port, channels=CH16, gain=8))
    blocks = run(drv, 0.4)
    assert drv.info.fs_hz == 125 and len(drv.info.channels) == 16
    raw = cat(blocks, "raw")
    assert raw.shape[1] == 16 and len(raw) > 30
    assert_within_one_lsb(blocks, daisy_board, 8, daisy=True)
    assert np.all(np.diff(cat(blocks, "index")) == 1) and drv.counters.dropped == 0


def test_daisy_counts_a_lost_half_as_a_lost_sample(daisy_board: CytonEmulator) -> None:
    drv = Cyton(CytonSettings(port=daisy_board.port, channels=CH16))
    with streaming(drv) as blocks:
        blocks += collect(drv, 0.15)
        daisy_board.drop_packets(3)  # 3 packets: one whole pair and one half, or two halves
        blocks += collect(drv, 0.15)
    assert drv.counters.extra["dropped_packets"] == 3
    index = cat(blocks, "index")
    assert drv.counters.dropped == 2 == int((np.diff(index) - 1).sum())
    assert_within_one_lsb(blocks, daisy_board, 24, daisy=True)


def test_the_test_signal_is_the_datasheet_square_wave(board: CytonEmulator) -> None:
    drv = Cyton(CytonSettings(port=board.port, channels=CH8, inputs="test"))
    values = cat(run(drv, 1.2), "values")
    pp = np.percentile(values, 98, axis=0) - np.percentile(values, 2, axis=0)
    assert pp == pytest.approx(2 * 4.5e6 / 2400, rel=0.01)


def test_a_pulled_dongle_is_reconnected_and_the_gap_is_counted(board: CytonEmulator) -> None:
    drv = Cyton(CytonSettings(port=board.port, channels=CH8, reconnect_interval_s=0.2))
    drv.open()
    drv.start()
    before = collect(drv, 0.3)
    board.unplug()
    during = collect(drv, 0.6)  # reads fail: no exception, the port is closed and retried
    assert not drv.connected and drv.counters.extra["disconnects"] == 1
    # (the board numbers from 0 again after the reconnect: its truth for these goes then)
    assert_within_one_lsb(before + during, board, 24)
    board.replug()
    after = collect(drv, 1.0)
    drv.stop()
    after += drv.poll(0.0)
    drv.close()
    c = drv.counters
    assert c.extra["reconnects"] == 1 and len(after) > 0
    i0, i1 = int(cat(before + during, "index")[-1]), int(cat(after, "index")[0])
    # The board restarted its numbers at 0 (soft reset, b): the gap is placed by host
    # time, one read's arrival jitter either way, and counted.
    dt_s = (int(cat(after, "host_t_ns")[0]) - int(cat(before + during, "host_t_ns")[-1])) / 1e9
    assert abs((i1 - i0) - dt_s * 250) <= 5
    index = cat(before + during + after, "index")
    assert np.all(np.diff(index) >= 1)
    assert c.dropped == int((np.diff(index) - 1).sum()) == i1 - i0 - 1


def test_a_board_that_goes_silent_returns_no_data_and_says_so(board: CytonEmulator) -> None:
    drv = Cyton(CytonSettings(port=board.port, channels=CH8, stall_after_s=0.2))
    drv.open()
    drv.start()
    assert collect(drv, 0.2) and not drv.stalled
    board.stop_answering()
    collect(drv, 0.1)  # what was on its way
    assert collect(drv, 0.4) == [] and drv.stalled
    assert drv.counters.extra["stalls"] == 1 and drv.counters.errors == 0
    drv.close()


# ---------------------------------------------------------------- absent or wrong boards


def test_a_device_that_is_not_an_openbci_board_is_named() -> None:
    with CytonEmulator(Crystal(), identity="other") as emu:
        drv = Cyton(CytonSettings(port=emu.port, channels=CH8))
        with pytest.raises(WrongDevice, match="not an OpenBCI board"):
            drv.open()


def test_sixteen_channels_without_a_daisy_is_refused(board: CytonEmulator) -> None:
    drv = Cyton(CytonSettings(port=board.port, channels=CH16))
    with pytest.raises(WrongDevice, match="Daisy"):
        drv.open()


def test_a_silent_board_times_out_and_a_missing_port_is_not_found(board: CytonEmulator) -> None:
    board.stop_answering()
    drv = Cyton(CytonSettings(port=board.port, channels=CH8, reply_timeout_s=0.3))
    with pytest.raises(DeviceTimeout, match="no reply"):
        drv.open()
    with pytest.raises(DeviceNotFound):
        Cyton(CytonSettings(port="/nonexistent/ttyUSB9", channels=CH8)).open()


# ---------------------------------------------------------------- the whole rig


def test_sim_run_with_the_cyton_delivers_every_eeg_sample(tmp_path: Path) -> None:
    cfg = Path(__file__).resolve().parents[1] / "edge" / "configs" / "sim-cyton.toml"
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli", "run", "--config", str(cfg), "--sim", "--duration",
         "5", "--json", "--quiet", "--record-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    eeg = summary["streams"]["eeg"]
    # 16 channels at 125 Hz, for the run's own duration (start-up included)
    assert eeg["expected"] == pytest.approx(125 * summary["duration_s"], rel=0.15)
    assert eeg["dropped"] == 0 and eeg["received"] == eeg["expected"], eeg
    assert "direct mode" not in proc.stderr  # a buffered backend: no wake-floor warning


def test_selftest_passes_with_the_cyton_and_checks_no_host_floor(tmp_path: Path) -> None:
    cfg = Path(__file__).resolve().parents[1] / "edge" / "configs" / "sim-cyton.toml"
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli", "selftest", "--config", str(cfg), "--sim", "--json"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    devices = json.loads(proc.stdout.strip().splitlines()[-1])["devices"]
    # The test signal on all 16 channels, at the Daisy's 125 Hz; the board buffers, so
    # the host's wake floor is not its business.
    assert "16 channels" in devices["eeg"]["detail"] and "host" not in devices
