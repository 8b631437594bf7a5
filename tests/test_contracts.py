"""The runtime's contracts are typed protocols (sensors/seams.py), and the drivers meet them."""

from __future__ import annotations

import pytest

from edge.rig import Rig, open_rig
from hil.faults import sim_config
from sensors.ads1299 import Ads1299
from sensors.camera import OpenCVSource, Picamera2Source
from sensors.hub import Hub
from sensors.seams import FrameDriver, SampleDriver

LIFECYCLE = ("open", "start", "poll", "stop", "close")


@pytest.mark.parametrize("cls", [Ads1299, Hub])
def test_every_sample_driver_class_has_the_whole_lifecycle(cls: type) -> None:
    assert all(callable(getattr(cls, m, None)) for m in LIFECYCLE), cls


@pytest.mark.parametrize("cls", [OpenCVSource, Picamera2Source])
def test_every_camera_backend_has_the_frame_driver_methods(cls: type) -> None:
    assert all(callable(getattr(cls, m, None)) for m in ("start", "read", "stop", "close"))


def test_the_simulated_rig_hands_the_runtime_protocol_conforming_devices() -> None:
    rig = open_rig(sim_config(), duration_s=5.0)
    try:
        assert isinstance(rig, Rig)
        assert isinstance(rig.eeg, SampleDriver)  # the acquisition process's proxy
        assert isinstance(rig.hub, SampleDriver)
        assert isinstance(rig.camera, FrameDriver)
        assert set(rig.sample_drivers()) == {"eeg", "hub"}
        assert {i.name for i in rig.stream_infos()} == {"eeg", "hub"}
    finally:
        rig.close()


def test_a_half_built_driver_is_not_a_sample_driver() -> None:
    class NoPoll:
        info = None
        counters = None

        def open(self) -> None: ...
        def start(self) -> None: ...
        def stop(self) -> None: ...
        def close(self) -> None: ...

    assert not isinstance(NoPoll(), SampleDriver)
