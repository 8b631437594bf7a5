"""The host wake-up bench scores a wake as the ADS1299 driver scores a DRDY read."""

from __future__ import annotations

from edge.wakeup import serve, wake_loop

P = 1_000_000  # 1 kHz


def test_a_prompt_wake_serves_its_tick_and_loses_nothing() -> None:
    assert serve(5 * P + 40_000, 0, P, 5, 100) == (5, 0, False)


def test_a_wake_after_two_more_ticks_overwrote_two_samples() -> None:
    # Slept for tick 5, woke just after tick 7: only 7's frame is still in the chip.
    assert serve(7 * P + 10_000, 0, P, 5, 100) == (7, 2, False)


def test_a_wake_almost_a_period_after_the_newest_tick_is_a_late_read() -> None:
    assert serve(5 * P + 990_000, 0, P, 5, 100) == (5, 0, True)


def test_a_short_run_accounts_for_every_tick() -> None:
    r = wake_loop(1000.0, 0.3, rt_priority=None)
    assert r["ticks"] == 300
    assert 0 <= r["overwritten"] + r["late_read"] <= 300
    assert r["loss_fraction"] == round((r["overwritten"] + r["late_read"]) / 300, 6)
    assert r["lateness_us"]["p50"] <= r["lateness_us"]["max"]
