"""The fault catalogue (docs/faults.md), each fault injected into the whole running rig.

Every test runs the simulated rig in this process through ``hil.faults.run_with_faults``
(real drivers, real Runtime, tally, clock keeper, processing, watchdog logic) and checks
what the catalogue promises: a status or counter that shows the fault, recovery within
the stated time, and nothing lost that could have been kept. Figures are printed
(``pytest -s tests/test_faults.py``). Timing bounds are generous: the suite shares a
loaded 2-core machine.

Faults covered elsewhere: wrong EEG chip ID (tests/test_rig.py selftest and
tests/test_ads1299.py), broker outage (tests/test_mqtt_delivery.py), disk full at
recorder level (tests/test_recorder.py).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
from small_disk import small_disk

from edge.recording.format import open_recording
from hil.faults import (
    Fault,
    FaultRun,
    corrupt_hub,
    run_with_faults,
    sim_config,
    start_hogs,
    step_hub_clock,
    stop_hogs,
)

NOMINAL = {"eeg": 1000.0, "hub": 1000.0, "camera": 150.0}


def _report(name: str, run: FaultRun, **figures: Any) -> None:
    s = run.summary["streams"]
    print(f"\n[{name}] " + "; ".join(
        f"{n}: exp {v['expected']} rcv {v['received']} drop {v['dropped']}" for n, v in s.items()))
    for k, v in figures.items():
        print(f"[{name}] {k}: {v}")


def _every_loss_counted(run: FaultRun, name: str) -> None:
    """received + dropped == expected, and every gap the consumer saw is in a counter."""
    t = run.extra["tallies"][name]
    expected = t["last"] - t["first"] + 1
    gap = expected - t["received"]
    counted = run.summary["streams"][name]["detail"].get("dropped", 0) + \
        run.extra["queue_dropped"].get(name, 0)
    assert t["received"] + run.summary["streams"][name]["dropped"] >= expected, (name, t)
    assert gap <= counted, (name, gap, counted, run.summary["streams"][name])


def _unaffected(run: FaultRun, name: str, t0: float, t1: float) -> None:
    """The stream kept flowing at about its rate; what it lost (the camera reader may
    overrun its ring on a loaded machine) is counted."""
    rate = run.rate(name, t0, t1)
    assert rate >= 0.8 * NOMINAL[name], (name, rate)
    _every_loss_counted(run, name)


class _HubProbe:
    """Keeps every hub sample's sequence number and raw values."""

    def __init__(self) -> None:
        self.seq: list[np.ndarray] = []
        self.raw: list[np.ndarray] = []

    def on_block(self, block: Any) -> None:
        if block.stream == "hub":
            self.seq.append(np.asarray(block.index).copy())
            self.raw.append(np.asarray(block.raw).copy())

    def on_frame(self, frame: Any) -> None: ...

    def on_marker(self, marker: Any) -> None: ...


# ---------------------------------------------------------------------- (1) corruption


def test_hub_line_corruption_is_counted_and_every_clean_frame_delivered() -> None:
    probe = _HubProbe()
    box: dict[str, Any] = {}

    def start(rig: Any) -> None:
        box["log"] = corrupt_hub(rig.bench.hub, 1e-3)

    run = run_with_faults(12.0, [Fault(1.0, "corrupt", start)], sinks=[probe],
                          at_end=lambda rig: rig.bench.hub.truth_table())
    truth, log = run.extra["at_end"], box["log"]
    seq = np.concatenate(probe.seq)
    raw = np.concatenate(probe.raw)
    c = run.counters["hub"]
    _report("corruption", run, counters=c, corrupted_frames=len(log.seqs),
            bytes_hit=log.bytes_hit)
    assert run.errors == []
    assert len(log.seqs) >= 20 and c["crc_errors"] >= 1 and c["resyncs"] >= 1
    # Every frame the emulator sent intact (inside the received span) was delivered once,
    # bit exact; what was lost is exactly the damaged frames, and it is counted.
    lo, hi = int(seq[0]), int(seq[-1])
    span = (truth["seq"] >= lo) & (truth["seq"] <= hi) & truth["sent"]
    clean = truth["seq"][span & ~np.isin(truth["seq"], list(log.seqs))]
    assert np.all(np.diff(seq) > 0)
    assert np.isin(clean, seq).all(), np.setdiff1d(clean, seq)[:10]
    got = np.searchsorted(truth["seq"], seq)
    assert np.array_equal(truth["raw"][got], raw)
    lost = int(np.count_nonzero(span)) - seq.size
    assert lost <= len(log.seqs)
    assert run.summary["streams"]["hub"]["dropped"] >= lost
    _every_loss_counted(run, "hub")
    # ~45-byte frames at 1e-3 per byte: ~4 % of frames are damaged, the rest flow on.
    assert run.rate("hub", 2.0, 12.0) >= 0.85 * 0.95 * NOMINAL["hub"]
    for name in ("eeg", "camera"):
        _unaffected(run, name, 2.0, 12.0)


# ---------------------------------------------------------------------- (2) unplug


def test_hub_unplug_and_replug_shows_reconnects_and_counts_the_gap() -> None:
    unplug_s, replug_s = 3.0, 6.0
    run = run_with_faults(
        13.0,
        [Fault(unplug_s, "unplug", lambda rig: rig.bench.hub.unplug()),
         Fault(replug_s, "replug", lambda rig: rig.bench.hub.replug())],
        at_end=lambda rig: rig.bench.hub.truth_table())
    t_unplug, t_replug = run.fault_times["unplug"], run.fault_times["replug"]
    down = run.first(lambda s: s.hub_connected is False, after_s=t_unplug)
    up = run.first(lambda s: s.hub_connected is True, after_s=t_replug)
    flowing = run.first(lambda s: s.received["hub"] > next(
        x.received["hub"] for x in run.timeline if x.t_s >= t_replug), after_s=t_replug)
    truth = run.extra["at_end"]
    t = run.extra["tallies"]["hub"]
    in_span = (truth["seq"] >= t["first"]) & (truth["seq"] <= t["last"])
    unsent = int(np.count_nonzero(in_span & ~truth["sent"]))
    _report("unplug", run, counters=run.counters["hub"],
            disconnected_after_s=None if down is None else round(down - t_unplug, 2),
            connected_after_replug_s=None if up is None else round(up - t_replug, 2),
            data_after_replug_s=None if flowing is None else round(flowing - t_replug, 2),
            unsent_in_mcu=unsent, rate_after=round(run.rate("hub", t_replug + 3, 13.0)))
    assert run.errors == []
    assert down is not None and down < t_replug
    assert up is not None and up - t_replug <= 2.5
    assert flowing is not None and flowing - t_replug <= 3.0
    assert run.counters["hub"]["disconnects"] >= 1 and run.counters["hub"]["reconnects"] >= 1
    # The gap is counted in dropped: the samples the MCU took while unplugged, plus what
    # was in flight in the pulled cable: sent but still unread in the pty's kernel buffers
    # (a few ms on a quiet host, 400 ms of it seen on a loaded one), at most what those
    # buffers hold (64 KiB flip buffer + 4 KiB line discipline) in 43-byte DATA frames.
    in_flight_max = (64 + 4) * 1024 // 43
    dropped = run.summary["streams"]["hub"]["dropped"]
    assert unsent >= 0.9 * 1000 * (t_replug - t_unplug) * 0.5
    assert unsent <= dropped <= unsent + in_flight_max
    assert t["received"] + dropped == t["last"] - t["first"] + 1
    _every_loss_counted(run, "hub")
    assert run.rate("hub", t_replug + 3.0, 13.0) >= 0.85 * NOMINAL["hub"]
    for name in ("eeg", "camera"):  # the other streams never noticed
        _unaffected(run, name, t_unplug, t_replug + 2.0)


# ---------------------------------------------------------------------- (3) DRDY stuck


def test_eeg_drdy_stuck_shows_in_counters_and_stops_the_watchdog() -> None:
    cfg = sim_config(camera=False, eeg_link="spi")  # direct SPI: DRDY on the host
    stick_s = 3.0
    run = run_with_faults(10.0, [Fault(stick_s, "stick", lambda rig: rig.eeg.inject(
        "stick_drdy"))], cfg=cfg, processing=False)
    t_stick = run.fault_times["stick"]
    stalled = run.first(lambda s: s.watchdog_stalled, after_s=t_stick)
    pets_at_stall = next(s.watchdog_pets for s in run.timeline if s.t_s >= stalled)
    last = run.timeline[-1]
    _report("drdy_stuck", run, eeg_counters=run.counters["eeg"],
            watchdog_stalled_after_s=None if stalled is None else round(stalled - t_stick, 2),
            health_eeg=last.health["streams"]["eeg"], pets=(pets_at_stall, last.watchdog_pets))
    assert run.errors == []
    assert run.rate("eeg", t_stick + 1.0, 10.0) == 0.0
    assert run.counters["eeg"].get("drdy_timeouts", 0) >= 1  # the driver says: stalled
    assert stalled is not None and stalled - t_stick <= 3.0 + 2.5
    assert last.watchdog_pets <= pets_at_stall + 1  # no petting while stalled
    assert last.health["streams"]["eeg"]["flowing"] is False
    _unaffected(run, "hub", t_stick, 10.0)


# ---------------------------------------------------------------------- (3c) EEG bridge


def test_eeg_bridge_link_faults_are_counted_and_the_stream_recovers() -> None:
    """Corrupted bytes, an MCU reset and an MCU that stops answering for 0.6 s, in one
    run of the rig on the bridge (sim.toml's EEG front end)."""
    def bridge(rig: Any) -> Any:
        return rig.bench.eeg_bridge

    faults = [Fault(2.0, "corrupt", lambda rig: bridge(rig).corrupt_responses(12)),
              Fault(4.0, "reset", lambda rig: bridge(rig).reset()),
              Fault(7.0, "silent", lambda rig: bridge(rig).stop_answering()),
              Fault(7.6, "answers", lambda rig: bridge(rig).resume_answering())]
    run = run_with_faults(12.0, faults, cfg=sim_config(camera=False), processing=False)
    c = run.counters["eeg"]
    _report("eeg_bridge", run, eeg_counters=c)
    assert run.errors == []
    assert c.get("crc_errors", 0) >= 6  # corrupted answers, read again
    assert c.get("bridge_resets", 0) == 1  # reset seen, chips reconfigured, restarted
    assert c.get("timeouts", 0) >= 1  # the silence, then picked up again
    assert c.get("dropped", 0) == c.get("reset_gap", 0) + c.get("seq_gap", 0)
    _every_loss_counted(run, "eeg")
    assert run.rate("eeg", 9.0, 12.0) >= 0.9 * NOMINAL["eeg"]
    _unaffected(run, "hub", 0.0, 12.0)


# ---------------------------------------------------------------------- (4) camera


class _FrameProbe:
    def __init__(self) -> None:
        self.frames: list[tuple[int, int, str]] = []

    def on_block(self, block: Any) -> None: ...

    def on_frame(self, frame: Any) -> None:
        digest = hashlib.blake2b(np.ascontiguousarray(frame.luma).data, digest_size=8)
        self.frames.append((frame.seq, frame.t_ns, digest.hexdigest()))

    def on_marker(self, marker: Any) -> None: ...


def test_camera_drops_are_all_counted_and_a_freeze_spots_nothing() -> None:
    freeze = (5.0, 10.0)  # scenario seconds
    probe = _FrameProbe()
    box: dict[str, Any] = {}

    def setup(rig: Any) -> None:
        cam = rig.bench.camera
        cam.drop_frames(0.03)
        cam.freeze(*freeze)
        box["t0_ns"], box["cam"] = rig.bench.t0_ns, cam
        box["events"] = [(e.onset_s, e.offset_s) for e in rig.bench.scenario.expressions]

    run = run_with_faults(14.0, cfg=sim_config(eeg=False), sinks=[probe], on_open=setup)
    cam, t0_ns = box["cam"], box["t0_ns"]
    seqs = np.array([f[0] for f in probe.frames])
    injected = sum(cam.is_dropped(i) for i in range(int(seqs[0]), int(seqs[-1]) + 1))
    c = run.counters["camera"]
    lo_ns, hi_ns = t0_ns + int(freeze[0] * 1e9), t0_ns + int(freeze[1] * 1e9)
    frozen = [f for f in probe.frames if lo_ns <= f[1] < hi_ns]
    mes = [m for k, m in run.outlet_messages if k == "events/me"]
    in_freeze = [m for m in mes if lo_ns + 0.2e9 <= m["interval"]["apex_ns"] < hi_ns]
    truth_events = [e for e in box["events"] if freeze[0] < e[0] < freeze[1]]
    _report("camera", run, counters=c, injected_sensor_drops=injected,
            frozen_frames=len(frozen), distinct_images_in_freeze=len({f[2] for f in frozen}),
            scenario_events_in_freeze=len(truth_events), me_events=len(mes),
            me_apex_in_freeze=len(in_freeze))
    assert run.errors == []
    # Every injected sensor drop is counted (as is every overrun), once.
    assert c["sensor_drop"] == injected
    assert run.summary["streams"]["camera"]["dropped"] >= injected
    _every_loss_counted(run, "camera")
    # A freeze: the same image again and again, timestamps still advancing.
    assert len(frozen) >= 0.8 * 150 * (freeze[1] - freeze[0]) * 0.97
    assert len({f[2] for f in frozen}) == 1
    assert np.all(np.diff([f[1] for f in frozen]) > 0)
    # ... and the spotter sees no expression in a still image.
    assert in_freeze == [], in_freeze
    _unaffected(run, "hub", 2.0, 14.0)


# ---------------------------------------------------------------------- (6) disk full


def test_disk_full_shows_in_health_and_acquisition_continues(tmp_path: Path) -> None:
    with small_disk(tmp_path, 1) as mnt:
        filler = mnt / "filler"
        filler.write_bytes(b"\0" * (1024 * 1024 - 96 * 1024))
        free_s = 8.0
        run = run_with_faults(14.0, [Fault(free_s, "free", lambda rig: filler.unlink())],
                              cfg=sim_config(camera=False, record=True, min_free_mb=0),
                              record_dir=mnt,
                              processing=False)
    status = [(s.t_s, s.health["recorder"]) for s in run.timeline]
    err = run.first(lambda s: s.health["recorder"].startswith("error"))
    ok_again = run.first(lambda s: s.health["recorder"] == "ok", after_s=run.fault_times["free"])
    _report("disk_full", run, first_error_s=err, first_error=next(
        (v for _, v in status if v.startswith("error")), None),
        ok_again_after_free_s=None if ok_again is None else round(
            ok_again - run.fault_times["free"], 2), recorder=run.recorder)
    assert err is not None and err < free_s
    assert run.errors == []
    for name in ("eeg", "hub"):  # acquisition never noticed
        _unaffected(run, name, err, free_s)
    assert ok_again is not None and ok_again - run.fault_times["free"] <= 5.0
    assert run.recorder["write_errors"] >= 1


def test_low_space_stops_recording_cleanly_and_acquisition_continues(tmp_path: Path) -> None:
    with small_disk(tmp_path, 4) as mnt:
        # 1 MiB reserve, about 384 KiB above it: a few seconds of EEG and hub.
        (mnt / "filler").write_bytes(b"\0" * (4 * 1024 * 1024 - 1024 * 1024 - 384 * 1024))
        run = run_with_faults(10.0, [], cfg=sim_config(camera=False, record=True,
                                                       min_free_mb=1),
                              record_dir=mnt, processing=False)
        free_b = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
        rec = open_recording(next(mnt.glob("*.mcap")))
    stop = run.first(lambda s: s.health["recorder"].startswith("stopped: low disk space"))
    _report("low_space", run, stopped_s=stop, free_kib=free_b // 1024, recorder=run.recorder)
    assert stop is not None and run.errors == []
    assert run.recorder["write_errors"] == 0 and run.recorder["dropped_low_space"] > 0
    assert free_b >= 512 * 1024  # stopped before the disk was full
    assert rec.complete and len(rec.streams["eeg"]) > 0  # finished cleanly: footer written
    for name in ("eeg", "hub"):  # acquisition never noticed
        _unaffected(run, name, stop, 10.0)


# ---------------------------------------------------------------------- (7) clock step


class _HubClockProbe:
    """After every hub block: the keeper's map error at that block's last sample, against
    the bench's truth (the hub crystal's host time of that device time)."""

    def __init__(self) -> None:
        # (host ns now, segment, error ms, pulse quality)
        self.rows: list[tuple[int, int, float, bool]] = []

    def bind(self, rig: Any, keeper: Any) -> None:
        self.emu, self.keeper = rig.bench.hub, keeper

    def on_block(self, block: Any) -> None:
        m = self.keeper.models.get("hub")
        if block.stream != "hub" or m is None or m.quality == "none":
            return
        dev = float(block.device_t[-1])
        true = float(self.emu.crystal.host_ns(dev * 1e-6))
        err = (float(self.keeper.to_host_ns("hub", dev)) - true) / 1e6
        self.rows.append((int(block.host_t_ns[-1]), m.segment, err, m.quality == "pulse"))

    def on_frame(self, frame: Any) -> None: ...

    def on_marker(self, marker: Any) -> None: ...


def test_hub_clock_step_opens_a_segment_and_the_map_recovers_within_a_few_pulses() -> None:
    probe = _HubClockProbe()
    box: dict[str, int] = {}

    def step(rig: Any) -> None:
        box["at_ns"] = step_hub_clock(rig.bench.hub, 0.25)

    run = run_with_faults(22.0, [Fault(11.0, "step", step)], cfg=sim_config(camera=False),
                          sinks=[probe], processing=False)
    at = box["at_ns"]
    rows = np.array(probe.rows, dtype=np.float64)
    before = rows[(rows[:, 0] < at) & (rows[:, 0] > at - 4e9)]
    after = rows[rows[:, 0] >= at]
    bad = after[(np.abs(after[:, 2]) >= 1.0) | (after[:, 3] == 0)]
    recovered_s = (bad[-1, 0] - at) / 1e9 if bad.size else 0.0
    tail = after[after[:, 0] > bad[-1, 0]] if bad.size else after
    hub = run.clock["hub"]
    _report("clock_step", run, hub_clock=hub, eeg_segments=run.clock["eeg"]["segments"],
            err_before_ms=round(float(np.abs(before[:, 2]).max()), 3),
            worst_after_ms=round(float(np.abs(after[:, 2]).max()), 1),
            coarse_rows_after=int(np.count_nonzero(after[:, 3] == 0)),
            back_under_1ms_after_s=round(recovered_s, 2),
            err_after_recovery_ms=round(float(np.abs(tail[:, 2]).max()), 3))
    assert run.errors == []
    assert before[:, 3].all() and np.abs(before[:, 2]).max() < 1.0
    assert hub["segments"] >= 1 and hub["quality"] == "pulse"
    assert recovered_s <= 6.0  # a few pulses (1 per second)
    assert tail.shape[0] > 100 and np.abs(tail[:, 2]).max() < 1.0
    assert run.clock["eeg"]["segments"] == 0  # the EEG's clock is untouched
    _every_loss_counted(run, "hub")


# ---------------------------------------------------------------------- (8) CPU starvation


def test_cpu_starvation_loses_nothing_uncounted_and_rates_recover() -> None:
    box: dict[str, Any] = {}
    hog_from, hog_to, end = 4.0, 14.0, 24.0

    def hogs_on(rig: Any) -> None:
        box["hogs"] = start_hogs(2, max_s=hog_to - hog_from + 5)

    def hogs_off(rig: Any) -> None:
        stop_hogs(box["hogs"])

    try:
        run = run_with_faults(end, [Fault(hog_from, "hogs_on", hogs_on),
                                    Fault(hog_to, "hogs_off", hogs_off)])
    finally:
        if "hogs" in box:
            stop_hogs(box["hogs"])
    t_on, t_off = run.fault_times["hogs_on"], run.fault_times["hogs_off"]
    during = {n: round(run.rate(n, t_on, t_off), 1) for n in NOMINAL}
    after = {n: round(run.rate(n, t_off + 3.0, end), 1) for n in NOMINAL}
    _report("cpu_starvation", run, rate_during=during, rate_after=after,
            counters=run.counters, queue_dropped=run.extra["queue_dropped"],
            spotter=run.processing)
    assert run.errors == []
    for name in NOMINAL:
        _every_loss_counted(run, name)
        assert after[name] >= 0.85 * NOMINAL[name], (name, after)
        assert run.summary["streams"][name]["received"] > 0
