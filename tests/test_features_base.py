"""Shared steps: per-sample quality bits, filters and decimation carried across blocks."""

from __future__ import annotations

import numpy as np
from scipy import signal

from edge.features.base import (
    BAD_FLAT,
    BAD_GAP,
    BAD_LEADOFF,
    BAD_NAN,
    BAD_SAT,
    Boxcar,
    Feature,
    Quality,
    SosStream,
    butter,
    fill_nonfinite,
    reason_of,
)


def _q(flat_n: int = 5) -> Quality:
    return Quality(2, np.array([-10.0, -10.0]), np.array([10.0, 10.0]),
                   np.array([flat_n, flat_n]), np.zeros(2))


def test_quality_marks_nan_saturation_lead_off_and_gaps() -> None:
    q = _q()
    x = np.column_stack((np.sin(np.arange(10.0)), np.cos(np.arange(10.0))))
    x[2, 0] = np.nan
    x[4, 1] = 11.0
    lo = np.zeros((10, 2), bool)
    lo[6, 1] = True
    idx = np.array([0, 1, 2, 3, 4, 5, 6, 7, 9, 10])  # 8 is missing
    bad = q.update(idx, x, lo)
    assert bad[2, 0] & BAD_NAN and bad[4, 1] & BAD_SAT and bad[6, 1] & BAD_LEADOFF
    assert (bad[8] & BAD_GAP).all() and not (bad[9] & BAD_GAP).any()
    assert reason_of(int(bad[4, 1] | bad[6, 1])) == "lead_off"  # priority order
    # A gap between blocks is seen too.
    assert (q.update(np.array([12, 13]), x[:2] * 0 + 1.0)[0] & BAD_GAP).all()


def test_flat_line_is_marked_after_flat_n_samples_whatever_the_blocks() -> None:
    x = np.concatenate((np.sin(np.arange(20.0)), np.full(30, 0.5), np.sin(np.arange(10.0))))
    x2 = np.column_stack((x, x + 1.0))
    ref = _q(10).update(np.arange(60), x2)
    q = _q(10)
    parts = [q.update(np.arange(a, min(a + 7, 60)), x2[a:a + 7]) for a in range(0, 60, 7)]
    got = np.vstack(parts)
    np.testing.assert_array_equal(got, ref)
    flat = (ref[:, 0] & BAD_FLAT) > 0
    assert flat[30:50].all() and not flat[:29].any() and not flat[51:].any()


def test_sos_stream_and_boxcar_are_block_size_independent() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5000, 3))
    sos = butter(4, (1.0, 40.0), "bandpass", 1000.0)
    one = SosStream(sos).update(x)
    s = SosStream(sos)
    parts = np.vstack([s.update(x[a:a + 37]) for a in range(0, 5000, 37)])
    np.testing.assert_allclose(parts, one, rtol=0, atol=1e-12)
    # Same as scipy's sosfilt started in steady state at the first value.
    zi = signal.sosfilt_zi(sos)[..., None] * x[0]
    np.testing.assert_allclose(one, signal.sosfilt(sos, x, axis=0, zi=zi)[0], atol=1e-12)
    t = np.arange(5000, dtype=np.int64) * 1_000_000
    bad = np.zeros((5000, 3), np.uint8)
    bad[123, 1] = BAD_NAN
    t1, m1, b1 = Boxcar(40, 3).update(t, x, bad)
    bx = Boxcar(40, 3)
    got = [bx.update(t[a:a + 33], x[a:a + 33], bad[a:a + 33]) for a in range(0, 5000, 33)]
    np.testing.assert_array_equal(np.concatenate([g[0] for g in got]), t1)
    np.testing.assert_allclose(np.vstack([g[1] for g in got]), m1, atol=1e-12)
    assert b1[3, 1] == BAD_NAN and b1.sum() == BAD_NAN
    assert t1[0] == int(19.5 * 1_000_000)  # the mean time of its 40 samples


def test_nan_is_filled_so_a_filter_recovers_and_features_never_carry_it_as_valid() -> None:
    x = np.array([1.0, np.nan, np.nan, 4.0])
    filled, last = fill_nonfinite(x, np.array([0.0]))
    assert filled.tolist() == [1.0, 1.0, 1.0, 4.0] and float(last) == 4.0
    f = Feature.make("x", float("nan"), "u", 10, 20)
    assert not f.valid and f.reason == "nan"
    g = Feature.make("x", 3.0, "u", 10, 2_000_010, "flat")
    assert not g.valid and np.isnan(g.value) and g.latency_ms == 2.0
