"""Lossless recording, end to end: SIGKILL the running rig, then check the file against the
emulators' ground truth, rebuilt offline from their deterministic models.

``mmme-edge run --sim --duration 30`` records into a tmp dir; after ~6 s it is SIGKILLed.
Once with the EEG behind the bridge (sim.toml's own front end) and once on direct SPI.
The file must open, and every hub and EEG sample taken up to one second before the kill
must be in it, bit-exact:

- hub: the emulator's sample ``seq`` is ``PhysioModel.chunk`` (values + the seq-th noise
  draw, both deterministic from the seed) at scenario time
  ``crystal.host_ns(g + seq / fs) - t0``, where ``g`` is the MCU clock one sample after
  START. ``t0`` cancels (the crystal's origin is ``t0``); ``g`` is the one thing the
  file does not say exactly (``device_t`` is whole microseconds), but it comes from an
  integer host ns of the START command: the candidates that reproduce every recorded
  ``t_us`` are tried, and one must reproduce every recorded count.
- EEG: the ADS1299 emulator's counts depend only on the seed and the sample index
  (the scenario has no blinks, the only time-dependent part), so the same emulator,
  configured by the same driver offline and fast-forwarded, gives the truth per index.
  The EEG reader may miss a rare DRDY deadline on a loaded machine: that is an index gap,
  counted; every sample that is there must be exact.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from edge import config
from edge.recording.format import open_recording
from edge.rig import eeg_settings
from hil.sim.ads1299 import Ads1299Emulator, shared_reset_line, shared_start_line
from hil.sim.crystal import Crystal
from hil.sim.hub import OFFSET, SCALE
from hil.sim.physio import PhysioModel
from hil.sim.rig import HUB_UPTIME_S, load_scenario
from sensors.ads1299 import Ads1299
from sensors.blocks import monotonic_ns

CLI = [sys.executable, "-m", "edge.cli"]
DURATION_S = 30.0
KILL_AFTER_S = 6.0
LOSS_WINDOW_NS = 1_000_000_000  # the recorder may lose at most the last second


def _sim_text(link: str) -> str:
    """sim.toml with the EEG front end ``link``: "bridge" (its own) or "spi" (direct)."""
    text = config.example_path("sim").read_text()
    return text.replace('eeg_link = "bridge"', f'eeg_link = "{link}"')



# ----------------------------------------------------------------------- hub truth


def _hub_candidates(t_us: np.ndarray, seq: np.ndarray, ppm: float, fs: int) -> list[int]:
    """Rows of the MCU's sample grid (anchored at t0: row k at its reading of t0 plus
    k / fs) where the first sample after START can sit and give these t_us."""
    c0 = Crystal(ppm=ppm, origin_host_ns=0, origin_device_s=HUB_UPTIME_S)
    row = round((t_us[0] / 1e6 - HUB_UPTIME_S) * fs) - int(seq[0])
    return [r for r in range(row - 3, row + 4)
            if np.array_equal(_hub_grid(c0, r, seq, fs)[1], t_us)]


def _hub_grid(c0: Crystal, row: int, seq: np.ndarray, fs: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """As ``HubEmulator._lookahead``: (host ns - t0, t_us) of samples ``seq`` when the first
    sample after START was grid row ``row``."""
    dev0 = float(c0.device_s(np.int64(0)))
    dev_s = dev0 + (row + (seq - 0)) / fs
    rel = c0.host_ns(dev_s)
    t_us = np.floor(c0.device_s(rel) * 1e6).astype(np.int64)
    return rel, t_us


def _hub_raw(scenario, seed: int, rel_ns: np.ndarray, n_total: int) -> np.ndarray:
    physio = PhysioModel(scenario, seed=seed)
    noise = physio.noise(n_total)[: rel_ns.size]  # the seq-th draw belongs to sample seq
    values = physio.values(rel_ns * 1e-9) + noise
    raw = np.clip(np.rint((values - np.asarray(OFFSET)) / np.asarray(SCALE)),
                  -(2**31), 2**31 - 1)
    return raw.astype(np.int32)


# ----------------------------------------------------------------------- EEG truth


def _eeg_truth(cfg: config.RigConfig, scenario, n: int) -> np.ndarray:
    """Counts of EEG samples 0..n-1 from the emulator, configured by the real driver."""
    settings = eeg_settings(cfg)
    crystal = Crystal(ppm=float(cfg.sim["eeg_drift_ppm"]), origin_host_ns=monotonic_ns())
    names = tuple(settings.channels)
    chips = [Ads1299Emulator(crystal, None, scenario, seed=int(cfg.sim["seed"]), chip_index=i,
                             t0_ns=crystal.origin_host_ns, channels=names[8 * i: 8 * i + 8],
                             chip_id=int(cfg.sim["eeg_chip_id"]))
             for i in range(settings.n_chips)]
    start = shared_start_line(*chips) if settings.n_chips > 1 else None
    drv = Ads1299(chips, chips[0].drdy_line(), settings, reset=shared_reset_line(*chips),
                  start_pin=start)
    drv.open()
    drv.start()
    # Fast-forward: the crystal says the run started long ago, so every sample is due.
    crystal.origin_host_ns -= int((n / settings.fs_hz + 2) * 1e9)
    counts = np.concatenate([c.truth(0, n)[1] for c in chips], axis=1)
    drv.close()
    return counts


# ----------------------------------------------------------------------- the run


@pytest.fixture(scope="module", params=["bridge", "spi"])
def killed(tmp_path_factory, request) -> dict:
    out = tmp_path_factory.mktemp("rec")
    cfg_path = out.parent / f"sim-{request.param}.toml"
    cfg_path.write_text(_sim_text(request.param))
    proc = subprocess.Popen(
        [*CLI, "run", "--sim", "--config", str(cfg_path), "--duration", str(DURATION_S),
         "--quiet", "--record-dir", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not list(out.glob("*.mcap")):  # opened: the devices are up
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no recording appeared"
            time.sleep(0.05)
        time.sleep(KILL_AFTER_S)
        family = psutil.Process(proc.pid).children(recursive=True)
        kill_ns = monotonic_ns()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # The EEG acquisition process ends when its pipe to the dead parent closes.
        _, alive = psutil.wait_procs(family, timeout=10)
        for p in alive:
            p.kill()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    (path,) = out.glob("*.mcap")
    return {"path": path, "kill_ns": kill_ns, "returncode": proc.returncode,
            "cfg": config.load(cfg_path).with_all_simulated()}


def test_killed_recording_opens(killed) -> None:
    assert killed["returncode"] == -signal.SIGKILL
    r = open_recording(killed["path"])
    assert not r.complete  # no footer: it was killed
    assert {"eeg", "hub"} <= set(r.streams)
    assert len(r.frames) > 0 and len(r.markers) >= 1
    # The clock keeper's states went to the /clock topic while running.
    assert {c["stream"] for c in r.clock} >= {"eeg", "hub"}
    assert any(c["state"]["quality"] == "pulse" for c in r.clock if c["stream"] == "hub")


def test_every_hub_sample_up_to_a_second_before_the_kill_is_bit_exact(killed) -> None:
    cfg = killed["cfg"]
    sim = cfg.sim
    fs = int(cfg.hub["fs_hz"])
    hub = open_recording(killed["path"]).streams["hub"]
    seq = hub.index.astype(np.int64)
    assert seq[0] == 0 and np.all(np.diff(seq) == 1), "hub samples missing or out of order"
    starts = _hub_candidates(hub.device_t.astype(np.int64), seq, float(sim["hub_drift_ppm"]),
                             fs)
    assert starts, "no MCU start instant reproduces the recorded microsecond timestamps"
    # The first sample the bench's host clock could have taken it: arrival is never earlier,
    # so t0 <= min(arrival - rel) (biased late by the smallest delivery latency only).
    scenario = load_scenario(sim, DURATION_S)
    matched = None
    for h in starts:
        rel, _ = _hub_grid(Crystal(ppm=float(sim["hub_drift_ppm"]),
                                   origin_device_s=HUB_UPTIME_S), h, seq, fs)
        raw = _hub_raw(scenario, int(sim["seed"]), rel, seq.size)
        if np.array_equal(raw, hub.raw):
            matched = (h, rel)
            break
    assert matched is not None, (
        f"no start instant among {len(starts)} reproduces the counts; first mismatch count "
        f"{int(np.count_nonzero(raw != hub.raw))} of {raw.size}")
    h, rel = matched
    t0_late = int(np.min(hub.host_t_ns - rel))
    due = np.flatnonzero(t0_late + rel <= killed["kill_ns"] - LOSS_WINDOW_NS)
    # Samples due by then that the recording does not reach: none.
    c0 = Crystal(ppm=float(sim["hub_drift_ppm"]), origin_device_s=HUB_UPTIME_S)
    more = np.arange(seq[-1] + 1, seq[-1] + 2 * fs, dtype=np.int64)
    rel_more, _ = _hub_grid(c0, h, more, fs)
    missing_tail = int(np.count_nonzero(t0_late + rel_more <= killed["kill_ns"] - LOSS_WINDOW_NS))
    assert missing_tail == 0, f"{missing_tail} hub samples taken >1 s before the kill are lost"
    assert due.size >= (KILL_AFTER_S - 2.5) * fs  # the check covered seconds of data


def test_every_eeg_sample_up_to_a_second_before_the_kill_is_bit_exact(killed) -> None:
    cfg = killed["cfg"]
    scenario = load_scenario(cfg.sim, DURATION_S)
    if scenario.blinks:
        pytest.skip("blinks depend on the unrecorded conversion epoch: not exact offline")
    eeg = open_recording(killed["path"]).streams["eeg"]
    idx = eeg.index.astype(np.int64)
    assert idx[0] >= 0 and np.all(np.diff(idx) > 0), "EEG indices repeat or go backwards"
    truth = _eeg_truth(cfg, scenario, int(idx[-1]) + 1)
    np.testing.assert_array_equal(eeg.raw, truth[idx])
    assert np.array_equal(eeg.device_t, idx)
    # What is missing is visible as index gaps (counted drops), and rare.
    fs = float(cfg.eeg["fs_hz"])
    t_fit = np.polyfit(idx.astype(np.float64), eeg.host_t_ns.astype(np.float64), 1)
    due_k = int(np.floor((killed["kill_ns"] - LOSS_WINDOW_NS - t_fit[1]) / t_fit[0]))
    assert t_fit[0] == pytest.approx(1e9 / fs, rel=1e-3)
    assert idx[-1] >= due_k, f"EEG samples up to {due_k} were due, the file ends at {idx[-1]}"
    present = np.count_nonzero(idx <= due_k)
    missing = (due_k + 1) - present  # from sample 0: a missed first DRDY is one of them
    # Rare: each is a DRDY deadline the host's scheduler missed (~1 % on the CI VM, see
    # test_rig and `mmme-hil bench wakeup`); a reader that falls behind loses far more.
    assert missing <= 0.05 * (due_k + 1), f"{missing} EEG samples lost of {due_k + 1}"


def test_info_and_export_of_the_killed_file(killed, tmp_path: Path) -> None:
    import mne

    path = killed["path"]
    proc = subprocess.run([*CLI, "info", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("eeg", "hub", "camera"):
        assert name in proc.stdout
    out = tmp_path / "bids"
    proc = subprocess.run([*CLI, "export", str(path), "--out", str(out), "--no-video"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (bdf,) = out.glob("sub-*/ses-*/eeg/*_eeg.bdf")
    raw = mne.io.read_raw_bdf(bdf, preload=False, verbose="error")
    cfg = killed["cfg"]
    assert raw.ch_names[:8] == list(cfg.eeg["channels"])
    codes = {d for d in raw.annotations.description if d.startswith("marker ")}
    rec = open_recording(path)
    t_first, t_last = rec.streams["eeg"].host_t_ns[[0, -1]]
    # Markers inside the EEG's span (one may come before the first EEG sample).
    recorded = {f"marker {m.code}" for m in rec.markers if t_first <= m.t_ns <= t_last}
    assert codes and codes == recorded
