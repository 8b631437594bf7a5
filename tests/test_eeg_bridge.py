"""The EEG bridge: protocol, host driver against the emulated microcontroller, link faults.

Every test runs the real driver (sensors.eeg_bridge) over the SpiBus seam against
hil.sim.eeg_bridge, which wraps the register-level ADS1299 emulators: the chips are
configured by the same register code as in direct mode, through pass-through, and the
emulators know the truth of every sample. Link faults are injected through the
emulator's public hooks; each must be counted and recovered from, and every lost sample
must be a counted index gap.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from driver_runs import cat, streaming

from hil.sim.ads1299 import Ads1299Emulator
from hil.sim.crystal import Crystal
from hil.sim.eeg_bridge import EegBridgeEmulator
from sensors import bridge_protocol as bp
from sensors.ads1299 import GAIN_CODES, Ads1299Settings
from sensors.blocks import SampleBlock, monotonic_ns
from sensors.eeg_bridge import EegBridge, LinkSettings
from sensors.errors import DeviceError, DeviceTimeout, WrongDevice

DOC = Path(__file__).resolve().parents[1] / "docs" / "eeg-bridge-protocol.md"
ALL_GAINS = sorted(GAIN_CODES)


def make(n_chips: int = 1, gains: int | tuple[int, ...] = 24, fifo_frames: int = 1024,
         chip_id: int = 0x3E, link: LinkSettings | None = None, seed: int = 0,
         ) -> tuple[EegBridge, EegBridgeEmulator]:
    crystal = Crystal(ppm=40.0, origin_host_ns=monotonic_ns())
    names = [f"E{i}" for i in range(8 * n_chips)]
    chips = [Ads1299Emulator(crystal, seed=seed, chip_index=i, chip_id=chip_id,
                             channels=tuple(names[8 * i:8 * i + 8])) for i in range(n_chips)]
    emu = EegBridgeEmulator(chips, fifo_frames=fifo_frames, seed=seed)
    settings = Ads1299Settings(n_chips=n_chips, channels=names, gains=gains)
    return EegBridge(emu, settings, link or LinkSettings(drain_s=0.02)), emu


def collect(drv: EegBridge, seconds: float) -> list[SampleBlock]:
    blocks: list[SampleBlock] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.monotonic()
        blocks += drv.poll(0.05)
        assert time.monotonic() - t < 0.5, "poll must return within its timeout"
    return blocks


def truth_of(emu: EegBridgeEmulator, k: np.ndarray) -> np.ndarray:
    """Counts the chips produced at run sample indices ``k`` (n, 8 * chips)."""
    n = int(k.max()) + 1
    full = np.concatenate([c.truth(0, n)[1] for c in emu.chips], axis=1)
    return full[k]


# ----------------------------------------------------------------------- protocol


def test_crc_is_crc32_iso_hdlc_with_the_documented_check_value() -> None:
    assert bp.crc32(b"123456789") == bp.CRC_CHECK == 0xCBF43926


def test_a_request_and_its_answer_round_trip_and_a_flipped_bit_is_caught() -> None:
    req = bp.request(bp.READ_FIFO, (20).to_bytes(2, "little"), tag=7)
    assert bp.parse_request(req) == (bp.READ_FIFO, 7, b"\x14\x00")
    for i in range(len(req)):
        bad = bytearray(req)
        bad[i] ^= 0x10
        assert bp.parse_request(bytes(bad)) is None
    rsp = bp.response(bp.STATUS, 7, bp.OK, b"abc")
    assert bp.parse_response(rsp, bp.STATUS, 7) == b"abc"
    with pytest.raises(bp.Stale):
        bp.parse_response(rsp, bp.STATUS, 8)
    with pytest.raises(bp.NotReady):
        bp.parse_response(bytes(len(rsp)), bp.STATUS, 7)
    bad = bytearray(rsp)
    bad[7] ^= 1
    with pytest.raises(bp.CrcMismatch):
        bp.parse_response(bytes(bad), bp.STATUS, 7)


def _doc_hex(label: str) -> bytes:
    """The bytes after ``label`` in the protocol document's worked example."""
    text = DOC.read_text()
    m = re.search(re.escape(label) + r"\s*\n```\n(.*?)```", text, re.S)
    assert m, f"{label} not in {DOC.name}"
    return bytes.fromhex(" ".join(line.split("#")[0] for line in m.group(1).splitlines()))


def test_the_documents_worked_example_is_what_the_code_sends_and_parses() -> None:
    assert _doc_hex("STATUS request, tag 0x01:") == bp.request(bp.STATUS, tag=1)
    status = bp.BridgeStatus(flags=bp.FLAG_RUNNING, resets=0, fifo_level=2,
                             overflow_frames=0, drdy_missed=0, next_seq=1002,
                             now_us=12_345_678, rx_crc_errors=0)
    assert _doc_hex("STATUS response:") == bp.response(bp.STATUS, 1, bp.OK, status.pack())
    assert _doc_hex("READ_FIFO request for 2 frames, tag 0x02:") == bp.request(
        bp.READ_FIFO, (2).to_bytes(2, "little"), tag=2)
    rsp = _doc_hex("READ_FIFO response (one chip, 2 frames):")
    st, seq, t_us, frames = bp.decode_fifo(bp.parse_response(rsp, bp.READ_FIFO, 2), 1)
    assert st.fifo_level == 0 and seq.tolist() == [1000, 1001]
    assert t_us.tolist() == [12_343_702, 12_344_702]
    assert frames.shape == (2, 27) and frames[0, 0] == 0xC0 and frames[1, 2] == 0x08


# ----------------------------------------------------------------------- data


@pytest.mark.parametrize("n_chips", [1, 8])
def test_every_sample_arrives_bit_exact_at_every_gain(n_chips: int) -> None:
    gains = tuple(ALL_GAINS[i % len(ALL_GAINS)] for i in range(8 * n_chips))
    drv, emu = make(n_chips, gains=gains)
    with streaming(drv) as blocks:
        blocks += collect(drv, 0.6)
    idx = cat(blocks, "index")
    assert idx[0] == 0 and np.array_equal(idx, np.arange(idx.size))
    assert idx.size >= 400
    assert drv.counters.dropped == 0 and drv.counters.errors == 0
    assert np.array_equal(cat(blocks, "raw"), truth_of(emu, idx))
    assert np.array_equal(cat(blocks, "device_t"), idx)
    uv = cat(blocks, "values")
    assert np.allclose(uv, cat(blocks, "raw") * (4.5 / (2**23 - 1) / np.array(gains) * 1e6))


def test_host_stamps_from_the_mcu_counter_are_causal_and_within_a_ms_of_drdy() -> None:
    drv, emu = make(1)
    drv.open()
    drv.start()
    blocks = collect(drv, 0.5)
    idx, host = cat(blocks, "index"), cat(blocks, "host_t_ns")
    drdy_ns, _ = emu.chips[0].frames(0, int(idx.max()) + 1)  # the chip's DRDY instants
    drv.stop()
    err = host - drdy_ns[idx]
    assert (err >= 0).all(), "a stamp before the sample was taken"
    # Not the 20-ms burst: the MCU's counter places each sample, offset by the quickest
    # read seen so far (measured 0.03-0.05 ms on a quiet machine, 2.3 ms until a quick
    # read came on a loaded one). Stamped at arrival, a burst's median would be ~10 ms.
    assert np.percentile(err, 50) < 5_000_000


def test_wrong_chip_count_wrong_chip_id_and_no_bridge_are_clear_errors() -> None:
    crystal = Crystal(ppm=0.0, origin_host_ns=monotonic_ns())
    emu = EegBridgeEmulator([Ads1299Emulator(crystal, chip_index=i) for i in range(2)])
    with pytest.raises(WrongDevice, match="2 chip"):
        EegBridge(emu, Ads1299Settings()).open()
    drv, _ = make(1, chip_id=0x3C)
    with pytest.raises(WrongDevice, match="0x3C"):
        drv.open()
    drv, emu = make(1, link=LinkSettings(response_timeout_s=0.01))
    emu.stop_answering()
    t = time.monotonic()
    with pytest.raises(DeviceTimeout, match="no answer"):
        drv.open()
    assert time.monotonic() - t < 1.0


# ----------------------------------------------------------------------- link faults


def _run_with(fault, seconds: float = 1.2, **kw) -> tuple[EegBridge, EegBridgeEmulator,
                                                         list[SampleBlock]]:
    drv, emu = make(**kw)
    with streaming(drv) as blocks:
        blocks += collect(drv, 0.3)
        fault(emu)
        blocks += collect(drv, seconds)
    return drv, emu, blocks


def _exact_and_gaps_counted(drv: EegBridge, emu: EegBridgeEmulator,
                            blocks: list[SampleBlock]) -> np.ndarray:
    idx = cat(blocks, "index")
    assert (np.diff(idx) > 0).all()
    missing = int(idx[-1] - idx[0] + 1 - idx.size) + int(idx[0])
    assert drv.counters.dropped == missing  # every lost sample is a counted index gap
    return idx


def test_corrupted_answers_are_counted_and_read_again_nothing_is_lost() -> None:
    drv, emu, blocks = _run_with(lambda e: e.corrupt_responses(6))
    idx = _exact_and_gaps_counted(drv, emu, blocks)
    c = drv.counters
    assert c.extra["crc_errors"] + c.extra["not_ready"] + c.extra["stale"] + \
        c.extra["rejected"] >= 6 - 1
    assert c.extra["crc_errors"] >= 3
    assert c.dropped == 0
    assert np.array_equal(cat(blocks, "raw"), truth_of(emu, idx))


def test_corrupted_requests_are_refused_by_the_bridge_and_sent_again() -> None:
    drv, emu, blocks = _run_with(lambda e: e.corrupt_requests(5))
    idx = _exact_and_gaps_counted(drv, emu, blocks)
    assert emu.rx_crc_errors + drv.counters.extra["stale"] >= 5
    assert drv.counters.extra["rejected"] + drv.counters.extra["stale"] >= 5
    assert drv.counters.dropped == 0
    assert np.array_equal(cat(blocks, "raw"), truth_of(emu, idx))


def test_a_burst_of_corruption_abandons_one_read_and_its_frames_are_a_counted_gap() -> None:
    # More bad copies than retries: the READ_FIFO is given up (resync) and its frames are
    # gone from the FIFO, so the next read starts with a sequence gap.
    drv, emu, blocks = _run_with(lambda e: e.corrupt_responses(40), seconds=1.0)
    idx = _exact_and_gaps_counted(drv, emu, blocks)
    assert drv.counters.resyncs >= 1
    assert drv.counters.extra["seq_gap"] == drv.counters.dropped
    assert np.array_equal(cat(blocks, "raw"), truth_of(emu, idx))


def test_a_host_stall_longer_than_the_fifo_overflows_and_the_gap_is_counted() -> None:
    drv, emu = make(fifo_frames=1000)
    with streaming(drv) as blocks:
        blocks += collect(drv, 0.2)
        time.sleep(1.5)  # the host stalls: 1.5 s of frames into a 1-s FIFO
        blocks += collect(drv, 0.3)
    idx = _exact_and_gaps_counted(drv, emu, blocks)
    c = drv.counters
    assert c.extra["fifo_overflow"] >= 300
    assert c.extra["seq_gap"] == c.extra["fifo_overflow"] == c.dropped
    assert c.extra["max_fifo_level"] == 1000
    assert np.array_equal(cat(blocks, "raw"), truth_of(emu, idx))


def test_a_forced_overflow_drops_exactly_those_frames_as_one_counted_gap() -> None:
    drv, emu, blocks = _run_with(lambda e: e.force_overflow(123), seconds=0.4)
    idx = _exact_and_gaps_counted(drv, emu, blocks)
    assert drv.counters.dropped == drv.counters.extra["fifo_overflow"] == 123
    assert int((np.diff(idx) - 1).sum()) == 123
    assert np.array_equal(cat(blocks, "raw"), truth_of(emu, idx))


def test_a_bridge_reset_is_detected_the_chips_reconfigured_and_the_stream_resumes() -> None:
    drv, emu, blocks = _run_with(lambda e: e.reset(), seconds=0.8, gains=6)
    c = drv.counters
    assert c.extra["bridge_resets"] == 1
    idx = cat(blocks, "index")
    dev = cat(blocks, "device_t")
    assert (np.diff(idx) > 0).all()
    restart = int(np.flatnonzero(np.diff(dev) < 0)[0]) + 1  # device time restarts at 0
    assert dev[restart] == 0
    assert c.dropped == c.extra["reset_gap"] + c.extra["seq_gap"]
    assert idx[-1] - idx[0] + 1 - idx.size == c.dropped
    # After the reset the chips run the configured gain again: the data is the truth.
    after = dev[restart:]
    got = cat(blocks, "raw")[restart:]
    assert np.array_equal(got, truth_of(emu, after))
    assert after.size >= 500


def test_a_bridge_that_stops_answering_is_counted_never_hangs_and_is_picked_up_again() -> None:
    drv, emu = make(link=LinkSettings(response_timeout_s=0.01, backoff_s=0.02,
                                      backoff_max_s=0.2))
    with streaming(drv) as blocks:
        blocks += collect(drv, 0.3)
        emu.stop_answering(level=0xFF)
        blocks += collect(drv, 0.7)
        assert drv.stalled
        assert drv.counters.extra["timeouts"] == 1
        emu.resume_answering()
        blocks += collect(drv, 0.6)
        assert not drv.stalled
    idx = _exact_and_gaps_counted(drv, emu, blocks)
    # The MCU went on servicing DRDY into its 1-s FIFO: nothing was lost.
    assert drv.counters.dropped == 0
    assert np.array_equal(cat(blocks, "raw"), truth_of(emu, idx))


def test_a_hung_bridge_rebooted_by_its_watchdog_is_recovered_with_the_gap_counted() -> None:
    drv, emu = make(link=LinkSettings(response_timeout_s=0.01, backoff_s=0.02,
                                      backoff_max_s=0.2))
    with streaming(drv) as blocks:
        blocks += collect(drv, 0.3)
        emu.stop_answering(hung=True)
        blocks += collect(drv, 0.5)
        emu.reset()  # the watchdog
        emu.resume_answering()
        blocks += collect(drv, 0.8)
    c = drv.counters
    assert c.extra["timeouts"] == 1 and c.extra["bridge_resets"] == 1
    idx = cat(blocks, "index")
    assert idx[-1] - idx[0] + 1 - idx.size == c.dropped
    assert c.extra["reset_gap"] >= 400  # the hang: about half a second of samples
    assert idx.size >= 900


def test_frames_dropped_after_the_last_read_are_counted_at_stop() -> None:
    drv, _ = make(fifo_frames=1000)
    with streaming(drv) as blocks:
        blocks += collect(drv, 0.2)
        time.sleep(1.3)  # the FIFO fills; the newest frames are dropped; then STOP
    c = drv.counters
    assert c.extra["fifo_overflow"] >= 200
    assert c.dropped == c.extra["seq_gap"] == c.extra["fifo_overflow"]
    idx = cat(blocks, "index")
    assert np.array_equal(idx, np.arange(idx.size))  # the loss is all after the last frame


def test_a_link_that_only_returns_garbage_is_a_clear_device_error_at_open() -> None:
    drv, emu = make()
    emu.corrupt_responses(1000)
    with pytest.raises(DeviceError, match="link keeps failing"):
        drv.open()


def test_a_stuck_drdy_behind_the_bridge_shows_as_stalled_and_counted() -> None:
    drv, emu = make()
    drv.open()
    drv.start()
    collect(drv, 0.3)
    emu.chips[0].stick_drdy()
    collect(drv, 0.5)
    assert drv.stalled  # the bridge's DRDY_TIMEOUT flag, after 100 ms without DRDY
    assert drv.counters.extra["drdy_timeouts"] >= 5
    emu.chips[0].release_drdy()
    collect(drv, 0.3)
    assert not drv.stalled
    drv.stop()
    # The periods without DRDY are missed by the bridge: a counted sequence gap.
    c = drv.counters
    assert c.extra["bridge_drdy_missed"] >= 400
    assert c.dropped == c.extra["seq_gap"] == c.extra["bridge_drdy_missed"]
