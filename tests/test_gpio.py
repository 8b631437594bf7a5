"""The GPIO backends (sensors.gpio).

This machine has no GPIO chips and no gpio-sim: the container's kernel exposes no
configfs (/sys/kernel/config is absent) and no modules to load, so the libgpiod backend
cannot be run against real (simulated) gpiochips here. Instead the backends are driven
through small fake modules that mimic the documented APIs of gpiod v2
(request_lines, LineSettings, EdgeEvent with line_seqno, wait/read_edge_events) and of
RPi.GPIO / Jetson.GPIO (setmode, setup, add_event_detect callbacks, input, output).
These tests check OUR adapter logic (settings passed, edge and sequence bookkeeping,
overflow counting, error mapping), not the hardware or the kernel. The fakes live in
``sensors/fakes.py``, beside the real backends. Where the real gpiod
package is installed, one test checks that the names the adapter uses exist there and
that a missing chip is reported through the real bindings.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import pytest

from sensors import gpio as sgpio
from sensors.blocks import Edge, monotonic_ns
from sensors.errors import BackendUnavailable, DeviceError, DeviceNotFound
from sensors.fakes import make_fake_gpiod, make_fake_rpi_api

HW_MODULES = ("gpiod", "RPi", "RPi.GPIO", "Jetson", "Jetson.GPIO")
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- fake gpiod

@pytest.fixture
def fake_gpiod(monkeypatch):
    fake = make_fake_gpiod({"/dev/gpiochip0": 54, "/dev/gpiochip4": 54})
    monkeypatch.setitem(sys.modules, "gpiod", fake)
    return fake


# --------------------------------------------------------------- fake RPi.GPIO / Jetson




RPI_API = [("rpi", "RPi.GPIO", "BCM"), ("jetson", "Jetson.GPIO", "BOARD")]


@pytest.fixture(params=RPI_API, ids=[b for b, _, _ in RPI_API])
def rpi_api(request, monkeypatch):
    """(backend, fake module, mode name) installed as the real package would be."""
    backend, name, mode = request.param
    fake = make_fake_rpi_api(name)
    parent = ModuleType(name.split(".")[0])
    parent.GPIO = fake
    monkeypatch.setitem(sys.modules, parent.__name__, parent)
    monkeypatch.setitem(sys.modules, name, fake)
    monkeypatch.setitem(sys.modules, "gpiod", None)  # keep "auto" off gpiod
    return backend, fake, mode


# --------------------------------------------------------------------------- imports


def test_importing_the_gpio_and_trigger_modules_needs_no_hardware_package():
    code = (
        "import sys\n"
        f"for m in {HW_MODULES!r}: sys.modules[m] = None  # any import of them fails\n"
        "import sensors.gpio, sensors.trigger, hil.sim.marker_source\n"
        f"loaded = [m for m in {HW_MODULES!r} if sys.modules.get(m) is not None]\n"
        "assert not loaded, loaded\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr


def test_auto_with_no_backend_installed_names_every_package_to_install(monkeypatch):
    for m in HW_MODULES:
        monkeypatch.setitem(sys.modules, m, None)
    with pytest.raises(BackendUnavailable) as e:
        sgpio.open_edge_input("auto", "gpiochip0", 17)
    msg = str(e.value)
    for needle in ("gpiod", "RPi.GPIO", "Jetson.GPIO", "pip install"):
        assert needle in msg


@pytest.mark.parametrize("backend, package", [("gpiod", "gpiod"), ("rpi", "RPi.GPIO"),
                                              ("jetson", "Jetson.GPIO")])
def test_a_missing_backend_says_what_to_install(monkeypatch, backend, package):
    for m in HW_MODULES:
        monkeypatch.setitem(sys.modules, m, None)
    with pytest.raises(BackendUnavailable, match=f"pip install .*{package.split('.')[0]}"):
        sgpio.open_output(backend, "gpiochip0", 17)


class _RaisingOnImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes ``import RPi.GPIO`` fail the way it does off a Pi."""

    def find_spec(self, fullname, path, target=None):
        if fullname == "RPi.GPIO":
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise RuntimeError("This module can only be run on a Raspberry Pi!")


def test_rpi_gpio_installed_off_a_pi_is_unavailable_not_a_crash(monkeypatch):
    pkg = ModuleType("RPi")
    pkg.__path__ = []
    monkeypatch.setitem(sys.modules, "RPi", pkg)
    monkeypatch.delitem(sys.modules, "RPi.GPIO", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_RaisingOnImport(), *sys.meta_path])
    with pytest.raises(BackendUnavailable, match=r"cannot run here.*Raspberry Pi"):
        sgpio.open_input_bus("rpi", "BCM", [1, 2])


def test_the_old_gpiod_v1_bindings_are_refused_with_a_hint(monkeypatch):
    v1 = ModuleType("gpiod")
    v1.__version__ = "1.6.3"
    v1.Chip = object
    monkeypatch.setitem(sys.modules, "gpiod", v1)
    with pytest.raises(BackendUnavailable, match=r"v1.*need v2"):
        sgpio.open_edge_input("gpiod", "gpiochip0", 17)


def test_an_unknown_backend_or_edge_is_a_value_error(fake_gpiod):
    with pytest.raises(ValueError):
        sgpio.open_edge_input("pigpio", "gpiochip0", 17)
    with pytest.raises(ValueError):
        sgpio.open_edge_input("gpiod", "gpiochip0", 17, edge="up")


# --------------------------------------------------------------------------- gpiod


def test_gpiod_requests_the_line_as_configured(fake_gpiod):
    inp = sgpio.open_edge_input("auto", "gpiochip4", 17, "falling", bias="pull-up",
                                active_low=True, event_buffer_size=64)
    req = fake_gpiod.requests[-1]
    s = req.settings[17]
    line = fake_gpiod.line
    assert req.path == "/dev/gpiochip4"
    assert req.event_buffer_size == 64
    assert (s.direction, s.edge_detection, s.bias, s.active_low, s.event_clock) == (
        line.Direction.INPUT, line.Edge.FALLING, line.Bias.PULL_UP, True, line.Clock.MONOTONIC)
    assert s.debounce_period == timedelta(0), "debounce would delay every edge"
    assert isinstance(inp, sgpio.GpiodEdgeInput)
    inp.close()
    assert req.released


def test_gpiod_edges_carry_the_kernel_timestamp_direction_and_line_seqno(fake_gpiod):
    inp = sgpio.open_edge_input("gpiod", "gpiochip0", 5)
    req = fake_gpiod.requests[-1]
    req.drive(5, 1, t_ns=1000)
    req.drive(5, 0, t_ns=2500)
    req.drive(5, 1, t_ns=4000)
    assert inp.read_edges(1.0) == [Edge(1000, True, 1), Edge(2500, False, 2), Edge(4000, True, 3)]
    assert inp.value() == 1
    assert inp.counters == sgpio.EdgeCounters(edges=3)


def test_gpiod_active_low_reports_logical_edges_and_values(fake_gpiod):
    inp = sgpio.open_edge_input("gpiod", "gpiochip0", 5, "rising", active_low=True)
    req = fake_gpiod.requests[-1]
    req.drive(5, 1, t_ns=10)  # physical rise = logical fall: not asked for
    req.drive(5, 0, t_ns=20)  # physical fall = logical rise
    assert inp.read_edges(1.0) == [Edge(20, True, 1)]
    assert inp.value() == 1


def test_gpiod_buffer_overflow_shows_as_a_seqno_gap_and_is_counted(fake_gpiod):
    inp = sgpio.open_edge_input("gpiod", "gpiochip0", 5, event_buffer_size=4)
    req = fake_gpiod.requests[-1]
    for i in range(10):
        req.drive(5, (i + 1) % 2, t_ns=i)
    edges = inp.read_edges(1.0)
    assert [e.seq for e in edges] == [7, 8, 9, 10], "the kernel keeps the newest"
    assert inp.counters.seq_gaps == 1 and inp.counters.lost == 6
    assert inp.counters.same_direction == 0, "a known gap is not a direction fault"
    req.drive(5, 1, t_ns=11)
    req.drive(5, 0, t_ns=12)
    inp.read_edges(1.0)
    assert inp.counters.seq_gaps == 1 and inp.counters.edges == 6


def test_gpiod_read_waits_for_an_edge_and_times_out_without_one(fake_gpiod):
    inp = sgpio.open_edge_input("gpiod", "gpiochip0", 5, "rising")
    req = fake_gpiod.requests[-1]
    assert inp.read_edges(0.05) == []
    threading.Timer(0.05, req.drive, (5, 1)).start()
    edges = inp.read_edges(10.0)
    assert len(edges) == 1 and edges[0].rising


def test_gpiod_missing_chip_line_or_busy_line_is_device_not_found(fake_gpiod):
    with pytest.raises(DeviceNotFound, match="/dev/gpiochip9"):
        sgpio.open_edge_input("gpiod", "gpiochip9", 5)
    with pytest.raises(DeviceNotFound, match="no line"):
        sgpio.open_edge_input("gpiod", "/dev/gpiochip0", 99)
    sgpio.open_edge_input("gpiod", "gpiochip0", 6)
    with pytest.raises(DeviceNotFound, match="busy"):
        sgpio.open_output("gpiod", "gpiochip0", 6)


def test_gpiod_output_starts_at_its_initial_value_and_stamps_each_change(fake_gpiod):
    out = sgpio.open_output("gpiod", "gpiochip0", 18, initial=1, active_low=True)
    req = fake_gpiod.requests[-1]
    assert req.settings[18].direction is fake_gpiod.line.Direction.OUTPUT
    assert req.phys[18] == 0, "logical 1 on an active-low line is physically low"
    before = monotonic_ns()
    t = out.set(0)
    assert before <= t <= monotonic_ns()
    assert req.phys[18] == 1


def test_gpiod_input_bus_packs_the_first_listed_line_into_bit_0(fake_gpiod):
    bus = sgpio.open_input_bus("gpiod", "gpiochip0", [20, 21, 22, 23, 24, 25, 26, 27])
    req = fake_gpiod.requests[-1]
    for i, bit in enumerate(f"{101:08b}"[::-1]):
        req.phys[20 + i] = int(bit)
    assert bus.read() == 101


def test_the_adapter_uses_names_the_real_gpiod_has():
    gpiod = pytest.importorskip("gpiod")
    if not hasattr(gpiod, "request_lines"):
        pytest.skip("gpiod v1 installed")
    fields = gpiod.LineSettings.__dataclass_fields__
    for f in ("direction", "edge_detection", "bias", "active_low", "debounce_period",
              "event_clock", "output_value"):
        assert f in fields
    for cls, names in ((gpiod.line.Edge, ("RISING", "FALLING", "BOTH")),
                       (gpiod.line.Bias, ("AS_IS", "DISABLED", "PULL_UP", "PULL_DOWN")),
                       (gpiod.line.Direction, ("INPUT", "OUTPUT")),
                       (gpiod.line.Value, ("ACTIVE", "INACTIVE")),
                       (gpiod.line.Clock, ("MONOTONIC",)),
                       (gpiod.EdgeEvent.Type, ("RISING_EDGE", "FALLING_EDGE"))):
        for n in names:
            assert hasattr(cls, n), f"{cls.__name__}.{n}"
    for f in ("timestamp_ns", "line_seqno", "global_seqno", "event_type"):
        assert f in gpiod.EdgeEvent.__dataclass_fields__
    for meth in ("wait_edge_events", "read_edge_events", "get_value", "get_values",
                 "set_value", "release"):
        assert hasattr(gpiod.LineRequest, meth)
    # Through the real bindings, a chip that is not there is DeviceNotFound.
    with pytest.raises(DeviceNotFound):
        sgpio.open_edge_input("gpiod", "gpiochip_absent_for_test", 0)


# --------------------------------------------------------------- RPi.GPIO / Jetson.GPIO


def test_callback_edges_are_stamped_on_host_time_inside_the_callback(rpi_api):
    backend, fake, mode = rpi_api
    inp = sgpio.open_edge_input(backend, mode, 17)
    assert isinstance(inp, sgpio.CallbackEdgeInput)
    before = monotonic_ns()
    fake.drive(17, 1)
    fake.drive(17, 0)
    after = monotonic_ns()
    edges = inp.read_edges(1.0)
    assert [(e.rising, e.seq) for e in edges] == [(True, 1), (False, 2)]
    assert all(before <= e.t_ns <= after for e in edges)
    assert edges[0].t_ns <= edges[1].t_ns
    assert inp.counters == sgpio.EdgeCounters(edges=2)


def test_callback_ring_overflow_drops_the_oldest_and_counts_it(rpi_api):
    backend, fake, mode = rpi_api
    inp = sgpio.open_edge_input(backend, mode, 17, "rising", event_buffer_size=4)
    for _ in range(10):
        fake.drive(17, 1)
        fake.drive(17, 0)
    edges = inp.read_edges(1.0)
    assert [e.seq for e in edges] == [7, 8, 9, 10], "a seq gap tells the caller too"
    assert inp.counters.lost == 6 and inp.counters.seq_gaps == 1
    assert inp.counters.same_direction == 0, "rising-only edges are all one direction"


def test_a_pulse_shorter_than_the_callback_latency_is_counted(rpi_api):
    backend, fake, mode = rpi_api
    inp = sgpio.open_edge_input(backend, mode, 17, "both")
    fake.fire(17)  # the pin went up and down before the callback read it
    fake.fire(17)
    assert [e.rising for e in inp.read_edges(1.0)] == [False, False]
    assert inp.counters.same_direction == 1


def test_callback_active_low_asks_for_the_physical_edge_and_inverts_values(rpi_api):
    backend, fake, mode = rpi_api
    inp = sgpio.open_edge_input(backend, mode, 17, "rising", bias="pull-up", active_low=True,
                                debounce_us=1500)
    edge, _, bouncetime = fake.callbacks[17]
    assert edge == fake.FALLING and bouncetime == 2
    assert fake.setups[17] == (fake.IN, fake.PUD_UP)
    fake.levels[17] = 1
    assert inp.value() == 0
    fake.drive(17, 0)
    assert [e.rising for e in inp.read_edges(1.0)] == [True]


def test_callback_read_wakes_on_an_edge_from_the_library_thread(rpi_api):
    backend, fake, mode = rpi_api
    inp = sgpio.open_edge_input(backend, mode, 17)
    assert inp.read_edges(0.05) == []
    threading.Timer(0.05, fake.drive, (17, 1)).start()
    t = time.monotonic()
    assert [e.rising for e in inp.read_edges(10.0)] == [True]
    assert time.monotonic() - t < 9.0


def test_callback_close_removes_detection_and_frees_the_pin(rpi_api):
    backend, fake, mode = rpi_api
    inp = sgpio.open_edge_input(backend, mode, 17)
    inp.close()
    assert 17 not in fake.callbacks and 17 in fake.cleaned


def test_callback_bad_channel_or_mode_conflict_is_a_device_error(rpi_api):
    backend, _, mode = rpi_api
    with pytest.raises(DeviceNotFound, match="no input channel 99"):
        sgpio.open_edge_input(backend, mode, 99)
    other = "BOARD" if mode == "BCM" else "BCM"
    with pytest.raises(DeviceError, match="already in mode"):
        sgpio.open_output(backend, other, 18)


def test_callback_output_and_input_bus(rpi_api):
    backend, fake, mode = rpi_api
    out = sgpio.open_output(backend, mode, 18, initial=1)
    assert fake.setups[18][0] == fake.OUT and fake.levels[18] == 1
    before = monotonic_ns()
    assert before <= out.set(0) <= monotonic_ns()
    assert fake.levels[18] == 0
    bus = sgpio.open_input_bus(backend, mode, [2, 3, 4, 5, 6, 7, 8, 9])
    for i, bit in enumerate(f"{148:08b}"[::-1]):
        fake.levels[2 + i] = int(bit)
    assert bus.read() == 148


def test_a_gpiochip_name_means_bcm_on_rpi_but_is_refused_on_jetson(rpi_api):
    backend, fake, _ = rpi_api
    if backend == "rpi":
        sgpio.open_edge_input("rpi", "gpiochip0", 17)
        assert fake.mode == fake.BCM
    else:
        with pytest.raises(DeviceNotFound, match="BOARD"):
            sgpio.open_edge_input("jetson", "gpiochip0", 17)


def test_auto_falls_back_to_the_rpi_api_when_gpiod_is_missing(rpi_api, monkeypatch):
    backend, fake, mode = rpi_api
    if backend == "jetson":  # auto tries RPi.GPIO before Jetson.GPIO
        monkeypatch.setitem(sys.modules, "RPi", None)
        monkeypatch.setitem(sys.modules, "RPi.GPIO", None)
    inp = sgpio.open_edge_input("auto", mode, 17)
    assert inp._gpio is fake
