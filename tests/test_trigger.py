"""The trigger line, specified on the simulated wire (hil.sim.wire): the sync pulser, the
pulse decoder a device stream goes through, and the marker reader."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from hil.sim.marker_source import schedule_markers
from hil.sim.scenario import MarkerEvent
from hil.sim.wire import MARKER, MARKER_STROBE, SYNC, SimEdgeInput, SimInputBus, SimOutputLine, Wire
from sensors import sync_code
from sensors.blocks import Edge, Marker, monotonic_ns
from sensors.trigger import (
    WIDTH_TOLERANCE_NS,
    MarkerReader,
    PulseDecoder,
    SyncPulser,
    decode_trigger_pulses,
    resolve_k,
)

MS = 1_000_000
FAST_PERIOD_NS = 150 * MS  # widths top out at 85 ms, so tests need not wait 1 s a pulse


def run_pulser(out, n: int, period_ns: int = FAST_PERIOD_NS) -> SyncPulser:
    pulser = SyncPulser(out, period_ns)
    pulser.start()
    deadline = time.monotonic() + 20
    while pulser.counters.pulses < n and time.monotonic() < deadline:
        time.sleep(0.02)
    pulser.stop()
    assert pulser.counters.pulses >= n, "pulser starved"
    return pulser


def sample_net(wire: Wire, start_ns: int, n: int, fs_hz: float = 1000.0):
    """A device sampling the sync net: sample times (host ns), bits, sample index."""
    t_ns = start_ns + np.round(np.arange(n) * 1e9 / fs_hz).astype(np.int64)
    return t_ns, wire[SYNC].value_at(t_ns), np.arange(n, dtype=np.int64)


def synthetic_train(ks, period_ns: int, fs_hz: float, phase_ns: int):
    """Ideal pulses ``ks`` sampled at ``fs_hz``, the first sample ``phase_ns`` after rise 0."""
    n = int((max(ks) + 1) * period_ns * fs_hz / 1e9) + 1
    t = -phase_ns + np.round(np.arange(n) * 1e9 / fs_hz).astype(np.int64)
    bits = np.zeros(n, np.uint8)
    for k in ks:
        rise = k * period_ns
        bits[(t >= rise) & (t < rise + sync_code.width_ns(k))] = 1
    return bits, np.arange(n, dtype=np.int64), t


# --------------------------------------------------------------------------- pulser


def test_pulser_pulses_decode_back_to_k_from_a_1khz_stream():
    wire = Wire()
    pulser = run_pulser(SimOutputLine(wire[SYNC]), n=17)
    pulses = pulser.recent()
    assert [p.k for p in pulses] == list(range(len(pulses)))
    assert wire[SYNC].value_at(monotonic_ns()) == 0, "stop() leaves the line low"

    start = pulser.origin_ns - 50 * MS
    span = pulses[-1].fall_t_ns + 50 * MS - start
    t_ns, bits, index = sample_net(wire, start, int(span // MS))
    rise, width_s, code = decode_trigger_pulses(bits, index, 1000.0)

    assert len(rise) == len(pulses), "every pulse found once"
    for p, r, w, c in zip(pulses, rise, width_s, code, strict=True):
        # The first high sample is within one sample after the real edge.
        assert 0 <= t_ns[r] - p.rise_t_ns < MS
        assert abs(w * 1e9 - (p.fall_t_ns - p.rise_t_ns)) < MS
        emitted_error = abs((p.fall_t_ns - p.rise_t_ns) - sync_code.width_ns(p.k))
        if emitted_error <= WIDTH_TOLERANCE_NS:
            assert c == p.k % 16
    bad = sum(
        abs((p.fall_t_ns - p.rise_t_ns) - sync_code.width_ns(p.k)) > WIDTH_TOLERANCE_NS
        for p in pulses
    )
    # How many widths miss depends on the CPU load; the pulser must own up to each one.
    assert pulser.counters.bad_widths == bad


class SlowRiseLine:
    """An output whose rising edges come late: each set(1) blocks ``delay_s`` first,
    or only the ``stall_on``-th one blocks ``stall_s`` (a starved thread)."""

    def __init__(self, line: SimOutputLine, delay_s: float = 0.0, stall_on: int = -1,
                 stall_s: float = 0.0) -> None:
        self._line, self._delay, self._stall_on, self._stall = line, delay_s, stall_on, stall_s
        self._rises = 0

    def set(self, value: int) -> int:
        if value:
            time.sleep(self._stall if self._rises == self._stall_on else self._delay)
            self._rises += 1
        return self._line.set(value)

    def close(self) -> None:
        pass


def test_pulser_schedules_from_a_fixed_origin_so_lateness_does_not_accumulate():
    period = 200 * MS
    pulser = run_pulser(SlowRiseLine(SimOutputLine(Wire()[SYNC]), delay_s=0.02), 8, period)
    pulses = pulser.recent()
    lateness = [p.rise_t_ns - (pulser.origin_ns + p.k * period) for p in pulses]
    # Each rise is 20 ms late; scheduling from the previous wake-up would add that up
    # (8 pulses: >= 160 ms by the last one).
    assert all(lat >= 20 * MS for lat in lateness)
    assert lateness[-1] < 100 * MS
    assert pulser.counters.late_edges == len(pulses)
    assert pulser.counters.max_late_ns >= 20 * MS


def test_pulser_skips_slots_it_was_starved_through_and_keeps_the_widths_right():
    period = FAST_PERIOD_NS
    line = SlowRiseLine(SimOutputLine(Wire()[SYNC]), stall_on=2, stall_s=4 * period / 1e9)
    pulser = run_pulser(line, 6, period)
    ks = [p.k for p in pulser.recent()]
    assert ks == sorted(set(ks)), "pulse numbers only go up"
    assert pulser.counters.skipped >= 2
    assert ks[-1] == len(ks) - 1 + pulser.counters.skipped
    last = pulser.recent(1)[0]
    assert last.rise_t_ns - (pulser.origin_ns + last.k * period) < period // 2
    assert pulser.pulses_since(ks[-2]) == pulser.recent(2)


def test_pulser_refuses_a_period_too_short_for_the_widest_pulse():
    with pytest.raises(ValueError):
        SyncPulser(SimOutputLine(Wire()[SYNC]), period_ns=90 * MS)


# --------------------------------------------------------------------------- decoder


@pytest.mark.parametrize("phase_ns", [0, 1, 250_000, 999_999])
def test_decoder_recovers_every_code_and_width_within_a_sample(phase_ns):
    ks = list(range(1, 33))  # no pulse at the first sample: a pulse whose rise was not seen
    bits, index, _ = synthetic_train(ks, FAST_PERIOD_NS, 1000.0, phase_ns)
    rise, width_s, code = decode_trigger_pulses(bits, index, 1000.0)
    assert code.tolist() == [k % 16 for k in ks]
    # The rise is the first sample at or after the edge.
    assert rise.tolist() == [-(-(k * FAST_PERIOD_NS + phase_ns) // MS) for k in ks]
    nominal = np.array([sync_code.width_ns(k) for k in ks]) / 1e9
    assert np.all(np.abs(width_s - nominal) < 1e-3)


def test_a_pulse_already_high_when_the_stream_starts_is_not_reported():
    bits, index, _ = synthetic_train(range(3), FAST_PERIOD_NS, 1000.0, 0)
    assert bits[0] == 1
    assert decode_trigger_pulses(bits, index, 1000.0).code.tolist() == [1, 2]


def test_decoder_reads_microsecond_device_time():
    bits, index, _ = synthetic_train(range(16), FAST_PERIOD_NS, 1000.0, 300_000)
    mcu_us = 5_000_000 + index * 1000
    _, width_s, code = decode_trigger_pulses(bits, mcu_us, 1e6)
    assert code.tolist() == list(range(16))
    assert np.all(np.abs(width_s - (10 + 5 * np.arange(16)) / 1e3) < 1e-3)


def test_a_pulse_split_across_blocks_is_decoded_once_and_right():
    bits, index, _ = synthetic_train(range(4), FAST_PERIOD_NS, 1000.0, 400_000)
    whole = decode_trigger_pulses(bits, index, 1000.0)
    # Split at every sample of pulse 1 (rise at 150 ms, 15 ms wide) and just around it.
    for cut in range(145, 170):
        dec = PulseDecoder(1000.0)
        a = dec.feed(bits[:cut], index[:cut])
        b = dec.feed(bits[cut:], index[cut:])
        got = [np.concatenate([x, y]) for x, y in zip(a, b, strict=True)]
        for g, w in zip(got, whole, strict=True):
            np.testing.assert_array_equal(g, w, err_msg=f"cut at {cut}")


def test_streaming_in_random_blocks_matches_the_batch_decode():
    bits, index, _ = synthetic_train(range(40), FAST_PERIOD_NS, 1000.0, 700_000)
    whole = decode_trigger_pulses(bits, index, 1000.0)
    rng = np.random.default_rng(3)
    dec = PulseDecoder(1000.0, fs_hz=1000.0)
    cuts = np.sort(rng.choice(np.arange(1, bits.size), 300, replace=False))
    parts = [dec.feed(b, i) for b, i in zip(np.split(bits, cuts), np.split(index, cuts),
                                            strict=True)]
    for j, w in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([p[j] for p in parts]), w)


def test_after_a_gap_of_several_pulses_the_code_still_identifies_k():
    period = FAST_PERIOD_NS
    bits, index, t = synthetic_train(range(24), period, 1000.0, 100_000)
    # The stream loses 5 whole pulses (k = 6..10): those samples never arrive.
    keep = ~((t > 6 * period - 20 * MS) & (t < 11 * period - 20 * MS))
    rise, _, code = decode_trigger_pulses(bits[keep], index[keep], 1000.0)
    ks = [k for k in range(24) if not 6 <= k <= 10]
    assert code.tolist() == [k % 16 for k in ks]
    # A coarse k from elapsed time (off by a few pulses) plus the code gives k exactly.
    k_rough = rise / 1000.0 / (period / 1e9) + 3.4
    assert resolve_k(code, k_rough).tolist() == ks


def test_a_sample_gap_over_an_edge_gives_no_code_rather_than_a_wrong_one():
    k = 3  # 25 ms wide: samples lost around its fall would read as 29 ms -> code 4
    bits, index, t = synthetic_train([k], FAST_PERIOD_NS, 1000.0, 0)
    fall = k * FAST_PERIOD_NS + sync_code.width_ns(k)
    keep = ~((t >= fall - 2 * MS) & (t < fall + 4 * MS))
    _, width_s, code = decode_trigger_pulses(bits[keep], index[keep], 1000.0)
    assert sync_code.decode_width(width_s * 1e9).tolist() == [4], "the width alone lies"
    assert code.tolist() == [-1]


def test_resolve_k_picks_the_nearest_k_with_that_code():
    assert resolve_k(np.array([5, 15, 0, -1]), np.array([20.0, 17.0, 30.4, 3.0])).tolist() == [
        21, 15, 32, -1,
    ]


# --------------------------------------------------------------------------- markers


def poll_until(reader: MarkerReader, until_ns: int) -> list[Marker]:
    out: list[Marker] = []
    while monotonic_ns() < until_ns:
        out += reader.poll(0.05)
    return out + reader.poll(0.0)


def test_scheduled_markers_come_out_with_their_codes_and_exact_strobe_times():
    wire = Wire()
    reader = MarkerReader(SimEdgeInput(wire[MARKER_STROBE]), SimInputBus(wire[MARKER]))
    events = [MarkerEvent(0.0, 100), MarkerEvent(0.15, 101), MarkerEvent(0.3, 42),
              MarkerEvent(0.45, 148)]
    t0 = monotonic_ns() + 100 * MS
    expected = schedule_markers(wire, events, t0)
    assert [m.t_ns for m in expected] == [t0 + round(e.t_s * 1e9) + MS for e in events]

    got = poll_until(reader, t0 + 600 * MS)
    assert got == [m for m in expected if m.code != 42]
    assert reader.counters.markers == 3
    assert reader.counters.bad_codes == 1 and reader.counters.last_bad_code == 42
    assert reader.counters.overruns == 0 and reader.counters.lost_edges == 0


def test_the_code_is_held_after_the_strobe_until_the_next_marker():
    wire = Wire()
    t0 = monotonic_ns()
    schedule_markers(wire, [MarkerEvent(0.0, 120), MarkerEvent(0.2, 130)], t0)
    assert wire[MARKER].value_at(t0 + 150 * MS) == 120
    assert wire[MARKER_STROBE].value_at(t0 + 150 * MS) == 0
    assert wire[MARKER_STROBE].value_at(t0 + 200 * MS + 3 * MS) == 1


def test_two_strobes_in_one_poll_keep_only_the_one_whose_code_is_still_on_the_bus():
    wire = Wire()
    reader = MarkerReader(SimEdgeInput(wire[MARKER_STROBE]), SimInputBus(wire[MARKER]))
    t0 = monotonic_ns() + 10 * MS
    expected = schedule_markers(wire, [MarkerEvent(0.0, 110), MarkerEvent(0.05, 111)], t0)
    time.sleep(0.1)  # the reader falls behind: both strobes are pending
    assert reader.poll(0.0) == [expected[1]]
    assert reader.counters.overruns == 1


def test_schedule_markers_rejects_what_a_parallel_port_cannot_show():
    with pytest.raises(ValueError, match="8 data lines"):
        schedule_markers(Wire(), [MarkerEvent(0.1, 256)], 0)
    with pytest.raises(ValueError, match="before the previous strobe"):
        schedule_markers(Wire(), [MarkerEvent(0.1, 101), MarkerEvent(0.103, 102)], 0)


def test_single_line_event_mode_makes_code_1_per_rising_edge():
    wire = Wire()
    reader = MarkerReader.single_line(SimEdgeInput(wire[MARKER_STROBE]), mode="event")
    t0 = monotonic_ns() + 20 * MS
    wire[MARKER_STROBE].schedule([t0, t0 + 5 * MS, t0 + 60 * MS, t0 + 65 * MS], [1, 0, 1, 0])
    got = poll_until(reader, t0 + 120 * MS)
    assert got == [Marker(1, t0), Marker(1, t0 + 60 * MS)]


def test_single_line_count_mode_turns_pulse_bursts_into_codes():
    wire = Wire()
    reader = MarkerReader.single_line(
        SimEdgeInput(wire[MARKER_STROBE]), mode="count", code_range=(1, 4), burst_gap_s=0.04
    )
    t0 = monotonic_ns() + 20 * MS
    times, values = [], []
    for first, n in ((t0, 3), (t0 + 150 * MS, 5), (t0 + 300 * MS, 1)):
        for i in range(n):
            times += [first + i * 10 * MS, first + i * 10 * MS + 3 * MS]
            values += [1, 0]
    wire[MARKER_STROBE].schedule(times, values)
    got = poll_until(reader, t0 + 400 * MS)
    assert got == [Marker(3, t0), Marker(1, t0 + 300 * MS)]
    assert reader.counters.bad_codes == 1 and reader.counters.last_bad_code == 5


class ScriptedEdges:
    """An EdgeInput that hands out prepared batches (for sequence-number bookkeeping)."""

    def __init__(self, batches: list[list[Edge]]) -> None:
        self._batches = batches
        self._lock = threading.Lock()

    def read_edges(self, timeout_s: float) -> list[Edge]:
        with self._lock:
            return self._batches.pop(0) if self._batches else []

    def value(self) -> int:
        return 0

    def close(self) -> None:
        pass


def test_strobe_edges_lost_by_the_input_are_counted():
    strobe = ScriptedEdges([[Edge(1, True, 1), Edge(2, False, 2)],
                            [Edge(9, True, 7), Edge(10, False, 8)]])
    reader = MarkerReader.single_line(strobe, mode="event")
    assert reader.poll(0) + reader.poll(0) == [Marker(1, 1), Marker(1, 9)]
    assert reader.counters.lost_edges == 4
