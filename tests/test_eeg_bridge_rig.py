"""The rig on the EEG bridge, recording: the file holds the emulators' truth, bit-exact.

The simulated rig (``hil.faults.run_with_faults``: real drivers, runtime, recorder) runs
on the shipped 8- and 64-channel configs with every ADS1299 gain present (per-channel
gains cycle through all seven), the MCAP is read back, and every recorded EEG count is
compared with what the bench's chip emulators produced for that sample index.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge import config
from edge.recording.format import open_recording
from hil.faults import run_with_faults
from sensors.ads1299 import GAIN_CODES

ALL_GAINS = sorted(GAIN_CODES)


def _truth(rig: Any) -> np.ndarray:
    """Every count the chips produced for the indices the driver delivered or dropped."""
    c = rig.eeg.counters
    n = int(c.samples + c.dropped)
    return np.concatenate([chip.truth(0, n)[1] for chip in rig.bench.eeg_bridge.chips], axis=1)


@pytest.mark.parametrize("name", ["sim", "sim-64"])
def test_recorded_eeg_is_the_emulators_truth_bit_exact_at_every_gain(name: str,
                                                                     tmp_path: Path) -> None:
    cfg = config.load(config.example_path(name)).with_all_simulated()
    n_ch = len(cfg.eeg["channels"])
    gains = [ALL_GAINS[i % len(ALL_GAINS)] for i in range(n_ch)]
    # The MCU in this process, where the test can ask its chips for the truth
    # (tests/test_spi_process.py shows the one in its own process gives the same samples).
    cfg = dataclasses.replace(
        cfg, rig={**cfg.rig, "record": True, "camera_store": "none"},
        eeg={**cfg.eeg, "gain": gains}, hub={**cfg.hub, "enabled": False},
        camera={**cfg.camera, "enabled": False}, sim={**cfg.sim, "bridge_mcu_process": False})
    assert config.eeg_link(cfg) == "bridge"
    run = run_with_faults(4.0, cfg=cfg, record_dir=tmp_path, processing=False,
                          at_end=_truth)
    assert run.errors == []
    (path,) = tmp_path.glob("*.mcap")
    eeg = open_recording(path).streams["eeg"]
    idx = eeg.index.astype(np.int64)
    assert eeg.raw.shape == (idx.size, n_ch)
    assert idx.size >= 2500 and idx[0] == 0 and (np.diff(idx) == 1).all()
    assert run.summary["streams"]["eeg"]["dropped"] == 0
    truth = run.extra["at_end"]
    np.testing.assert_array_equal(eeg.raw, truth[idx])
    # Every gain's scale went into the stream description the file carries.
    scale = np.asarray(eeg.info.scale)
    assert np.allclose(scale, 4.5 / (2**23 - 1) / np.asarray(gains) * 1e6)


def test_the_64_channel_rig_as_shipped_runs_the_bridge_mcu_in_its_own_process(
        tmp_path: Path) -> None:
    cfg = config.load(config.example_path("sim-64")).with_all_simulated()
    assert cfg.sim["bridge_mcu_process"]
    cfg = dataclasses.replace(cfg, rig={**cfg.rig, "record": False},
                              hub={**cfg.hub, "enabled": False},
                              camera={**cfg.camera, "enabled": False})
    run = run_with_faults(3.0, cfg=cfg, record_dir=tmp_path, processing=False,
                          at_end=lambda rig: (rig.bench.bridge_process.pid,
                                              rig.simulator_cpu_s()))
    assert run.errors == []
    eeg = run.summary["streams"]["eeg"]
    assert eeg["received"] >= 2000 and eeg["dropped"] == 0
    # The MCU's process is the bench's, not the rig's: its CPU is on the simulators' books.
    pid, sim_cpu_s = run.extra["at_end"]
    assert pid is not None and pid != os.getpid()
    assert sim_cpu_s > 0


def test_the_bridge_can_be_drained_from_its_own_process() -> None:
    from edge.acquisition import ProcessDriver
    from edge.rig import open_rig

    cfg = config.load(config.example_path("sim")).with_all_simulated()
    cfg = dataclasses.replace(cfg, eeg={**cfg.eeg, "bridge_process": True},
                              hub={**cfg.hub, "enabled": False},
                              camera={**cfg.camera, "enabled": False})
    rig = open_rig(cfg, duration_s=5.0)
    try:
        assert isinstance(rig.eeg, ProcessDriver)
        rig.eeg.start()
        blocks = []
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            blocks += rig.eeg.poll(0.05)
        rig.eeg.stop()
        blocks += rig.eeg.poll(0.5)
    finally:
        rig.close()
    idx = np.concatenate([b.index for b in blocks])
    assert idx.size >= 1000 and (np.diff(idx) == 1).all()
    assert rig.eeg.counters.dropped == 0
