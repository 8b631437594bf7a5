"""An emulated SPI device in a process of its own (hil.sim.spi_process).

The bridge driver must get the same samples from the MCU emulated in its own process as
from the same emulator in the test's process; a device that cannot be built, or whose
process dies, is a clear OSError (what spidev raises), never a hang.
"""

from __future__ import annotations

import functools
import os
import signal
import time

import numpy as np
import pytest

from hil.sim.ads1299 import Ads1299Emulator
from hil.sim.crystal import Crystal
from hil.sim.eeg_bridge import EegBridgeEmulator
from hil.sim.spi_process import SpiDeviceProcess
from sensors.ads1299 import Ads1299Settings
from sensors.blocks import SampleBlock, monotonic_ns
from sensors.eeg_bridge import EegBridge, LinkSettings

N_CHIPS = 2
NAMES = [f"E{i}" for i in range(8 * N_CHIPS)]
GAINS = (1, 2, 4, 6, 8, 12, 24, 24, 24, 12, 8, 6, 4, 2, 1, 24)


def emulated_bridge(t0_ns: int) -> EegBridgeEmulator:
    """Picklable recipe: two chips on one crystal behind the MCU (deterministic per seed)."""
    crystal = Crystal(ppm=40.0, origin_host_ns=t0_ns)
    chips = [Ads1299Emulator(crystal, seed=3, chip_index=i, channels=tuple(NAMES[8 * i:8 * i + 8]))
             for i in range(N_CHIPS)]
    return EegBridgeEmulator(chips, fifo_frames=1024, seed=3)


def no_device() -> EegBridgeEmulator:
    raise ValueError("no such chip")


def drain(bus: object, seconds: float) -> tuple[EegBridge, np.ndarray, np.ndarray]:
    drv = EegBridge(bus, Ads1299Settings(n_chips=N_CHIPS, channels=NAMES, gains=GAINS),
                    LinkSettings(drain_s=0.02))
    drv.open()
    drv.start()
    blocks: list[SampleBlock] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        blocks += drv.poll(0.05)
    drv.stop()
    blocks += drv.poll(0.5)
    drv.close()
    idx = np.concatenate([b.index for b in blocks]).astype(np.int64)
    raw = np.concatenate([b.raw for b in blocks])
    return drv, idx, raw


def test_the_mcu_in_its_own_process_gives_the_samples_it_gives_in_process() -> None:
    t0 = monotonic_ns()
    _, idx_here, raw_here = drain(emulated_bridge(t0), 1.0)
    remote = SpiDeviceProcess(functools.partial(emulated_bridge, t0), name="sim-bridge")
    assert remote.pid is not None and remote.pid != os.getpid()
    drv, idx, raw = drain(remote, 1.0)
    assert drv.counters.dropped == 0
    assert idx.size >= 900 and idx[0] == 0 and (np.diff(idx) == 1).all()
    n = min(idx.size, idx_here.size)
    np.testing.assert_array_equal(raw[:n], raw_here[:n])  # every gain, both chips


def test_a_device_that_cannot_be_built_is_a_clear_error() -> None:
    with pytest.raises(OSError, match="sim-broken: ValueError: no such chip"):
        SpiDeviceProcess(no_device, name="sim-broken")


def test_a_device_process_that_dies_is_an_oserror_not_a_hang() -> None:
    bus = SpiDeviceProcess(functools.partial(emulated_bridge, monotonic_ns()), name="sim-bridge")
    assert bus.pid is not None
    os.kill(bus.pid, signal.SIGKILL)
    t = time.monotonic()
    with pytest.raises(OSError, match="sim-bridge: the device process"):
        bus.xfer(bytes(8))
    assert time.monotonic() - t < 6.0  # the transfer timeout, not for ever
    bus.close()
