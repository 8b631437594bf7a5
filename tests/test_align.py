"""edge.clock.align: every stream on host time, in bounded rings; and the sync bench's targets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.clock.align import Aligner
from edge.clock.model import ClockModel
from hil.benchmarks import sync as bench_sync
from hil.sim.crystal import Crystal
from sensors.blocks import Frame, Marker, SampleBlock, StreamInfo

H0 = 3_000_000_000_000
EEG = StreamInfo("eeg", 1000.0, ("C3", "C4"), ("uV", "uV"), (1.0, 1.0), (0.0, 0.0), "sample")


def block(first: int, n: int, host0_ns: int = H0, index: np.ndarray | None = None) -> SampleBlock:
    idx = np.arange(first, first + n, dtype=np.int64) if index is None else index
    host = host0_ns + idx * 1_000_000
    values = np.stack([idx * 1.0, -idx * 1.0], axis=1)
    return SampleBlock("eeg", idx, idx.copy(), host, values.astype(np.int32), values,
                       np.zeros(idx.size, np.uint8), np.zeros(idx.size, np.uint32))


def test_window_returns_exactly_the_samples_in_the_half_open_window():
    al = Aligner(history_s=10.0)
    al.add_stream(EEG)  # no clock: the blocks' host times are used as they are
    for b in range(20):
        al.add_block("eeg", block(b * 50, 50))
    t0, t1 = H0 + 123_000_000, H0 + 456_000_000
    t, v = al.window("eeg", t0, t1)
    expected = np.arange(123, 456)
    np.testing.assert_array_equal(t, H0 + expected * 1_000_000)
    np.testing.assert_array_equal(v[:, 0], expected)
    assert al.window("eeg", t1, t1)[0].size == 0


def test_samples_map_through_the_clock_and_remap_when_it_moves():
    xtal = Crystal(ppm=100.0, origin_host_ns=H0)
    clock = ClockModel("eeg", 1000.0)
    al = Aligner(history_s=10.0)
    al.add_stream(EEG, clock)
    al.add_block("eeg", block(0, 500))  # coarse model: from the block's host times only
    assert clock.quality == "coarse"
    # Pulses fix the map; the stored samples follow on the next read.
    for k in range(5):
        h = H0 + k * 1_000_000_000
        clock.add_pair(float(xtal.device_s(h) * 1000), h)
    t, v = al.window("eeg", H0 - 10**9, H0 + 10**10)
    true = xtal.host_ns(v[:, 0] / 1000.0)
    assert np.abs(t - true).max() <= 5_000  # 5 pairs: the slope prior still pulls a little
    assert al.counters["eeg"]["remaps"] >= 1


def test_memory_stays_bounded_and_evictions_are_counted():
    al = Aligner(history_s=2.0)
    al.add_stream(EEG, ClockModel("eeg", 1000.0))
    cap = al.counters["eeg"]["capacity"]
    for b in range(200):  # 20 s of data into a 2 s history
        al.add_block("eeg", block(b * 100, 100))
    c = al.counters["eeg"]
    assert c["stored"] == cap and c["inserted"] == 20_000
    assert c["evicted"] == 20_000 - cap
    t, v = al.window("eeg", 0, 2**62)
    assert t.size == cap and v[-1, 0] == 19_999  # the newest survive, in order
    assert np.all(np.diff(v[:, 0]) == 1)


def test_an_oversized_block_keeps_its_newest_samples():
    al = Aligner(history_s=1.0)
    al.add_stream(EEG)
    cap = al.counters["eeg"]["capacity"]
    al.add_block("eeg", block(0, 3 * cap))
    _, v = al.window("eeg", 0, 2**62)
    assert v[0, 0] == 2 * cap and al.counters["eeg"]["evicted"] == 2 * cap


def test_a_reset_inside_a_block_splits_it_into_segments():
    clock = ClockModel("eeg", 1000.0)
    al = Aligner(history_s=10.0)
    al.add_stream(EEG, clock)
    al.add_block("eeg", block(0, 300))
    # Counter restarts at 0 in the middle of a block, 0.5 s after the last sample.
    idx = np.r_[np.arange(300, 320), np.arange(0, 80)]
    host = np.r_[H0 + np.arange(300, 320) * 1_000_000, H0 + 820_000_000 + np.arange(80) * 10**6]
    vals = np.stack([idx * 1.0, idx * 1.0], axis=1)
    b = SampleBlock("eeg", idx, idx.copy(), host, vals.astype(np.int32), vals,
                    np.zeros(100, np.uint8), np.zeros(100, np.uint32))
    al.add_block("eeg", b)
    assert clock.segment == 1 and al.counters["eeg"]["resets_split"] == 1
    t, _ = al.window("eeg", 0, 2**62)
    assert np.all(np.diff(t) > 0)  # old samples still map with the old segment's fit
    assert t[-1] - t[0] == pytest.approx(host[-1] - H0, abs=2_000_000)


def test_frames_and_markers_in_a_window_and_bounded():
    al = Aligner(history_s=5.0, frame_history_s=1.0, max_markers=4)
    al.add_camera("camera", fps=100.0)
    luma = np.zeros((2, 2), np.uint8)
    for i in range(300):
        al.add_frame("camera", Frame(seq=i, t_ns=H0 + i * 10_000_000, luma=luma))
    t, frames = al.frames("camera", H0 + 2_500_000_000, H0 + 2_600_000_000)
    assert [f.seq for f in frames] == list(range(250, 260))
    np.testing.assert_array_equal(t, [f.t_ns for f in frames])
    c = al.counters["camera"]
    assert c["stored"] == c["capacity"] < 300 and c["evicted"] == 300 - c["capacity"]
    for i in range(6):
        al.add_marker(Marker(code=101 + i, t_ns=H0 + i * 10**9))
    assert [m.code for m in al.markers(H0, H0 + 10 * 10**9)] == [103, 104, 105, 106]
    assert al.counters["markers"]["evicted"] == 2
    assert [m.code for m in al.markers(H0 + 3 * 10**9, H0 + 5 * 10**9)] == [104, 105]


def test_unknown_or_mismatched_streams_are_clear_errors():
    al = Aligner()
    al.add_stream(EEG)
    with pytest.raises(KeyError, match="hub"):
        al.window("hub", 0, 1)
    with pytest.raises(ValueError, match="not a camera"):
        al.add_frame("eeg", Frame(seq=0, t_ns=0, luma=np.zeros((1, 1), np.uint8)))
    with pytest.raises(ValueError, match="twice"):
        al.add_stream(EEG)


# ---------------------------------------------------------------- the sync bench


@pytest.mark.parametrize("eeg_link", ["bridge", "spi"])
def test_sync_bench_meets_its_targets(capsys, eeg_link):
    rc = bench_sync.main(["--minutes", "2", "--drift-ppm", "100", "--jitter-ms", "2",
                          "--seed", "3", "--eeg-link", eeg_link, "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"eeg", "hub", "camera"}
    assert result["eeg"]["p99_ms"] < 0.5
    assert result["hub"]["p99_ms"] < 0.5
    assert result["camera"]["p99_ms"] < 1000 / 150 / 2
    for r in result.values():
        assert r["n_pulses"] >= 100 and r["met"]
        assert r["p50_ms"] <= r["p99_ms"]
    for name in ("eeg", "hub"):  # the camera's map has no drift; its frame steps blur it
        assert abs(result[name]["fit_ppm"] - result[name]["true_ppm"]) < 5


def test_sync_bench_survives_reset_step_and_strobe_gap(capsys):
    assert bench_sync.main(["--minutes", "2", "--faults", "--seed", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["eeg"]["segments"] >= 1 and result["hub"]["segments"] >= 1
    assert all(r["met"] for r in result.values())
