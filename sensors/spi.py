"""The real ``SpiBus`` backend: Linux spidev (``/dev/spidevB.D``) through py-spidev.

``spidev`` is imported inside the constructor, so this module imports anywhere.
"""

from __future__ import annotations

import os

from sensors.errors import BackendUnavailable, DeviceNotFound


class SpidevBus:
    """One SPI device (bus + chip select); ``xfer`` holds CS low for the whole transfer."""

    def __init__(self, bus: int, device: int, max_speed_hz: int = 4_000_000, mode: int = 1) -> None:
        self.path = f"/dev/spidev{bus}.{device}"
        try:
            import spidev  # hardware package: imported only here
        except ImportError as exc:
            raise BackendUnavailable(
                f"SPI {self.path}: the spidev package is not installed "
                "(pip install 'mmme-edge[pi]' or pip install spidev; Linux only)"
            ) from exc
        if not os.path.exists(self.path):
            raise DeviceNotFound(
                f"SPI {self.path} does not exist: enable SPI (Raspberry Pi: dtparam=spi=on in "
                "config.txt; Jetson: jetson-io) and check the bus/chip-select numbers"
            )
        dev = spidev.SpiDev()
        try:
            dev.open(bus, device)
        except PermissionError as exc:
            raise DeviceNotFound(
                f"SPI {self.path}: permission denied (add the user to the 'spi' group)"
            ) from exc
        except OSError as exc:
            raise DeviceNotFound(f"SPI {self.path}: cannot open: {exc}") from exc
        dev.max_speed_hz = int(max_speed_hz)
        dev.mode = int(mode)  # ADS1299: CPOL 0, CPHA 1
        dev.bits_per_word = 8
        self._dev = dev

    def xfer(self, data: bytes) -> bytes:
        # xfer2 keeps CS asserted between the bytes of one call, as the chip requires.
        return bytes(self._dev.xfer2(list(data)))

    def close(self) -> None:
        self._dev.close()
