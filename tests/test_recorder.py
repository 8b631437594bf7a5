"""The recorder keeps every sample bit-exact, survives SIGKILL and a full disk, never blocks."""

from __future__ import annotations

import errno
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from small_disk import small_disk

from edge.recording.format import RecordingError, open_recording
from edge.recording.recorder import Recorder
from sensors.blocks import Frame, Marker

_spec = importlib.util.spec_from_file_location(
    "helpers_recorder_child", Path(__file__).with_name("helpers_recorder_child.py"))
child = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(child)

SEED = 1234


def _wait_for(pred, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _expected(info, ks) -> dict[str, np.ndarray]:
    blocks = [child.block(info, SEED, k) for k in ks]
    return {f: np.concatenate([getattr(b, f) for b in blocks])
            for f in ("index", "device_t", "host_t_ns", "raw", "trigger", "status")}


def _assert_stream_equal(got, info, ks) -> None:
    exp = _expected(info, ks)
    for f, want in exp.items():
        have = getattr(got, f)
        assert have.dtype == want.dtype, f
        np.testing.assert_array_equal(have, want, err_msg=f"{info.name}.{f}")


def _record_some(path: Path, n_blocks: int = 60, store: str = "raw") -> Recorder:
    rec = Recorder(path, [child.EEG, child.HUB], camera={"width": 160, "height": 120,
                                                         "store": store})
    for k in range(n_blocks):
        assert rec.write_block(child.block(child.EEG, SEED, k))
        assert rec.write_block(child.block(child.HUB, SEED, k))
        if k % 2 == 0:
            assert rec.write_frame(child.frame(SEED, k // 2))
    return rec


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    path = tmp_path / "rt.mcap"
    rec = _record_some(path)
    # Extreme values survive: the full int32 and uint32 ranges, not only 24 bits.
    edge_block = child.block(child.EEG, SEED, 60)
    edge_block.raw[0, :2] = (np.iinfo(np.int32).min, np.iinfo(np.int32).max)
    edge_block.status[0] = np.iinfo(np.uint32).max
    rec.write_block(edge_block)
    rec.write_marker(Marker(101, child.T0_NS + 123_456_789))
    rec.write_marker(Marker(100, child.T0_NS + 987_654_321))
    rec.write_clock("eeg", {"offset_ns": np.int64(-42), "drift_ppm": np.float64(12.5),
                            "pairs": np.arange(3)}, 55)
    rec.write_status("hub", {"state": "streaming", "battery_pct": 87}, 66)
    rec.write_event("me_spot", {"onset_ns": 5, "duration_s": 0.3, "score": 0.9}, 77)
    stats = rec.close()
    assert stats["status"] == "ok" and stats["dropped_queue"] == 0 and stats["fsyncs"] >= 1

    r = open_recording(path)
    assert r.complete and not r.problems
    assert r.streams["eeg"].info == child.EEG and r.streams["hub"].info == child.HUB
    _assert_stream_equal(r.streams["hub"], child.HUB, range(60))
    eeg = r.streams["eeg"]
    np.testing.assert_array_equal(eeg.raw[-10:], edge_block.raw)
    np.testing.assert_array_equal(eeg.status[-10:], edge_block.status)
    _assert_stream_equal(type(eeg)(eeg.info, *(a[:-10] for a in (
        eeg.index, eeg.device_t, eeg.host_t_ns, eeg.raw, eeg.trigger, eeg.status))),
        child.EEG, range(60))
    np.testing.assert_allclose(eeg.values[:-10], _expected(child.EEG, range(60))["raw"]
                               * child.EEG.scale[0])
    assert [f.seq for f in r.frames] == list(range(30))
    for f in r.frames:
        want = child.frame(SEED, f.seq)
        assert (f.t_ns, f.trigger) == (want.t_ns, want.trigger)
        np.testing.assert_array_equal(f.luma, want.luma)
    assert r.markers == [Marker(101, child.T0_NS + 123_456_789),
                         Marker(100, child.T0_NS + 987_654_321)]
    assert r.clock == [{"stream": "eeg", "t_ns": 55,
                        "state": {"offset_ns": -42, "drift_ppm": 12.5, "pairs": [0, 1, 2]}}]
    assert r.status == [{"device": "hub", "t_ns": 66,
                         "state": {"state": "streaming", "battery_pct": 87}}]
    assert r.events[0]["kind"] == "me_spot" and r.events[0]["payload"]["duration_s"] == 0.3
    assert r.camera == {"width": 160, "height": 120, "store": "raw"}


def test_a_full_segment_is_finished_and_recording_goes_on_in_the_next(tmp_path: Path) -> None:
    path = tmp_path / "rot.mcap"
    rec = Recorder(path, [child.EEG, child.HUB], camera={"width": 160, "height": 120},
                   chunk_period_s=0.02, max_segment_bytes=60_000)
    for k in range(120):
        rec.write_block(child.block(child.EEG, SEED, k))
        rec.write_block(child.block(child.HUB, SEED, k))
        if k % 2 == 0:
            rec.write_frame(child.frame(SEED, k // 2))
        time.sleep(0.002)  # several chunks, so several segments
    stats = rec.close()
    assert stats["status"] == "ok" and stats["write_errors"] == 0
    assert stats["segments"] >= 3
    r = open_recording(path)
    assert r.complete and not r.problems  # every segment has its summary and footer
    _assert_stream_equal(r.streams["eeg"], child.EEG, range(120))
    _assert_stream_equal(r.streams["hub"], child.HUB, range(120))
    assert [f.seq for f in r.frames] == list(range(60))


def test_png_store_is_lossless(tmp_path: Path) -> None:
    rec = _record_some(tmp_path / "png.mcap", n_blocks=8, store="png")
    rec.close()
    r = open_recording(tmp_path / "png.mcap")
    assert len(r.frames) == 4
    for f in r.frames:
        np.testing.assert_array_equal(f.luma, child.frame(SEED, f.seq).luma)


def test_truncated_file_reads_up_to_last_intact_chunk(tmp_path: Path) -> None:
    path = tmp_path / "cut.mcap"
    rec = Recorder(path, [child.EEG, child.HUB], chunk_period_s=0.05)
    for k in range(40):
        rec.write_block(child.block(child.EEG, SEED, k))
        if k % 10 == 9:  # several chunks: wait until this one is on disk
            _wait_for(lambda n=k + 1: rec.counters.written_messages >= n, 10, "chunk written")
    rec.close()
    full = path.read_bytes()
    whole = open_recording(path).streams["eeg"]
    seen_lengths = set()
    for cut in range(64, len(full), max(1, len(full) // 37)):
        cut_path = tmp_path / f"cut{cut}.mcap"
        cut_path.write_bytes(full[:cut])
        r = open_recording(cut_path)
        assert not r.complete
        s = r.streams.get("eeg")  # absent only when cut inside the file's first records
        n = len(s) if s is not None else 0
        seen_lengths.add(n)
        assert n % 10 == 0  # whole blocks only
        if s is not None:
            np.testing.assert_array_equal(s.raw, whole.raw[:n])
            np.testing.assert_array_equal(s.host_t_ns, whole.host_t_ns[:n])
    assert len(seen_lengths) >= 3  # several chunk boundaries were crossed


def test_missing_or_foreign_file_is_a_recording_error(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="no such recording"):
        open_recording(tmp_path / "nope.mcap")
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(os.urandom(1000))
    with pytest.raises(RecordingError, match="not an MCAP"):
        open_recording(junk)


def test_never_overwrites_a_recording(tmp_path: Path) -> None:
    path = tmp_path / "a.mcap"
    Recorder(path, [child.EEG]).close()
    with pytest.raises(FileExistsError):
        Recorder(path, [child.EEG])


@pytest.mark.timeout(90)
def test_sigkill_loses_at_most_the_last_second(tmp_path: Path) -> None:
    out, progress = tmp_path / "killed.mcap", tmp_path / "progress.txt"
    proc = subprocess.Popen([sys.executable, str(Path(child.__file__)), str(out),
                             str(progress), str(SEED)])
    try:
        def last_k() -> int:
            lines = progress.read_text().splitlines() if progress.exists() else []
            return int(lines[-2].split()[1]) if len(lines) >= 2 else -1

        _wait_for(lambda: last_k() >= 300 or proc.poll() is not None, 60, "3 s of recording")
        assert proc.poll() is None, "child died before the kill"
        kill_ns = time.monotonic_ns()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    handed = [tuple(int(x) for x in ln.split()[:2])
              for ln in progress.read_text().splitlines() if len(ln.split()) == 3]
    assert all(ln.split()[2] == "ok" for ln in progress.read_text().splitlines()[:-1])
    safe = [k for t_ns, k in handed if t_ns <= kill_ns - 1_000_000_000]
    assert safe, "no block was handed over a second before the kill"
    k_safe = max(safe)

    r = open_recording(out)
    assert not r.complete  # the footer was never written
    for info in (child.EEG, child.HUB):
        s = r.streams[info.name]
        n = (k_safe + 1) * child.BLOCK
        assert len(s) >= n, f"{info.name}: {len(s)} samples on disk, {n} handed over"
        part = type(s)(s.info, s.index[:n], s.device_t[:n], s.host_t_ns[:n], s.raw[:n],
                       s.trigger[:n], s.status[:n])
        _assert_stream_equal(part, info, range(k_safe + 1))
    frames = {f.seq: f for f in r.frames}
    for seq in range(k_safe // 2 + 1):
        np.testing.assert_array_equal(frames[seq].luma, child.frame(SEED, seq).luma)
    assert [m.code for m in r.markers][: k_safe // 50 + 1] == [
        100 + i for i in range(k_safe // 50 + 1)]


class _FakeDisk:
    """A file system with a byte budget: writes past it fail like a full disk."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self.lock = threading.Lock()

    def open(self, path: Path):
        return _BudgetFile(self, open(path, "xb", buffering=0))


class _BudgetFile:
    def __init__(self, disk: _FakeDisk, f) -> None:
        self.disk, self.f = disk, f

    def write(self, data) -> int:
        with self.disk.lock:
            room = self.disk.budget - self.disk.used
            if room < len(data):
                self.f.write(bytes(data[: max(room, 0)]))  # a torn write, as on a real disk
                self.disk.used += max(room, 0)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.disk.used += len(data)
        return self.f.write(data)

    def tell(self) -> int:
        return self.f.tell()

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        return self.f.fileno()

    def close(self) -> None:
        self.f.close()


def _write_until(rec: Recorder, start_k: int, pred, timeout_s: float) -> int:
    """Keep recording blocks (never raising) until pred() holds; returns the next k."""
    k = start_k
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, f"timed out; status {rec.status}"
        rec.write_block(child.block(child.EEG, SEED, k))
        k += 1
        time.sleep(0.005)
    return k


def _assert_disk_full_then_recovered(path: Path, rec: Recorder, free_space) -> None:
    k = _write_until(rec, 0, lambda: rec.status.startswith("error"), 20)
    assert "No space left" in rec.status
    k = _write_until(rec, k, lambda: rec.counters.write_errors >= 2, 20)  # still failing
    free_space()
    k = _write_until(rec, k, lambda: rec.status == "ok" and rec.counters.segments >= 2, 20)
    stats = rec.close()
    assert stats["status"] == "ok", stats
    assert stats["dropped_error"] == 0 and stats["dropped_queue"] == 0
    r = open_recording(path)
    # Nothing lost, nothing twice: the deferred chunk went into the new segment.
    _assert_stream_equal(r.streams["eeg"], child.EEG, range(k))
    assert len(r.segments) >= 2


def test_disk_full_sets_status_and_recovers_without_raising(tmp_path: Path) -> None:
    disk = _FakeDisk(budget=40_000)
    path = tmp_path / "full.mcap"
    rec = Recorder(path, [child.EEG], chunk_period_s=0.05, retry_period_s=0.1,
                   opener=disk.open)

    def free_space() -> None:
        with disk.lock:
            disk.budget += 10**9

    _assert_disk_full_then_recovered(path, rec, free_space)


def test_full_tmpfs_sets_status_and_recovers(tmp_path: Path) -> None:
    with small_disk(tmp_path, 1) as mnt:
        filler = mnt / "filler"
        filler.write_bytes(b"\0" * (1024 * 1024 - 64 * 1024))
        rec = Recorder(mnt / "rec.mcap", [child.EEG], chunk_period_s=0.05,
                       retry_period_s=0.1, min_free_bytes=0)  # no low-space stop: fill it
        _assert_disk_full_then_recovered(mnt / "rec.mcap", rec, filler.unlink)


def test_full_queue_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    armed, entered, release = threading.Event(), threading.Event(), threading.Event()

    class _HangingFile(_BudgetFile):
        def write(self, data) -> int:
            if armed.is_set():  # the disk hangs: the writer thread is stuck in write()
                entered.set()
                release.wait(30)
            return super().write(data)

    disk = _FakeDisk(10**9)
    rec = Recorder(tmp_path / "q.mcap", [child.EEG], queue_limit=20, chunk_period_s=0.05,
                   opener=lambda p: _HangingFile(disk, disk.open(p).f))
    try:
        armed.set()
        rec.write_block(child.block(child.EEG, SEED, 0))
        assert entered.wait(20), "writer never reached the disk"
        accepted = [rec.write_block(child.block(child.EEG, SEED, k)) for k in range(1, 201)]
        assert accepted.count(True) == 20 and accepted.count(False) == 180
        assert rec.counters.dropped_queue == 180
        assert rec.counters.dropped_samples["eeg"] == child.BLOCK * 180
        assert rec.write_frame(Frame(0, 0, np.zeros((4, 4), np.uint8))) is False
    finally:
        armed.clear()
        release.set()
        stats = rec.close()
    assert stats["status"] == "ok" and stats["written_messages"] == 21
