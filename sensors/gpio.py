"""Real GPIO backends for the ``EdgeInput`` / ``OutputLine`` / ``InputBus`` seams.

Two families:

- **gpiod** (libgpiod v2 Python bindings, ``pip install gpiod``): the kernel stamps each
  edge in the hard interrupt on CLOCK_MONOTONIC (the rig's host clock) and numbers it
  per line; a jump in that number means the kernel's event buffer overflowed, which we
  count. Works on every Pi (including the Pi 5) and on Jetson.
- **RPi.GPIO / Jetson.GPIO** (same API, one class parametrised by the module): edges
  arrive as ``add_event_detect`` callbacks on the library's thread; we stamp them with
  ``time.monotonic_ns()`` inside the callback (so they carry the callback latency, not
  the interrupt time) into a bounded ring whose overflow is counted.

The factories (:func:`open_edge_input`, :func:`open_output`, :func:`open_input_bus`)
take ``backend`` in ``{"gpiod", "rpi", "jetson", "auto"}``. ``chip`` means:

- gpiod: the chip device, ``"gpiochip0"`` or ``"/dev/gpiochip0"``; ``line`` is the line
  offset on that chip (or its name);
- rpi/jetson: the pin numbering mode, ``"BCM"`` or ``"BOARD"`` (Jetson also ``"CVM"``,
  ``"TEGRA_SOC"``); ``line`` is the channel in that mode. For rpi a gpiochip name means
  BCM, because the offsets of the Pi's main gpiochip are BCM numbers.

Values and edge directions are logical: with ``active_low`` a physical falling edge is a
rising edge, as the kernel reports it.

Hardware packages are imported inside the functions below only, so this module imports
(and its tests run) on a machine with none of them.
"""

from __future__ import annotations

import collections
import errno
import importlib
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from types import ModuleType
from typing import Any

from sensors.blocks import Edge, monotonic_ns
from sensors.errors import BackendUnavailable, DeviceError, DeviceNotFound

EDGES = ("rising", "falling", "both")
BIASES = ("as-is", "disabled", "pull-up", "pull-down")
BACKENDS = ("gpiod", "rpi", "jetson")

# The kernel caps a request's event buffer at 16 events per line unless asked for more
# (and at 1024 in total): 16 is only 16 ms of DRDY at 1 kHz, so ask for the maximum.
DEFAULT_EVENT_BUFFER = 1024
_CONSUMER = "mmme-edge"

# What to install when a backend is missing, named in every BackendUnavailable.
_INSTALL = {
    "gpiod": "pip install 'gpiod>=2.2' (libgpiod v2 bindings; Debian bookworm's apt "
    "python3-libgpiod is the old v1 API)",
    "rpi": "pip install RPi.GPIO or apt install python3-rpi.gpio (not on a Pi 5: use gpiod)",
    "jetson": "pip install Jetson.GPIO",
}
_MODULE = {"gpiod": "gpiod", "rpi": "RPi.GPIO", "jetson": "Jetson.GPIO"}


@dataclass
class EdgeCounters:
    """Health of one edge input; never reset."""

    edges: int = 0  # edges handed to the caller
    seq_gaps: int = 0  # times the edge sequence number jumped (an overflow happened)
    lost: int = 0  # edges known lost: kernel buffer (gpiod) or our ring (callbacks)
    same_direction: int = 0  # two edges in a row in one direction: one between was missed


# --------------------------------------------------------------------------- imports


def _import_backend(backend: str) -> ModuleType:
    """The hardware module for ``backend``, or BackendUnavailable saying what to install."""
    name = _MODULE[backend]
    try:
        module = importlib.import_module(name)
    except ImportError as e:
        raise BackendUnavailable(
            f"GPIO backend {backend!r}: {name} is not installed ({e}); {_INSTALL[backend]}"
        ) from e
    except Exception as e:  # RPi.GPIO / Jetson.GPIO raise on import off their board
        raise BackendUnavailable(
            f"GPIO backend {backend!r}: {name} is installed but cannot run here "
            f"({type(e).__name__}: {e}); {_INSTALL[backend]}"
        ) from e
    if backend == "gpiod" and not hasattr(module, "request_lines"):
        raise BackendUnavailable(
            f"GPIO backend 'gpiod': found the libgpiod v1 bindings "
            f"(version {getattr(module, '__version__', '?')}), need v2; {_INSTALL['gpiod']}"
        )
    return module


def resolve_backend(backend: str) -> tuple[str, ModuleType]:
    """``backend`` and its module; "auto" picks gpiod, then RPi.GPIO, then Jetson.GPIO."""
    if backend != "auto":
        if backend not in BACKENDS:
            raise ValueError(f"GPIO backend {backend!r}: expected one of {(*BACKENDS, 'auto')}")
        return backend, _import_backend(backend)
    reasons = []
    for name in BACKENDS:
        try:
            return name, _import_backend(name)
        except BackendUnavailable as e:
            reasons.append(str(e))
    raise BackendUnavailable("no GPIO backend available:\n  " + "\n  ".join(reasons))


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{what} {value!r}: expected one of {choices}")


# --------------------------------------------------------------------------- gpiod


def _chip_path(chip: str) -> str:
    return chip if chip.startswith("/") else f"/dev/{chip}"


def _gpiod_request(gpiod: ModuleType, chip: str, config: dict, what: str, **kw: Any) -> Any:
    """``gpiod.request_lines`` with OS errors turned into the rig's DeviceErrors."""
    path = _chip_path(chip)
    try:
        return gpiod.request_lines(path, config=config, consumer=_CONSUMER, **kw)
    except FileNotFoundError as e:
        raise DeviceNotFound(f"{what}: no GPIO chip {path} ({e})") from e
    except PermissionError as e:
        raise DeviceNotFound(
            f"{what}: no permission on {path} (add the user to the gpio group)"
        ) from e
    except ValueError as e:  # offset beyond the chip's lines
        raise DeviceNotFound(f"{what}: {path} has no line {list(config)} ({e})") from e
    except OSError as e:
        if e.errno == errno.EBUSY:
            raise DeviceNotFound(f"{what}: line {list(config)} on {path} is busy ({e})") from e
        if e.errno in (errno.ENOENT, errno.EINVAL, errno.ENODEV, errno.ENOTTY):
            raise DeviceNotFound(f"{what}: cannot request {list(config)} on {path} ({e})") from e
        raise DeviceError(f"{what}: requesting {list(config)} on {path} failed ({e})") from e


def _gpiod_bias(gpiod: ModuleType, bias: str) -> Any:
    b = gpiod.line.Bias
    return {"as-is": b.AS_IS, "disabled": b.DISABLED, "pull-up": b.PULL_UP,
            "pull-down": b.PULL_DOWN}[bias]


class GpiodEdgeInput:
    """One input line with kernel-timestamped edges (libgpiod v2)."""

    def __init__(
        self,
        chip: str,
        line: int | str,
        edge: str = "both",
        bias: str = "as-is",
        active_low: bool = False,
        event_buffer_size: int = DEFAULT_EVENT_BUFFER,
        debounce_us: int = 0,
        gpiod_module: ModuleType | None = None,
    ) -> None:
        _check_choice("edge", edge, EDGES)
        _check_choice("bias", bias, BIASES)
        gpiod = gpiod_module or _import_backend("gpiod")
        self._gpiod = gpiod
        self._line = line
        self._rising_type = gpiod.EdgeEvent.Type.RISING_EDGE
        e = gpiod.line.Edge
        settings = gpiod.LineSettings(
            direction=gpiod.line.Direction.INPUT,
            edge_detection={"rising": e.RISING, "falling": e.FALLING, "both": e.BOTH}[edge],
            bias=_gpiod_bias(gpiod, bias),
            active_low=active_low,
            # Debounce delays every edge by the period: off unless asked for.
            debounce_period=timedelta(microseconds=debounce_us),
            # The rig's host clock; REALTIME would jump with NTP.
            event_clock=gpiod.line.Clock.MONOTONIC,
        )
        self._req = _gpiod_request(
            gpiod, chip, {line: settings}, f"edge input {chip}:{line}",
            event_buffer_size=event_buffer_size,
        )
        self._max_read = max(int(event_buffer_size), 1)
        self._both = edge == "both"
        self._last_seqno = 0
        self._last_rising: bool | None = None
        self.counters = EdgeCounters()

    def read_edges(self, timeout_s: float) -> list[Edge]:
        if not self._req.wait_edge_events(max(timeout_s, 0.0)):
            return []
        events = list(self._req.read_edge_events(self._max_read))
        # Drain what is already queued, bounded so a flood cannot hold us here forever.
        while len(events) < 4 * self._max_read and self._req.wait_edge_events(0):
            events.extend(self._req.read_edge_events(self._max_read))
        return [self._to_edge(ev) for ev in events]

    def _to_edge(self, ev: Any) -> Edge:
        seq = int(ev.line_seqno)
        missing = seq - self._last_seqno - 1
        if missing > 0:  # the kernel's buffer overflowed and dropped the oldest events
            self.counters.seq_gaps += 1
            self.counters.lost += missing
        self._last_seqno = seq
        rising = ev.event_type == self._rising_type
        if self._both and rising == self._last_rising and missing <= 0:
            self.counters.same_direction += 1
        self._last_rising = rising
        self.counters.edges += 1
        return Edge(t_ns=int(ev.timestamp_ns), rising=rising, seq=seq)

    def value(self) -> int:
        return int(bool(self._req.get_value(self._line)))

    def close(self) -> None:
        self._req.release()


class GpiodOutputLine:
    """One output line (libgpiod v2)."""

    def __init__(
        self,
        chip: str,
        line: int | str,
        initial: int = 0,
        active_low: bool = False,
        gpiod_module: ModuleType | None = None,
    ) -> None:
        gpiod = gpiod_module or _import_backend("gpiod")
        self._value = gpiod.line.Value
        self._line = line
        settings = gpiod.LineSettings(
            direction=gpiod.line.Direction.OUTPUT,
            active_low=active_low,
            output_value=self._value.ACTIVE if initial else self._value.INACTIVE,
        )
        self._req = _gpiod_request(gpiod, chip, {line: settings}, f"output {chip}:{line}")

    def set(self, value: int) -> int:
        before = monotonic_ns()
        self._req.set_value(self._line, self._value.ACTIVE if value else self._value.INACTIVE)
        after = monotonic_ns()
        # The pin changes somewhere inside the ioctl: the midpoint is the best estimate.
        return (before + after) // 2

    def close(self) -> None:
        self._req.release()


class GpiodInputBus:
    """Several input lines on one chip, read in one ioctl (libgpiod v2)."""

    def __init__(
        self,
        chip: str,
        lines: list[int],
        bias: str = "as-is",
        active_low: bool = False,
        gpiod_module: ModuleType | None = None,
    ) -> None:
        _check_choice("bias", bias, BIASES)
        gpiod = gpiod_module or _import_backend("gpiod")
        self._lines = list(lines)
        settings = gpiod.LineSettings(
            direction=gpiod.line.Direction.INPUT,
            bias=_gpiod_bias(gpiod, bias),
            active_low=active_low,
        )
        self._req = _gpiod_request(
            gpiod, chip, {tuple(self._lines): settings}, f"input bus {chip}:{self._lines}"
        )

    def read(self) -> int:
        values = self._req.get_values(self._lines)
        return sum(int(bool(v)) << i for i, v in enumerate(values))

    def close(self) -> None:
        self._req.release()


# ------------------------------------------------------------- RPi.GPIO / Jetson.GPIO

_DEFAULT_MODE = {"rpi": "BCM", "jetson": None}  # what a gpiochip name means


def _set_mode(gpio: ModuleType, backend: str, chip: str) -> None:
    """Select the numbering mode ``chip`` names; the module holds one mode per process."""
    mode_name = chip.upper() if chip else "BCM"
    if mode_name.startswith(("GPIOCHIP", "/DEV/")):
        mode_name = _DEFAULT_MODE.get(backend) or ""
        if not mode_name:
            raise DeviceNotFound(
                f"{_MODULE[backend]} numbers pins by mode, not by chip: got chip {chip!r}, "
                f"expected 'BOARD', 'BCM', 'CVM' or 'TEGRA_SOC'"
            )
    mode = getattr(gpio, mode_name, None)
    if mode is None:
        raise DeviceNotFound(f"{_MODULE[backend]}: no pin numbering mode {mode_name!r}")
    current = gpio.getmode()
    if current is None:
        gpio.setwarnings(False)
        gpio.setmode(mode)
    elif current != mode:
        raise DeviceError(
            f"{_MODULE[backend]} is already in mode {current!r}; cannot also use {mode_name}"
        )


def _setup_input(gpio: ModuleType, backend: str, channel: int | str, bias: str) -> None:
    kw = {}
    if bias != "as-is":
        pud = {"disabled": "PUD_OFF", "pull-up": "PUD_UP", "pull-down": "PUD_DOWN"}[bias]
        kw["pull_up_down"] = getattr(gpio, pud)
    try:
        gpio.setup(channel, gpio.IN, **kw)
    except ValueError as e:  # "The channel sent is invalid"
        raise DeviceNotFound(f"{_MODULE[backend]}: no input channel {channel} ({e})") from e
    except RuntimeError as e:
        raise DeviceError(f"{_MODULE[backend]}: cannot set up channel {channel} ({e})") from e


class CallbackEdgeInput:
    """An input line with edges from ``add_event_detect`` callbacks (RPi.GPIO API).

    The callback stamps ``time.monotonic_ns()`` on the library's thread and appends to a
    bounded ring; when full the oldest edge is dropped (as the kernel does), counted in
    ``counters.lost`` and visible to the caller as a jump in ``Edge.seq``. The callback
    does not say which edge fired, so with ``edge="both"`` the direction is the level
    read in the callback: a pulse shorter than the callback latency shows up as two
    edges in one direction, counted in ``counters.same_direction``.
    """

    def __init__(
        self,
        gpio: ModuleType,
        backend: str,
        chip: str,
        line: int | str,
        edge: str = "both",
        bias: str = "as-is",
        active_low: bool = False,
        event_buffer_size: int = DEFAULT_EVENT_BUFFER,
        bouncetime_ms: int = 0,
    ) -> None:
        _check_choice("edge", edge, EDGES)
        _check_choice("bias", bias, BIASES)
        self._gpio = gpio
        self._backend = backend
        self._channel = line
        self._active_low = active_low
        self._edge = edge
        self._ring: collections.deque[Edge] = collections.deque()
        self._capacity = max(int(event_buffer_size), 1)
        self._cond = threading.Condition()
        self._seq = 0
        self._last_delivered_seq = 0
        self._last_rising: bool | None = None
        self.counters = EdgeCounters()
        _set_mode(gpio, backend, chip)
        _setup_input(gpio, backend, line, bias)
        # Logical edges: with active_low the physical edge is the opposite one.
        physical = edge
        if active_low and edge != "both":
            physical = "falling" if edge == "rising" else "rising"
        kw = {"bouncetime": int(bouncetime_ms)} if bouncetime_ms > 0 else {}
        try:
            gpio.add_event_detect(
                line, getattr(gpio, physical.upper()), callback=self._on_edge, **kw
            )
        except RuntimeError as e:  # "Failed to add edge detection"
            gpio.cleanup(line)
            raise DeviceError(f"{_MODULE[backend]}: edge detection on {line} failed ({e})") from e

    def _on_edge(self, _channel: Any) -> None:
        t_ns = time.monotonic_ns()  # first thing: every later line adds latency
        # The callback does not say which edge fired: with "both", read the level.
        rising = bool(self.value()) if self._edge == "both" else self._edge == "rising"
        with self._cond:
            self._seq += 1
            if len(self._ring) >= self._capacity:
                self._ring.popleft()
                self.counters.lost += 1
            if self._edge == "both" and rising == self._last_rising:
                self.counters.same_direction += 1
            self._last_rising = rising
            self._ring.append(Edge(t_ns=t_ns, rising=rising, seq=self._seq))
            self._cond.notify_all()

    def read_edges(self, timeout_s: float) -> list[Edge]:
        with self._cond:
            if not self._ring:
                self._cond.wait_for(lambda: bool(self._ring), max(timeout_s, 0.0))
            edges = list(self._ring)
            self._ring.clear()
            prev = self._last_delivered_seq
            for e in edges:
                if e.seq != prev + 1:
                    self.counters.seq_gaps += 1
                prev = e.seq
            self._last_delivered_seq = prev
            self.counters.edges += len(edges)
            return edges

    def value(self) -> int:
        return int(bool(self._gpio.input(self._channel))) ^ int(self._active_low)

    def close(self) -> None:
        try:
            self._gpio.remove_event_detect(self._channel)
        finally:
            self._gpio.cleanup(self._channel)


class CallbackOutputLine:
    """An output line through the RPi.GPIO API."""

    def __init__(
        self,
        gpio: ModuleType,
        backend: str,
        chip: str,
        line: int | str,
        initial: int = 0,
        active_low: bool = False,
    ) -> None:
        self._gpio = gpio
        self._channel = line
        self._active_low = active_low
        _set_mode(gpio, backend, chip)
        try:
            gpio.setup(line, gpio.OUT, initial=self._level(initial))
        except ValueError as e:
            raise DeviceNotFound(f"{_MODULE[backend]}: no output channel {line} ({e})") from e
        except RuntimeError as e:
            raise DeviceError(f"{_MODULE[backend]}: cannot set up output {line} ({e})") from e

    def _level(self, value: int) -> int:
        high = bool(value) != self._active_low
        return self._gpio.HIGH if high else self._gpio.LOW

    def set(self, value: int) -> int:
        before = monotonic_ns()
        self._gpio.output(self._channel, self._level(value))
        after = monotonic_ns()
        return (before + after) // 2

    def close(self) -> None:
        self._gpio.cleanup(self._channel)


class CallbackInputBus:
    """Several input lines through the RPi.GPIO API, read one after another (not atomic:
    read them while the data is held, e.g. after the marker strobe)."""

    def __init__(
        self,
        gpio: ModuleType,
        backend: str,
        chip: str,
        lines: list[int],
        bias: str = "as-is",
        active_low: bool = False,
    ) -> None:
        _check_choice("bias", bias, BIASES)
        self._gpio = gpio
        self._lines = list(lines)
        self._invert = int(active_low)
        _set_mode(gpio, backend, chip)
        for ch in self._lines:
            _setup_input(gpio, backend, ch, bias)

    def read(self) -> int:
        return sum(
            ((int(bool(self._gpio.input(ch))) ^ self._invert) << i)
            for i, ch in enumerate(self._lines)
        )

    def close(self) -> None:
        self._gpio.cleanup(self._lines)


# --------------------------------------------------------------------------- factories


def open_edge_input(
    backend: str,
    chip: str,
    line: int | str,
    edge: str = "both",
    *,
    bias: str = "as-is",
    active_low: bool = False,
    event_buffer_size: int = DEFAULT_EVENT_BUFFER,
    debounce_us: int = 0,
) -> GpiodEdgeInput | CallbackEdgeInput:
    """An ``EdgeInput`` on ``backend``; ``event_buffer_size`` sizes the kernel buffer
    (gpiod) or our ring (callback backends); ``debounce_us`` is rounded up to ms there."""
    _check_choice("edge", edge, EDGES)
    name, module = resolve_backend(backend)
    if name == "gpiod":
        return GpiodEdgeInput(chip, line, edge, bias, active_low, event_buffer_size,
                              debounce_us, gpiod_module=module)
    return CallbackEdgeInput(module, name, chip, line, edge, bias, active_low,
                             event_buffer_size, bouncetime_ms=-(-debounce_us // 1000))


def open_output(
    backend: str, chip: str, line: int | str, initial: int = 0, *, active_low: bool = False
) -> GpiodOutputLine | CallbackOutputLine:
    """An ``OutputLine`` on ``backend``, driven to ``initial`` when requested."""
    name, module = resolve_backend(backend)
    if name == "gpiod":
        return GpiodOutputLine(chip, line, initial, active_low, gpiod_module=module)
    return CallbackOutputLine(module, name, chip, line, initial, active_low)


def open_input_bus(
    backend: str, chip: str, lines: list[int], *, bias: str = "as-is", active_low: bool = False
) -> GpiodInputBus | CallbackInputBus:
    """An ``InputBus``: ``lines[0]`` is bit 0 of ``read()``."""
    name, module = resolve_backend(backend)
    if name == "gpiod":
        return GpiodInputBus(chip, lines, bias, active_low, gpiod_module=module)
    return CallbackInputBus(module, name, chip, lines, bias, active_low)
