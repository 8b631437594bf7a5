"""edge.clock.model: device time -> host ns, fitted online from sync-pulse pairs.

Like pyxdf's test_clock_sync: synthetic device clocks with known offset, drift and
jitter; the model must recover them and keep recovering them through the faults a rig
sees (missing pulses, counter gaps, resets, clock steps, outliers).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.clock.model import ClockModel, fall_pairs, match_pulses
from hil.sim.crystal import Crystal
from sensors import sync_code

H0 = 7_000_000_000_000  # host ns at the start of the synthetic session
FS = 1000.0  # EEG-like: device time is a sample index


def device_at(crystal: Crystal, host_ns: np.ndarray) -> np.ndarray:
    """True device time (samples) at host instants."""
    return crystal.device_s(host_ns) * FS


def pulses(n: int, start_k: int = 0) -> np.ndarray:
    return H0 + (np.arange(start_k, start_k + n) + 1) * sync_code.PERIOD_NS


def feed(model: ClockModel, crystal: Crystal, host_ns: np.ndarray,
         jitter_ns: np.ndarray | float = 0.0) -> list[str]:
    """Pairs: the device saw the true rise; the host recorded it with ``jitter_ns``."""
    dev = device_at(crystal, host_ns)
    rec = host_ns + np.rint(np.broadcast_to(jitter_ns, host_ns.shape)).astype(np.int64)
    return [model.add_pair(d, h) for d, h in zip(dev.tolist(), rec.tolist(), strict=True)]


def map_error_ns(model: ClockModel, crystal: Crystal, host_ns: np.ndarray) -> np.ndarray:
    return (model.to_host_ns(device_at(crystal, host_ns)) - host_ns).astype(np.float64)


def eeg_model(**kw) -> ClockModel:
    return ClockModel("eeg", FS, **kw)


# ---------------------------------------------------------------- fitting


def test_recovers_offset_and_drift_under_jitter():
    rng = np.random.default_rng(0)
    xtal = Crystal(ppm=73.0, origin_host_ns=H0 - 5_000_000_000, origin_device_s=12.0)
    m = eeg_model()
    host = pulses(300)
    feed(m, xtal, host, rng.normal(0, 500_000, host.size))  # 0.5 ms rms host jitter
    assert m.quality == "pulse"
    assert m.drift_ppm == pytest.approx(73.0, abs=1.0)
    err = map_error_ns(m, xtal, host[-60:])
    assert np.abs(err).max() < 150_000
    # The stated uncertainty is the right order: 0.5 ms / sqrt(300) x a few.
    assert 10_000 < m.uncertainty_ns < 100_000


def test_exact_pairs_are_fitted_to_the_nanosecond_scale():
    xtal = Crystal(ppm=-99.0, origin_host_ns=H0)
    m = eeg_model()
    feed(m, xtal, pulses(20))
    err = map_error_ns(m, xtal, H0 + np.linspace(1e9, 30e9, 50).astype(np.int64))
    assert np.abs(err).max() < 1_000  # extrapolated 10 s past the last pair too


def test_outliers_are_rejected():
    rng = np.random.default_rng(1)
    xtal = Crystal(ppm=40.0, origin_host_ns=H0)
    m = eeg_model()
    host = pulses(200)
    jitter = rng.normal(0, 100_000, host.size)
    bad = rng.random(host.size) < 0.15
    bad[:5] = False
    # One-sided, as a preempted host records late: 1..2.5 ms pass the step gate and only
    # the MAD rejection keeps them out; a few gross ones (40..80 ms) are gated.
    late = rng.uniform(1e6, 2.5e6, bad.sum())
    late[::5] = rng.uniform(40e6, 80e6, late[::5].size)
    jitter[bad] += late
    feed(m, xtal, host, jitter)
    assert np.abs(map_error_ns(m, xtal, host[-20:])).max() < 60_000
    assert m.drift_ppm == pytest.approx(40.0, abs=1.0)
    assert m.segment == 0  # scattered outliers never open a segment
    assert m.counters.rejected > 0


def test_missing_pulses_and_a_long_gap():
    rng = np.random.default_rng(2)
    xtal = Crystal(ppm=-61.0, origin_host_ns=H0)
    m = eeg_model()
    host = pulses(400)
    keep = rng.random(host.size) > 0.3
    keep[120:300] = False  # three minutes without any pulse
    feed(m, xtal, host[keep], rng.normal(0, 200_000, keep.sum()))
    # Right through the gap (interpolated afterwards) and well past the last pulse.
    assert np.abs(map_error_ns(m, xtal, host[150:280])).max() < 200_000
    assert np.abs(map_error_ns(m, xtal, host[-1:] + 60_000_000_000)).max() < 200_000


def test_first_pair_alone_gives_an_offset_with_nominal_rate():
    xtal = Crystal(ppm=50.0, origin_host_ns=H0)
    m = eeg_model()
    feed(m, xtal, pulses(1))
    assert m.quality == "pulse"
    assert m.state["n_pairs"] == 1
    # 1 s after the only pair, the error is the crystal's 50 ppm of that second.
    assert abs(map_error_ns(m, xtal, pulses(1, start_k=1))[0]) < 60_000


# ---------------------------------------------------------------- coarse model


def test_coarse_model_from_arrivals_before_any_pulse():
    rng = np.random.default_rng(3)
    xtal = Crystal(ppm=80.0, origin_host_ns=H0)
    m = eeg_model()
    assert m.quality == "none"
    with pytest.raises(RuntimeError):
        m.to_host_ns(np.array([0.0]))
    block_end = H0 + np.arange(1, 40) * 50_000_000
    for h in block_end:  # delivery 2..30 ms after the block's newest sample
        m.note_arrival(float(device_at(xtal, np.array([h]))[0]), int(h + rng.uniform(2e6, 30e6)))
    assert m.quality == "coarse"
    assert m.state["quality"] == "coarse"
    err = map_error_ns(m, xtal, block_end)
    assert np.all(err > 0) and err.max() < 5_000_000  # late by about the least latency
    assert m.uncertainty_ns >= 1_000_000


def test_pulses_replace_the_coarse_model():
    xtal = Crystal(ppm=80.0, origin_host_ns=H0)
    m = eeg_model()
    m.note_arrival(float(device_at(xtal, np.array([H0 + 900_000_000]))[0]), H0 + 920_000_000)
    feed(m, xtal, pulses(10))
    assert m.quality == "pulse"
    assert np.abs(map_error_ns(m, xtal, pulses(10))).max() < 2_000


# ---------------------------------------------------------------- faults


def test_counter_gap_is_not_a_fault():
    xtal = Crystal(ppm=20.0, origin_host_ns=H0)
    m = eeg_model()
    feed(m, xtal, pulses(30))
    # Samples lost for 5 s: the next block's index jumps ahead, as time did.
    h = H0 + 36_000_000_000
    assert m.note_arrival(float(device_at(xtal, np.array([h]))[0]), h + 1_000_000) == "ok"
    feed(m, xtal, pulses(10, start_k=36))
    assert m.segment == 0
    assert np.abs(map_error_ns(m, xtal, pulses(46))).max() < 2_000


def test_device_reset_seen_in_arrivals_starts_a_new_segment():
    xtal = Crystal(ppm=-35.0, origin_host_ns=H0)
    m = eeg_model()
    feed(m, xtal, pulses(60))
    old_segment = m.segment
    # The device resets at 60.5 s: its counter restarts at 0 at 61.0 s.
    after = Crystal(ppm=-35.0, origin_host_ns=H0 + 61_000_000_000)
    h = H0 + 61_100_000_000
    assert m.note_arrival(float(device_at(after, np.array([h]))[0]), h + 2_000_000) == "reset"
    assert m.segment == old_segment + 1 and m.quality == "coarse"
    assert m.counters.resets == 1
    # Coarse pairing works across the reset, then a single pair is enough: the slope
    # carries over from the old segment.
    feed(m, after, pulses(1, start_k=61))
    assert np.abs(map_error_ns(m, after, pulses(20, start_k=61))).max() < 5_000
    # Data tagged with the old segment still maps with the old fit.
    old = device_at(xtal, pulses(5, start_k=50))
    np.testing.assert_allclose(m.to_host_ns(old, segment=old_segment), pulses(5, start_k=50),
                               atol=2_000)


def test_device_reset_seen_only_in_pairs_is_confirmed_then_refitted():
    xtal = Crystal(ppm=15.0, origin_host_ns=H0)
    m = eeg_model(confirm_pairs=3)
    feed(m, xtal, pulses(40))
    after = Crystal(ppm=15.0, origin_host_ns=H0 + 40_500_000_000)
    verdicts = feed(m, after, pulses(5, start_k=40))
    assert verdicts[:3] == ["pending", "pending", "new_segment"]
    assert verdicts[3:] == ["accepted", "accepted"]
    assert np.abs(map_error_ns(m, after, pulses(10, start_k=40))).max() < 5_000


def test_forward_clock_step_seen_in_arrivals():
    xtal = Crystal(ppm=30.0, origin_host_ns=H0)
    m = eeg_model()
    feed(m, xtal, pulses(30))
    t_step = H0 + 30_500_000_000
    xtal.step(t_step, 0.25)  # device time jumps 250 ms ahead
    h = t_step + 50_000_000
    # The block would have arrived 200 ms before it was sampled: a step, not latency.
    assert m.note_arrival(float(device_at(xtal, np.array([h]))[0]), h + 3_000_000) == "step"
    feed(m, xtal, pulses(3, start_k=31))
    assert np.abs(map_error_ns(m, xtal, pulses(10, start_k=31))).max() < 5_000


def test_small_clock_step_seen_only_in_pairs():
    rng = np.random.default_rng(4)
    xtal = Crystal(ppm=30.0, origin_host_ns=H0)
    m = eeg_model()
    feed(m, xtal, pulses(60), rng.normal(0, 100_000, 60))
    xtal.step(H0 + 60_500_000_000, 0.010)  # 10 ms: inside the arrival tolerance
    verdicts = feed(m, xtal, pulses(10, start_k=60), rng.normal(0, 100_000, 10))
    assert "new_segment" in verdicts[:3]
    assert np.abs(map_error_ns(m, xtal, pulses(6, start_k=64))).max() < 300_000


def test_two_far_pairs_in_a_row_are_outliers_not_a_step():
    xtal = Crystal(ppm=0.0, origin_host_ns=H0)
    m = eeg_model(confirm_pairs=3)
    feed(m, xtal, pulses(30))
    assert feed(m, xtal, pulses(2, start_k=30), 40_000_000) == ["pending", "pending"]
    assert feed(m, xtal, pulses(1, start_k=32)) == ["accepted"]
    assert m.segment == 0 and m.counters.rejected == 2


def test_state_is_json_ready_and_says_what_the_fit_is():
    xtal = Crystal(ppm=12.0, origin_host_ns=H0)
    m = eeg_model()
    feed(m, xtal, pulses(30))
    s = json.loads(json.dumps(m.state))
    assert s["quality"] == "pulse" and s["n_pairs"] == 30 and s["segment"] == 0
    assert s["drift_ppm"] == pytest.approx(12.0, abs=0.01)
    assert s["offset_ns"] == pytest.approx(H0, abs=1_000)  # host ns at device sample 0
    assert {"residual_ns", "uncertainty_ns", "rejected"} <= set(s)


def test_window_is_bounded():
    xtal = Crystal(ppm=5.0, origin_host_ns=H0)
    m = eeg_model(window_pairs=50)
    feed(m, xtal, pulses(500))
    assert m.state["n_pairs"] == 50
    assert m._px.size == 50  # the ring never grows


# ---------------------------------------------------------------- pairing


def host_log(k_from: int, k_to: int) -> tuple[np.ndarray, np.ndarray]:
    k = np.arange(k_from, k_to)
    return k, H0 + (k + 1) * sync_code.PERIOD_NS


def test_pairing_after_a_gap_longer_than_the_code_cycle_uses_the_model():
    xtal = Crystal(ppm=-80.0, origin_host_ns=H0)
    m = eeg_model()
    feed(m, xtal, pulses(30))
    # 40 pulses unseen, then pulses 70..72: code 70 % 16 == 6 is also pulse 54's and 86's.
    hk, hr = host_log(40, 90)
    rises = device_at(xtal, pulses(3, start_k=70))
    pairs = match_pulses(rises, np.array([70, 71, 72]) % 16, hk, hr, m)
    assert pairs.k.tolist() == [70, 71, 72]
    np.testing.assert_array_equal(pairs.host_ns, pulses(3, start_k=70))


def test_pairing_with_only_a_coarse_model():
    xtal = Crystal(ppm=60.0, origin_host_ns=H0)
    m = eeg_model()
    h = H0 + 33_300_000_000
    m.note_arrival(float(device_at(xtal, np.array([h]))[0]), h + 40_000_000)  # 40 ms late
    hk, hr = host_log(0, 40)
    rises = device_at(xtal, pulses(2, start_k=33))
    pairs = match_pulses(rises, np.array([33 % 16, -1]), hk, hr, m)
    assert pairs.k.tolist() == [33, 34]  # the unknown code is placed by prediction alone


def test_pairing_rejects_a_wrong_code_and_keeps_one_device_pulse_per_host_pulse():
    xtal = Crystal(ppm=0.0, origin_host_ns=H0)
    m = eeg_model()
    feed(m, xtal, pulses(10))
    hk, hr = host_log(0, 20)
    rise = device_at(xtal, pulses(1, start_k=12))
    assert len(match_pulses(rise, np.array([13 % 16]), hk, hr, m, max_error_ns=0.45e9)) == 0
    twice = np.r_[rise, rise + 3.0]  # a glitch 3 ms later claims the same pulse
    pairs = match_pulses(twice, np.array([12, 12]), hk, hr, m)
    assert pairs.k.tolist() == [12] and pairs.device_index.tolist() == [0]


def test_camera_codes_with_slack_pair_by_prediction():
    xtal = Crystal(ppm=0.0, origin_host_ns=H0)
    m = eeg_model()
    feed(m, xtal, pulses(10))
    hk, hr = host_log(0, 20)
    rise = device_at(xtal, pulses(1, start_k=12))
    # A frame-quantised width decoded as code 13 instead of 12.
    pairs = match_pulses(rise, np.array([13]), hk, hr, m, code_slack=2)
    assert pairs.k.tolist() == [12]


def test_no_pairs_before_any_model():
    hk, hr = host_log(0, 5)
    assert len(match_pulses(np.array([100.0]), np.array([1]), hk, hr, eeg_model())) == 0


def test_fall_pairs_keep_only_widths_that_agree_with_the_host():
    xtal = Crystal(ppm=0.0, origin_host_ns=H0)
    m = eeg_model()
    feed(m, xtal, pulses(5))
    hk, hr = host_log(0, 10)
    hf = hr + np.array([sync_code.width_ns(int(k)) for k in hk])
    rises = device_at(xtal, pulses(2, start_k=5))
    pairs = match_pulses(rises, np.array([5, 6]), hk, hr, m)
    falls = device_at(xtal, hf[[5, 6]])
    falls[1] += 8.0  # a gap of 8 samples next to the second fall
    fp = fall_pairs(pairs, falls, hf, FS, tolerance_s=0.003)
    assert fp.k.tolist() == [5]
    assert fp.host_ns.tolist() == [hf[5]]


def test_code_slack_follows_the_sample_period():
    # Widths are measured in samples: a period over half the 5 ms code step (a 150 fps
    # camera, a Cyton at 250 Hz, 125 Hz with the Daisy) can put a width a code or two off.
    from edge.clock.keeper import code_slack

    assert code_slack(1000.0) == 0 and code_slack(500.0) == 0
    assert code_slack(250.0) == 2 and code_slack(150.0) == 2 and code_slack(125.0) == 2


def test_a_125_hz_stream_pairs_every_pulse_although_its_widths_are_8_ms_coarse():
    # A Cyton + Daisy: 16 channels at 125 Hz, the sync line sampled with them. Widths come
    # out in 8 ms steps against a 5 ms code step: without slack, wrong codes left pulses
    # unpaired (11 of 40 here) and pulled the fit off.
    from edge.clock.keeper import ClockKeeper
    from sensors.blocks import SampleBlock, StreamInfo
    from sensors.trigger import Pulse

    fs, ppm, seconds, h0 = 125.0, 40.0, 40, 10**12
    pulses = [Pulse(k, h0 + 300_000_000 + k * sync_code.PERIOD_NS,
                    h0 + 300_000_000 + k * sync_code.PERIOD_NS + sync_code.width_ns(k))
              for k in range(seconds + 2)]
    now = {"ns": h0}

    class Pulser:
        def recent(self, n=None):
            done = [p for p in pulses if p.fall_t_ns <= now["ns"]]
            return done if n is None else done[-n:]

    keeper = ClockKeeper(Pulser(), [StreamInfo("eeg", fs, ("a",), ("uV",), (1.0,), (0.0,),
                                               "sample")], now=lambda: now["ns"])
    n = int(seconds * fs)
    s = np.arange(n)
    t = h0 + np.round(s / fs / (1 + ppm * 1e-6) * 1e9).astype(np.int64)  # its own crystal
    rise = np.array([p.rise_t_ns for p in pulses])
    fall = np.array([p.fall_t_ns for p in pulses])
    j = np.searchsorted(rise, t, side="right") - 1
    high = ((j >= 0) & (t < fall[np.maximum(j, 0)])).astype(np.uint8)
    for a in range(0, n, 25):  # 0.2 s per read, arriving 5 ms after its last sample
        b = min(a + 25, n)
        now["ns"] = int(t[b - 1]) + 5_000_000
        keeper.on_block(SampleBlock("eeg", s[a:b], s[a:b], np.full(b - a, now["ns"]),
                                    np.zeros((b - a, 1), np.int32), np.zeros((b - a, 1)),
                                    high[a:b], np.zeros(b - a, np.uint32)))
    st = keeper.state()["eeg"]
    assert st["quality"] == "pulse" and st["segments"] == 0
    assert st["pulses_unmatched"] == 0 and st["pairs"] >= 2 * (seconds - 2)
    err_ms = (keeper.models["eeg"].to_host_ns(s.astype(float)) - t) / 1e6
    assert np.abs(err_ms[-n // 4:]).max() < 0.5 * 1e3 / fs  # within half a sample period
