"""Errors a driver raises when a device is absent or answers wrongly.

Bad bytes on a working link are never raised: drivers count them.
"""


class DeviceError(RuntimeError):
    """A device could not be opened or identified; the message says which and why."""


class DeviceNotFound(DeviceError):
    """The port, bus or line does not exist or cannot be opened."""


class WrongDevice(DeviceError):
    """The device answered, but not as the configured part (wrong ID, wrong protocol)."""


class DeviceTimeout(DeviceError):
    """The device stopped answering (no DRDY, no acknowledgement)."""


class BackendUnavailable(DeviceError):
    """The hardware package for a backend is not installed on this machine."""
