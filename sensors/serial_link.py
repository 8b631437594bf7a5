"""What every serial driver does the same way with its port: open it (a clear error when it
is absent), close it quietly, and pace reopening a lost one.

The drivers (:mod:`sensors.hub`, :mod:`sensors.cyton`) keep what is their own: the
handshake after opening and what a reconnect restores.
"""

from __future__ import annotations

import contextlib
import time

import serial

from sensors.errors import DeviceNotFound

# What a pulled cable or a dead port raises out of pyserial (ValueError/TypeError: a port
# closed under a read).
IO_ERRORS = (serial.SerialException, OSError, ValueError, TypeError)


def open_port(device: str, url: str, baud: int, write_timeout_s: float) -> serial.SerialBase:
    """Open ``url`` (a device path, udev name or pyserial URL) non-blocking and exclusive."""
    try:
        return serial.serial_for_url(url, baudrate=baud, timeout=0,
                                     write_timeout=write_timeout_s, exclusive=True)
    except IO_ERRORS as exc:
        raise DeviceNotFound(f"{device}: cannot open serial port {url!r}: {exc}") from exc


def close_port(port: serial.SerialBase | None) -> None:
    """Close ``port`` if there is one; a port that is already gone is not an error."""
    if port is not None:
        with contextlib.suppress(*IO_ERRORS):
            port.close()


def reconnect_due(next_attempt: float, timeout_s: float) -> bool:
    """Whether a reopen is due at ``next_attempt`` (time.monotonic), sleeping up to
    ``timeout_s`` for it: a poll with nothing to read still takes its timeout."""
    wait = next_attempt - time.monotonic()
    if wait > 0:
        time.sleep(min(wait, max(timeout_s, 0.0)))
        if time.monotonic() < next_attempt:
            return False
    return True
