"""A device's own oscillator, relative to the host's CLOCK_MONOTONIC.

device_elapsed = host_elapsed * (1 + ppm * 1e-6). A clock step (fault injection) adds
a constant to device time from a given host instant on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Crystal:
    ppm: float = 0.0
    origin_host_ns: int = 0  # host time at which device time is ``origin_device_s``
    origin_device_s: float = 0.0
    steps: list[tuple[int, float]] = field(default_factory=list)  # (host_ns, +seconds)

    @property
    def rate(self) -> float:
        return 1.0 + self.ppm * 1e-6

    def device_s(self, host_ns: np.ndarray | int) -> np.ndarray:
        """Device seconds at the given host times (vectorised)."""
        h = np.asarray(host_ns, dtype=np.int64)
        t = self.origin_device_s + (h - self.origin_host_ns).astype(np.float64) * 1e-9 * self.rate
        for at_ns, step_s in self.steps:
            t = t + np.where(h >= at_ns, step_s, 0.0)
        return t

    def device_s_at(self, host_ns: int) -> float:
        """:meth:`device_s` for one instant in plain floats (the same operations, so the
        same value), for per-batch callers where numpy's per-call set-up dominates."""
        t = self.origin_device_s + float(host_ns - self.origin_host_ns) * 1e-9 * self.rate
        for at_ns, step_s in self.steps:
            if host_ns >= at_ns:
                t += step_s
        return t

    def host_ns(self, device_s: np.ndarray | float) -> np.ndarray:
        """Host ns at which the device clock reads ``device_s`` (ignores steps)."""
        d = np.asarray(device_s, dtype=np.float64)
        return self.origin_host_ns + np.round((d - self.origin_device_s) / self.rate * 1e9).astype(
            np.int64
        )

    def step(self, at_host_ns: int, seconds: float) -> None:
        """Fault injection: the device clock jumps by ``seconds`` at ``at_host_ns``."""
        self.steps.append((at_host_ns, seconds))


class SteppedCrystal(Crystal):
    """A :class:`Crystal` whose ``host_ns`` also inverts forward clock steps (so the truth
    of samples taken after a step stays exact)."""

    def host_ns(self, device_s: np.ndarray | float) -> np.ndarray:
        d = np.asarray(device_s, dtype=np.float64)
        for at_ns, step_s in self.steps:
            after = Crystal.device_s(self, at_ns)  # device reading just after the step
            d = np.where(d >= after, d - step_s, d)
        return Crystal.host_ns(self, d)

