"""The wake-floor verdict behind `selftest`'s host line and `run`'s start-up warning."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edge import config, wakeup
from edge.cli import warn_if_direct_mode_cannot_hold


def floor(lost: int, fs_hz: float = 1000.0) -> wakeup.WakeFloor:
    return wakeup.WakeFloor(fs_hz=fs_hz, seconds=5.0, ticks=5000, lost=lost, p999_us=900.0,
                            scheduling="SCHED_FIFO 50", boot_id=wakeup.boot_id(),
                            measured_at_s=0.0)


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path


def test_one_missed_deadline_of_the_empty_loop_means_direct_mode_cannot_hold() -> None:
    assert floor(0).holds and "can hold 1000 Hz" in floor(0).sentence()
    bad = floor(1)
    assert not bad.holds
    assert "CANNOT hold 1000 Hz" in bad.sentence() and "1 of 5000" in bad.sentence()


def test_a_measured_verdict_counts_every_tick() -> None:
    f = wakeup.check(500.0, 0.2, rt_priority=None)
    assert f.ticks == 100 and 0 <= f.lost <= 100
    assert f.holds == (f.lost == 0)


def test_the_cached_verdict_is_only_reused_for_this_boot_and_this_rate() -> None:
    wakeup.save(floor(3))
    assert wakeup.load(1000.0) == floor(3)
    assert wakeup.load(250.0) is None
    wakeup.save(dataclasses.replace(floor(3), boot_id="another-boot"))
    assert wakeup.load(1000.0) is None


def test_an_unreadable_cache_is_no_verdict(private_cache: Path) -> None:
    wakeup.cache_path().parent.mkdir(parents=True)
    wakeup.cache_path().write_text("{not json")
    assert wakeup.load(1000.0) is None


def test_run_warns_at_start_when_the_selftest_found_direct_mode_cannot_hold(
        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config.load(config.example_path("sim"))
    cfg = dataclasses.replace(cfg, sim={**cfg.sim, "eeg_link": "spi"})  # direct mode, emulated
    wakeup.save(floor(7))
    warn_if_direct_mode_cannot_hold(cfg)
    err = capsys.readouterr().err
    assert "warning: direct mode CANNOT hold 1000 Hz here" in err and "selftest" in err
    wakeup.save(floor(0))
    warn_if_direct_mode_cannot_hold(cfg)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("name", ["sim-cyton", "sim", "pi"])  # Cyton; the EEG bridge
def test_run_does_not_check_the_host_for_a_buffered_backend(
        capsys: pytest.CaptureFixture[str], name: str) -> None:
    cfg = config.load(config.example_path(name))
    wakeup.save(floor(7, fs_hz=float(cfg.eeg["fs_hz"])))
    warn_if_direct_mode_cannot_hold(cfg)
    assert capsys.readouterr().err == ""


def test_idle_and_beside_the_rig_make_one_verdict_that_any_miss_breaks() -> None:
    idle = floor(0)
    beside = dataclasses.replace(floor(2), seconds=2.0, ticks=2000, conditions="beside the rig")
    both = idle.plus(beside)
    assert (both.ticks, both.lost, both.seconds) == (7000, 2, 7.0) and not both.holds
    assert "idle host 5 s + beside the rig 2 s" in both.sentence()
    assert idle.plus(dataclasses.replace(beside, lost=0)).holds


def test_a_background_measurement_reports_when_done() -> None:
    m = wakeup.Measurement(500.0, 0.2, rt_priority=None)
    assert not m.ready()  # spawned, not started
    m.start()
    r = m.result()
    assert m.ready() and r["ticks"] == 100
