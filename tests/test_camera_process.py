"""The simulated camera's sensor in a process of its own (hil.sim.camera_process).

The frames a reader gets from the sensor's own process are the frames the same camera
renders in the reader's process, bit for bit; a reader that falls behind by more than
the sensor's ring loses frames that are counted, each one a gap in ``seq``; a camera
that cannot be built is a clear error.
"""

from __future__ import annotations

import functools
import os
import time

import numpy as np
import pytest

from hil.sim.camera import SimCamera
from hil.sim.camera_process import CameraProcess
from hil.sim.crystal import Crystal
from hil.sim.scenario import generate
from sensors.blocks import Frame, monotonic_ns

FPS = 150.0


def camera(t0_ns: int, buffer_frames: int = 4) -> SimCamera:
    """Picklable recipe: a 160x120 camera on its own crystal, deterministic per seed."""
    return SimCamera(generate(10.0, n_events=2, seed=5), fps=FPS, width=160, height=120,
                     seed=5, crystal=Crystal(ppm=25.0, origin_host_ns=t0_ns,
                                             origin_device_s=3.0),
                     t0_ns=t0_ns, buffer_frames=buffer_frames)


def broken() -> SimCamera:
    raise RuntimeError("no sensor on CSI-2 port 0")


def read_for(cam: CameraProcess, seconds: float) -> list[Frame]:
    frames: list[Frame] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        f = cam.read(0.05)
        if f is not None:
            frames.append(f)
    return frames


def test_frames_from_the_sensors_process_are_the_frames_it_renders_here() -> None:
    t0 = monotonic_ns()
    cam = CameraProcess(functools.partial(camera, t0), t0_ns=t0)
    try:
        assert cam.pid is not None and cam.pid != os.getpid()
        cam.start()
        got = read_for(cam, 0.6)
        cam.stop()
    finally:
        cam.close()
    assert len(got) >= 0.6 * FPS * 0.6
    seqs = np.array([f.seq for f in got])
    assert (np.diff(seqs) == 1).all() and cam.counters.dropped == 0
    here = {f.seq: f for f in camera(t0).offline(0.0, (got[-1].t_ns - t0) / 1e9 + 0.1)}
    for f in got:
        h = here[f.seq]
        assert f.t_ns == h.t_ns
        np.testing.assert_array_equal(f.luma, h.luma)


def test_a_reader_late_by_more_than_the_ring_loses_counted_frames_each_a_seq_gap() -> None:
    t0 = monotonic_ns()
    cam = CameraProcess(functools.partial(camera, t0, buffer_frames=4), t0_ns=t0)
    try:
        cam.start()
        got = read_for(cam, 0.2)
        time.sleep(0.5)  # the reader stalls: 75 frames due, the ring holds 4
        got += read_for(cam, 0.3)
        cam.stop()
    finally:
        cam.close()
    seqs = np.array([f.seq for f in got])
    gaps = int((np.diff(seqs) - 1).sum())
    assert gaps > 30
    assert cam.counters.dropped == gaps  # every lost frame counted, none in excess
    assert cam.counters.extra["overrun"] == gaps


def test_a_camera_that_cannot_be_built_is_a_clear_error() -> None:
    with pytest.raises(OSError, match="sim-camera: RuntimeError: no sensor on CSI-2 port 0"):
        CameraProcess(broken)
