"""Fakes of the hardware libraries, for tests on machines without the hardware.

Like labgrid's ``driver/fake.py``: stand-ins for the packages the real backends import
(gpiod v2, RPi.GPIO / Jetson.GPIO, spidev, picamera2), following their documented APIs
closely enough to drive OUR adapters (settings passed, edge and sequence bookkeeping,
overflow counting, error mapping). They check the adapters, not the hardware or the
kernel; a test installs one with ``monkeypatch.setitem(sys.modules, name, fake)``.
Nothing here imports a hardware package.
"""

from __future__ import annotations

import enum
import errno
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from sensors.blocks import monotonic_ns

# ---------------------------------------------------------------------------------- gpiod


def make_fake_gpiod(chips: dict[str, int]) -> ModuleType:
    """A stand-in for the gpiod v2 bindings with chips ``path -> number of lines``.

    ``m.requests`` lists every request; ``req.drive(offset, level, t_ns)`` moves a
    physical input level and queues an edge event the way the kernel does (logical
    edges under active_low, oldest event dropped when the buffer is full).
    """
    m = ModuleType("gpiod")
    m.__version__ = "2.fake"

    class Direction(enum.Enum):
        AS_IS, INPUT, OUTPUT = 1, 2, 3

    class EdgeCfg(enum.Enum):
        NONE, RISING, FALLING, BOTH = 1, 2, 3, 4

    class Bias(enum.Enum):
        AS_IS, UNKNOWN, DISABLED, PULL_UP, PULL_DOWN = 1, 2, 3, 4, 5

    class Clock(enum.Enum):
        MONOTONIC, REALTIME, HTE = 1, 2, 3

    class Value(enum.Enum):
        INACTIVE, ACTIVE = 0, 1

        def __bool__(self) -> bool:
            return self is Value.ACTIVE

    line = ModuleType("gpiod.line")
    line.Direction, line.Edge, line.Bias, line.Clock, line.Value = (
        Direction, EdgeCfg, Bias, Clock, Value)
    m.line = line

    @dataclass
    class LineSettings:
        direction: Direction = Direction.AS_IS
        edge_detection: EdgeCfg = EdgeCfg.NONE
        bias: Bias = Bias.AS_IS
        active_low: bool = False
        debounce_period: timedelta = timedelta(0)
        event_clock: Clock = Clock.MONOTONIC
        output_value: Value = Value.INACTIVE

    class EdgeEvent:
        class Type(enum.Enum):
            RISING_EDGE, FALLING_EDGE = 1, 2

        def __init__(self, event_type, timestamp_ns, line_offset, global_seqno, line_seqno):
            self.event_type, self.timestamp_ns, self.line_offset = (
                event_type, timestamp_ns, line_offset)
            self.global_seqno, self.line_seqno = global_seqno, line_seqno

    @dataclass
    class Request:
        path: str
        settings: dict[int, LineSettings]
        consumer: str | None
        event_buffer_size: int
        phys: dict[int, int] = field(default_factory=dict)
        events: deque = field(default_factory=deque)
        seqno: dict[int, int] = field(default_factory=dict)
        gseq: int = 0
        released: bool = False
        cond: threading.Condition = field(default_factory=threading.Condition)

        def drive(self, offset: int, level: int, t_ns: int | None = None) -> None:
            s = self.settings[offset]
            old = self.phys.get(offset, 0) ^ s.active_low
            self.phys[offset] = level
            new = level ^ s.active_low
            if new == old:
                return
            want = {EdgeCfg.BOTH: (0, 1), EdgeCfg.RISING: (1,), EdgeCfg.FALLING: (0,)}.get(
                s.edge_detection, ())
            if new not in want:
                return
            with self.cond:
                self.seqno[offset] = self.seqno.get(offset, 0) + 1
                self.gseq += 1
                if len(self.events) >= self.event_buffer_size:
                    self.events.popleft()
                kind = EdgeEvent.Type.RISING_EDGE if new else EdgeEvent.Type.FALLING_EDGE
                self.events.append(EdgeEvent(kind, monotonic_ns() if t_ns is None else t_ns,
                                             offset, self.gseq, self.seqno[offset]))
                self.cond.notify_all()

        def get_value(self, line: int) -> Value:
            return self.get_values([line])[0]

        def get_values(self, lines=None) -> list[Value]:
            lines = lines or list(self.settings)
            out = []
            for off in lines:
                s = self.settings[off]
                out.append(Value(self.phys.get(off, 0) ^ s.active_low))
            return out

        def set_value(self, line: int, value: Value) -> None:
            self.phys[line] = int(bool(value)) ^ self.settings[line].active_low

        def wait_edge_events(self, timeout=None) -> bool:
            with self.cond:
                return self.cond.wait_for(lambda: bool(self.events), timeout)

        def read_edge_events(self, max_events=None):
            with self.cond:
                n = len(self.events) if max_events is None else min(max_events, len(self.events))
                return [self.events.popleft() for _ in range(n)]

        def release(self) -> None:
            self.released = True

    m.requests = []

    def request_lines(path, config, consumer=None, event_buffer_size=None, output_values=None):
        if path not in chips:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        settings = {}
        for key, s in config.items():
            for off in key if isinstance(key, tuple) else (key,):
                if off >= chips[path]:
                    raise ValueError("line offset of out range")
                if any(off in r.settings and not r.released for r in m.requests):
                    raise OSError(errno.EBUSY, "Device or resource busy")
                settings[off] = s or LineSettings()
        req = Request(path, settings, consumer, event_buffer_size or 16 * len(settings))
        for off, s in settings.items():
            if s.direction is Direction.OUTPUT:
                req.phys[off] = int(bool(s.output_value)) ^ s.active_low
        m.requests.append(req)
        return req

    m.LineSettings, m.EdgeEvent, m.request_lines = LineSettings, EdgeEvent, request_lines
    return m


# ------------------------------------------------------------------- RPi.GPIO / Jetson.GPIO


def make_fake_rpi_api(name: str, channels=range(2, 28)) -> ModuleType:
    """A stand-in for RPi.GPIO / Jetson.GPIO: one process-wide mode, callbacks by channel.

    ``m.drive(ch, level)`` changes a pin and runs its callback when the edge matches, as
    the library's event thread would; ``m.fire(ch)`` runs it with no level change (a
    pulse shorter than the callback latency)."""
    m = ModuleType(name)
    jetson = name.startswith("Jetson")
    m.BOARD, m.BCM = ("BOARD", "BCM") if jetson else (10, 11)
    if jetson:
        m.CVM, m.TEGRA_SOC = "CVM", "TEGRA_SOC"
    m.IN, m.OUT = ("in", "out") if jetson else (1, 0)
    m.HIGH, m.LOW = 1, 0
    m.PUD_OFF, m.PUD_DOWN, m.PUD_UP = 20, 21, 22
    m.RISING, m.FALLING, m.BOTH = 31, 32, 33
    m.mode = None
    m.setups, m.levels, m.callbacks, m.cleaned = {}, {}, {}, []

    def setwarnings(flag):
        m.warnings = flag

    def setmode(mode):
        if m.mode is not None and mode != m.mode:
            raise ValueError("A different mode has already been set!")
        m.mode = mode

    def getmode():
        return m.mode

    def setup(ch, direction, pull_up_down=m.PUD_OFF, initial=None):
        if ch not in channels:
            raise ValueError("The channel sent is invalid on a Raspberry Pi")
        m.setups[ch] = (direction, pull_up_down)
        if direction == m.OUT:
            m.levels[ch] = initial or 0

    def input(ch):
        return m.levels.get(ch, 0)

    def output(ch, value):
        m.levels[ch] = value

    def add_event_detect(ch, edge, callback=None, bouncetime=None):
        m.callbacks[ch] = (edge, callback, bouncetime)

    def remove_event_detect(ch):
        m.callbacks.pop(ch, None)

    def cleanup(ch=None):
        m.cleaned.append(ch)

    def drive(ch, level):
        old = m.levels.get(ch, 0)
        m.levels[ch] = level
        edge, cb, _ = m.callbacks.get(ch, (None, None, None))
        if cb is None or level == old:
            return
        if edge == m.BOTH or edge == (m.RISING if level else m.FALLING):
            cb(ch)

    def fire(ch):
        m.callbacks[ch][1](ch)

    for f in (setwarnings, setmode, getmode, setup, input, output, add_event_detect,
              remove_event_detect, cleanup, drive, fire):
        setattr(m, f.__name__, f)
    return m


# --------------------------------------------------------------------------------- spidev


def make_fake_spidev() -> ModuleType:
    """A stand-in for py-spidev: ``SpiDev`` records its settings; ``m.devices`` lists them.

    ``xfer2`` answers with zeros unless ``dev.respond`` is set (``bytes -> bytes``).
    """
    m = ModuleType("spidev")
    m.devices = []

    class SpiDev:
        def __init__(self) -> None:
            self.bus = self.device = None
            self.max_speed_hz, self.mode, self.bits_per_word = 0, 0, 8
            self.respond = None
            self.closed = False
            self.sent: list[bytes] = []
            m.devices.append(self)

        def open(self, bus: int, device: int) -> None:
            self.bus, self.device = bus, device

        def xfer2(self, data: list[int]) -> list[int]:
            out = bytes(data)
            self.sent.append(out)
            return list(self.respond(out) if self.respond else bytes(len(out)))

        def close(self) -> None:
            self.closed = True

    m.SpiDev = SpiDev
    return m


# ------------------------------------------------------------------------------ picamera2


# A Raspberry Pi Camera v2's sensor modes, as picamera2 lists them.
IMX219_MODES = [
    {"size": (640, 480), "fps": 206.65, "bit_depth": 10, "unpacked": "SRGGB10"},
    {"size": (1640, 1232), "fps": 41.85, "bit_depth": 10, "unpacked": "SRGGB10"},
    {"size": (1920, 1080), "fps": 47.57, "bit_depth": 10, "unpacked": "SRGGB10"},
    {"size": (3280, 2464), "fps": 21.19, "bit_depth": 10, "unpacked": "SRGGB10"},
]


class FakeRequest:
    """A completed request: a YUV420 array (row padding included) and its metadata."""

    def __init__(self, t_ns: int, value: int, w: int, h: int) -> None:
        stride = w + 64  # picamera2 leaves row padding in YUV420 arrays
        self.array = np.full((h * 3 // 2, stride), 128, np.uint8)
        self.array[:h, :w] = value
        self.t_ns = t_ns
        self.released = False

    def get_metadata(self) -> dict:
        return {"SensorTimestamp": self.t_ns, "ExposureTime": 5000}

    def make_array(self, name: str) -> np.ndarray:
        assert name == "main"
        return self.array

    def release(self) -> None:
        self.released = True


class FakePicamera2:
    """Just enough of picamera2.Picamera2 to drive the backend.

    Each request completes with the next of ``timestamps_ns`` (sensor timestamps: set the
    class attribute in a test), then ``wait`` times out; frame k's luma is k + 1.
    """

    instances: ClassVar[list[FakePicamera2]] = []
    modes: ClassVar[list[dict[str, Any]]] = IMX219_MODES
    timestamps_ns: ClassVar[Sequence[int]] = ()

    def __init__(self, camera_num: int = 0) -> None:
        self.sensor_modes = list(type(self).modes)
        self.config: dict = {}
        self.requests: list[FakeRequest] = []
        self.timestamps = list(type(self).timestamps_ns)
        FakePicamera2.instances.append(self)

    @staticmethod
    def global_camera_info() -> list[dict]:
        return [{"Model": "imx219", "Num": 0}]

    def create_video_configuration(self, **kw) -> dict:
        return kw

    def configure(self, config: dict) -> None:
        self.config = config

    def start(self) -> None:
        pass

    def capture_request(self, wait=None):
        assert wait is False
        return "job"

    def wait(self, job, timeout=None):
        if not self.timestamps:
            raise TimeoutError
        w, h = self.config["main"]["size"]
        req = FakeRequest(self.timestamps.pop(0), len(self.requests) + 1, w, h)
        self.requests.append(req)
        return req

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


def make_fake_picamera2() -> ModuleType:
    """The ``picamera2`` module with :class:`FakePicamera2` as its ``Picamera2``."""
    m = ModuleType("picamera2")
    m.Picamera2 = FakePicamera2
    return m

