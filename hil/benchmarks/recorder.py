"""Recorder throughput: the full rig's data rate written as fast as the recorder takes it.

    mmme-hil bench recorder [--seconds S] [--store raw|lossless|face|png|jpeg] [--dir DIR]

8 EEG channels + 5 hub channels at 1000 Hz (10-sample blocks) and a 320x240 camera at
150 fps. The producer keeps the recorder's queue below half full (so nothing is dropped)
and the clock stops after close() has written the summary and fsynced. The last line is
one JSON object {"realtime_factor": x, "mb_per_s": y, "flush_stall_ms": {...}} (y: file
bytes per wall second).

``flush_stall_ms``: how long one chunk flush (0.5 s of 200 fps frames, ~8 MB) keeps
other Python threads waiting, as the worst lateness of a thread sleeping 0.5 ms at a
time, median over interleaved flushes: mcap's own Writer against the recorder's
(:mod:`edge.recording.mcap_io`), compared in one run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from edge import malloc
from edge.recording.mcap_io import NO_AUTO_CHUNK, open_writer
from edge.recording.recorder import Recorder
from sensors.blocks import Frame, SampleBlock, StreamInfo

EEG = StreamInfo("eeg", 1000.0, tuple(f"EEG{i + 1}" for i in range(8)), ("uV",) * 8,
                 (4.5 / (2**23 - 1) / 24 * 1e6,) * 8, (0.0,) * 8, "sample")
HUB = StreamInfo("hub", 1000.0, ("PPG", "RSP", "EDA", "SKT", "ECG"),
                 ("mV", "mV", "uS", "degC", "mV"), (0.001, 0.001, 0.0001, 0.01, 0.001),
                 (0.0,) * 5, "us")
BLOCK = 10  # samples per block
FPS = 150.0


def _frames(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    # Camera-like content: a smooth face-sized blob plus sensor noise (not white noise,
    # which no lossless coder can shrink, nor a flat image, which flatters it).
    y, x = np.mgrid[0:240, 0:320]
    base = 90 + 60 * np.exp(-(((x - 160) / 70.0) ** 2 + ((y - 120) / 90.0) ** 2))
    return [np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)
            for _ in range(n)]


def _block(info: StreamInfo, k: int, raw: np.ndarray, t0_ns: int) -> SampleBlock:
    idx = np.arange(k * BLOCK, (k + 1) * BLOCK, dtype=np.int64)
    host = t0_ns + idx * 1_000_000
    dev = idx if info.device_time_unit == "sample" else idx * 1000
    return SampleBlock(info.name, idx, dev, host, raw, raw * 1.0,
                       np.zeros(BLOCK, np.uint8), np.zeros(BLOCK, np.uint32))


def run(seconds: float, store: str, out_dir: Path) -> dict[str, float]:
    rng = np.random.default_rng(7)
    frames = _frames(64, rng)  # cycle longer than the zstd window
    eeg_raw = [rng.integers(-2**23, 2**23, (BLOCK, 8), dtype=np.int32) for _ in range(16)]
    hub_raw = [rng.integers(0, 2**16, (BLOCK, 5), dtype=np.int32) for _ in range(16)]
    path = out_dir / f"bench-{time.time_ns()}.mcap"
    rec = Recorder(path, [EEG, HUB], camera={"width": 320, "height": 240, "fps": FPS,
                                               "store": store})
    n_blocks = int(seconds * 1000 / BLOCK)
    frame_every = 1000 / BLOCK / FPS  # frames per block period
    t0_ns = 1_000_000_000
    frame_k = 0
    t_start = time.perf_counter()
    for k in range(n_blocks):
        while rec.queue_fill() > 0.5:  # keep up without drops: the bench measures writing
            time.sleep(0.001)
        rec.write_block(_block(EEG, k, eeg_raw[k % 16], t0_ns))
        rec.write_block(_block(HUB, k, hub_raw[k % 16], t0_ns))
        while frame_k * frame_every < k + 1:
            rec.write_frame(Frame(frame_k, t0_ns + int(frame_k * 1e9 / FPS),
                                  frames[frame_k % 64]))
            frame_k += 1
    stats = rec.close()
    wall_s = time.perf_counter() - t_start
    size = sum(p.stat().st_size for p in rec.segments)
    dropped = stats["dropped_queue"] + stats["dropped_error"]
    print(f"wrote {seconds:g} s of rig data ({n_blocks * BLOCK} samples x 2 streams, "
          f"{frame_k} frames 320x240, store={store}) in {wall_s:.2f} s")
    print(f"file {size / 1e6:.1f} MB, {stats['chunks']} chunks, {stats['fsyncs']} fsyncs, "
          f"dropped {dropped}, status {stats['status']}")
    return {"realtime_factor": round(seconds / wall_s, 2),
            "mb_per_s": round(size / wall_s / 1e6, 2)}


def flush_stall_ms(out_dir: Path, reps: int = 8, fps: float = 200.0) -> dict[str, float]:
    """Median worst sleeper lateness during one chunk flush, per writer (see module doc)."""
    from mcap.writer import CompressionType, Writer

    frames = [f.tobytes() for f in _frames(int(fps / 2), np.random.default_rng(5))]
    late: list[tuple[float, float]] = []
    done = threading.Event()

    def sleeper() -> None:
        while not done.is_set():
            t = time.perf_counter()
            time.sleep(0.0005)
            late.append((t, time.perf_counter() - t - 0.0005))

    def one_flush(make: object) -> float:
        f = open(out_dir / "stall.mcap", "wb")  # noqa: SIM115 (closed below)
        w = make(f, chunk_size=NO_AUTO_CHUNK,  # type: ignore[operator]
                 compression=CompressionType.ZSTD)
        w.start("bench", "bench")
        ch = w.register_channel("frames", "raw", w.register_schema("f", "raw", b""))
        for i, d in enumerate(frames):
            w.add_message(ch, i, d, i, i)
        time.sleep(0.02)
        t0 = time.perf_counter()
        w.flush()
        t1 = time.perf_counter()
        f.close()
        time.sleep(0.005)
        return max((d for t, d in late if t0 - 0.001 <= t <= t1), default=0.0) * 1e3

    old = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)  # as the rig runs
    th = threading.Thread(target=sleeper, daemon=True)
    th.start()
    try:
        runs: dict[str, list[float]] = {"mcap_writer": [], "recorder": []}
        for _ in range(reps):
            runs["mcap_writer"].append(one_flush(Writer))
            runs["recorder"].append(one_flush(open_writer))
    finally:
        done.set()
        th.join()
        sys.setswitchinterval(old)
    return {k: round(float(np.median(v)), 2) for k, v in runs.items()}


def main(argv: list[str] | None = None) -> int:
    malloc.tune()  # as `mmme-edge run` does: the allocator shapes what a big copy costs
    p = argparse.ArgumentParser(prog="mmme-hil bench recorder")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds of rig data")
    p.add_argument("--store", default="raw", choices=("raw", "lossless", "face", "png", "jpeg"))
    p.add_argument("--dir", help="where to write (default: a temporary directory)")
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    tmp = None if args.dir else tempfile.mkdtemp(prefix="mmme-bench-")
    out_dir = Path(args.dir or tmp)
    try:
        result = run(args.seconds, args.store, out_dir)
        result["flush_stall_ms"] = flush_stall_ms(out_dir)
        print(f"one chunk flush holds other threads up (median worst): mcap Writer "
              f"{result['flush_stall_ms']['mcap_writer']} ms, recorder "
              f"{result['flush_stall_ms']['recorder']} ms")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
