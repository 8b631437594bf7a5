"""The device seams: the small interfaces a driver talks through.

Each seam has real backends (spidev, gpiod / RPi.GPIO / Jetson.GPIO, pyserial,
picamera2 / OpenCV) and a simulator in ``hil/`` that implements the same protocol, so
the driver code that runs on a Pi is the code the tests run. Hardware packages are
imported only inside the backend that uses them.

The serial seam is the port itself: drivers open it with ``serial.serial_for_url`` and
the hub simulator serves a real pseudo-terminal, so no wrapper is needed there.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from sensors.blocks import Edge, Frame, SampleBlock, StreamCounters, StreamInfo


@runtime_checkable
class SpiBus(Protocol):
    """One SPI device (bus + chip select), full duplex."""

    def xfer(self, data: bytes) -> bytes:
        """Clock ``data`` out with CS held low for the whole transfer; return what came in."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class EdgeInput(Protocol):
    """A GPIO input line that reports timestamped edges (DRDY, marker strobe)."""

    def read_edges(self, timeout_s: float) -> list[Edge]:
        """Block until at least one edge is pending or the timeout passes; return all pending."""
        ...

    def value(self) -> int: ...

    def close(self) -> None: ...


@runtime_checkable
class OutputLine(Protocol):
    """A GPIO output line (sync pulse train, chip RESET/START pins)."""

    def set(self, value: int) -> int:
        """Drive the line; return the host CLOCK_MONOTONIC ns at which it changed."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class InputBus(Protocol):
    """Several input lines read together (the 8 marker data bits)."""

    def read(self) -> int:
        """The lines as one integer, line 0 in bit 0."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class FrameSource(Protocol):
    """A camera: yields frames with the sensor's own counter and timestamp."""

    width: int
    height: int
    fps: float

    def start(self) -> None: ...

    def read(self, timeout_s: float) -> Frame | None:
        """The next frame in order, or None when none arrived within the timeout."""
        ...

    def stop(self) -> None: ...


# ---------------------------------------------------------------------- drivers
# The seams above are what a driver talks through; these are what the runtime talks to.


@runtime_checkable
class SampleDriver(Protocol):
    """A sampled device's driver (ADS1299, sensor hub, the EEG acquisition process).

    Lifecycle: ``open()`` (reset, identify, configure; raises a
    :class:`sensors.errors.DeviceError` for an absent or wrong device), ``start()``,
    ``poll()`` as long as it runs, ``stop()``, ``close()``. Synchronous: the runtime owns
    the threads. Bad device bytes are counted in ``counters``, never raised.
    """

    info: StreamInfo | None  # known once open
    counters: StreamCounters

    def open(self) -> None: ...

    def start(self) -> None: ...

    def poll(self, timeout_s: float) -> list[SampleBlock]:
        """Every block that arrived, waiting at most ``timeout_s`` for the first."""
        ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class FrameDriver(FrameSource, Protocol):
    """A camera as the runtime drives it: a :class:`FrameSource` that counts its losses
    (``counters.dropped``: frames the sensor or its ring lost) and can be closed."""

    counters: StreamCounters

    def close(self) -> None: ...

