"""Stimulus markers on the simulated wire, timed like the study's parallel-port markers.

For each :class:`hil.sim.scenario.MarkerEvent` the 8-bit code is put on ``wire["marker"]``
at ``t0_ns + t_s`` and held until the next marker; ``settle_ns`` later
``wire["marker_strobe"]`` goes high for ``strobe_ns``. A reader that samples the data
lines on the strobe's rising edge sees the settled code.
"""

from __future__ import annotations

from collections.abc import Iterable

from hil.sim.scenario import MarkerEvent
from hil.sim.wire import MARKER, MARKER_STROBE, Wire
from sensors.blocks import Marker

SETTLE_NS = 1_000_000
STROBE_NS = 5_000_000


def schedule_markers(
    wire: Wire,
    markers: Iterable[MarkerEvent],
    t0_ns: int,
    *,
    settle_ns: int = SETTLE_NS,
    strobe_ns: int = STROBE_NS,
) -> list[Marker]:
    """Drive the marker code and strobe nets ahead of time; return the expected markers.

    The result is what a :class:`sensors.trigger.MarkerReader` on these nets must report:
    each code with its strobe's rising-edge time. Raises ValueError for a code that does
    not fit 8 lines or markers too close to hold each code through its strobe.
    """
    events = sorted(markers, key=lambda m: m.t_s)
    expected: list[Marker] = []
    code_t: list[int] = []
    codes: list[int] = []
    strobe_t: list[int] = []
    strobe_v: list[int] = []
    prev_end = None
    for ev in events:
        if not 0 <= ev.code <= 0xFF:
            raise ValueError(f"marker at {ev.t_s}s: code {ev.code} does not fit 8 data lines")
        t = t0_ns + round(ev.t_s * 1e9)
        if prev_end is not None and t < prev_end:
            raise ValueError(
                f"marker at {ev.t_s}s comes before the previous strobe ended "
                f"({settle_ns + strobe_ns} ns needed between markers)"
            )
        rise = t + settle_ns
        prev_end = rise + strobe_ns
        code_t.append(t)
        codes.append(ev.code)
        strobe_t += [rise, prev_end]
        strobe_v += [1, 0]
        expected.append(Marker(code=ev.code, t_ns=rise))
    wire[MARKER].schedule(code_t, codes)
    wire[MARKER_STROBE].schedule(strobe_t, strobe_v)
    return expected
