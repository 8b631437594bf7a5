"""Child process for the SIGKILL test, and the deterministic data both sides regenerate.

    python helpers_recorder_child.py OUT.mcap PROGRESS.txt SEED

Records in real time (a 10-sample block of EEG and hub every 10 ms, a 160x120 frame every
20 ms) until killed. After each hand-over it appends ``<monotonic_ns> <k>`` to PROGRESS:
block k (and every block before it) was given to the recorder at that host time.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sensors.blocks import Frame, Marker, SampleBlock, StreamInfo  # noqa: E402

BLOCK = 10
EEG = StreamInfo("eeg", 1000.0, tuple(f"EEG{i + 1}" for i in range(8)), ("uV",) * 8,
                 (4.5 / (2**23 - 1) / 24 * 1e6,) * 8, (0.0,) * 8, "sample")
HUB = StreamInfo("hub", 1000.0, ("PPG", "RSP", "EDA", "SKT", "ECG"),
                 ("mV", "mV", "uS", "degC", "mV"), (0.001, 0.001, 0.0001, 0.01, 0.001),
                 (0.0, 0.0, 0.0, 20.0, 0.0), "us")
T0_NS = 10**12  # synthetic host time of sample 0, so blocks are reproducible


def block(info: StreamInfo, seed: int, k: int) -> SampleBlock:
    """Block k of a stream: same seed and k give the same bytes in any process."""
    rng = np.random.default_rng([seed, k, len(info.channels)])
    n_ch = len(info.channels)
    idx = np.arange(k * BLOCK, (k + 1) * BLOCK, dtype=np.int64)
    raw = rng.integers(-(2**23), 2**23, (BLOCK, n_ch), dtype=np.int32)
    host = T0_NS + idx * 1_000_000 + rng.integers(0, 50_000, BLOCK)
    dev = idx if info.device_time_unit == "sample" else idx * 1000 + 7
    trig = (idx % 1000 < 10).astype(np.uint8)
    status = np.full(BLOCK, 0xC00000, dtype=np.uint32) | rng.integers(0, 16, BLOCK, np.uint32)
    values = raw * np.asarray(info.scale) + np.asarray(info.offset)
    return SampleBlock(info.name, idx, dev, host, raw, values, trig, status)


def frame(seed: int, seq: int, shape: tuple[int, int] = (120, 160)) -> Frame:
    rng = np.random.default_rng([seed, seq, 99])
    luma = rng.integers(0, 256, shape, dtype=np.uint8)
    return Frame(seq=seq, t_ns=T0_NS + seq * 20_000_000, luma=luma, trigger=seq % 2)


def main(argv: list[str]) -> int:
    from edge.recording.recorder import Recorder

    out, progress, seed = Path(argv[0]), Path(argv[1]), int(argv[2])
    rec = Recorder(out, [EEG, HUB], camera={"width": 160, "height": 120, "fps": 50.0})
    start_ns = time.monotonic_ns()
    with open(progress, "w", buffering=1) as prog:
        k = 0
        while True:
            due_ns = start_ns + k * 10_000_000
            delay = (due_ns - time.monotonic_ns()) / 1e9
            if delay > 0:
                time.sleep(delay)
            rec.write_block(block(EEG, seed, k))
            rec.write_block(block(HUB, seed, k))
            if k % 2 == 0:
                rec.write_frame(frame(seed, k // 2))
            if k % 50 == 0:
                rec.write_marker(Marker(100 + k // 50, T0_NS + k * 10_000_000))
            prog.write(f"{time.monotonic_ns()} {k} {rec.status}\n")
            k += 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
