"""The sync pulse code on the trigger line, shared by the pulser and every decoder.

A rising edge every ``PERIOD_NS`` of host time; pulse ``k`` is high for
``width_ns(k)``, which encodes ``k % CODE_MODULUS``. After a gap of fewer than
``CODE_MODULUS`` pulses, one pulse alone says which it was; the clock model's coarse
prediction resolves longer gaps.
"""

from __future__ import annotations

import numpy as np

PERIOD_NS = 1_000_000_000
CODE_MODULUS = 16
BASE_WIDTH_NS = 10_000_000
STEP_WIDTH_NS = 5_000_000


def width_ns(k: int) -> int:
    """High time of pulse ``k``."""
    return BASE_WIDTH_NS + STEP_WIDTH_NS * (k % CODE_MODULUS)


def decode_width(width_ns_measured: np.ndarray | float) -> np.ndarray:
    """``k % CODE_MODULUS`` from measured high times; -1 where no code fits within 2 ms."""
    w = np.asarray(width_ns_measured, dtype=np.float64)
    code = np.rint((w - BASE_WIDTH_NS) / STEP_WIDTH_NS)
    ok = (code >= 0) & (code < CODE_MODULUS) & (
        np.abs(w - (BASE_WIDTH_NS + code * STEP_WIDTH_NS)) <= 2_000_000
    )
    return np.where(ok, code, -1).astype(np.int64)
