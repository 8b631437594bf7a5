"""Replay: recordings played through the rig's own seams, drivers and pipeline.

What must hold: a file's channels reach the hub protocol mapped, resampled and encoded
without clipping, with the source's saturation flagged; the hub and EEG playback survive
the protocol and the chip round trip bit-exact (EEG within 1 LSB); a real recording
replayed through ``mmme-edge run`` publishes the vitals the same streaming features give
offline on the same samples; a rig recording replayed reproduces its streams.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge import config
from edge.features import FeaturePipeline
from hil.sim.ads1299 import Ads1299Emulator
from hil.sim.crystal import Crystal
from hil.sim.hub import HubEmulator
from hil.sim.playback import ReplayError, parse_channel_map, plan_replay
from hil.sim.playback.devices import EegPlayback, HubPlayback, hub_from_channels
from hil.sim.playback.sources import read_channels, resample
from hil.sim.scenario import Scenario
from hil.sim.wire import Wire
from sensors import hub_protocol as hp
from sensors.ads1299 import Ads1299, Ads1299Settings
from sensors.blocks import STATUS_HUB, SampleBlock, StreamInfo
from sensors.hub import Hub, HubSettings

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real" / "physionet"
A103L = REAL / "a103l"
CLI = [sys.executable, "-m", "edge.cli"]
SETTLED_S = 8.0  # sync pulses fitted (~3 s) and a whole 5-s heart-rate window after them
needs_real = pytest.mark.skipif(not (REAL / "a103l.hea").exists(),
                                reason="../shared/data/real is not here")


def _cfg(tmp_path: Path, **replay: object) -> config.RigConfig:
    return config.load(config.example_path("sim")).with_replay(**replay)


def _cli(args: list[str], timeout: float = 90) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=REPO)


# ------------------------------------------------------------------ sources


@needs_real
def test_wfdb_channels_are_mapped_resampled_and_encoded_without_clipping():
    chans = read_channels(A103L)
    pb = hub_from_channels(chans, parse_channel_map("ppg=PLETH,ecg=II"), 1000.0, 10.0, 20.0,
                           "a103l")
    assert pb.channels == ("ECG", "PPG")  # the rig's order, whatever the map's
    assert pb.units == ("mV", "NU")
    assert pb.raw.shape == (19997, 2)  # 20 s at 250 Hz -> 1000 Hz
    src = {c.name: c for c in chans}
    ecg = src["II"].values[2500:7500]
    assert pb.scale[0] <= 0.1 / 7247  # finer than the source's step: no added quantisation
    decoded = pb.raw[:, 0] * pb.scale[0]
    np.testing.assert_allclose(decoded, resample(ecg, 250.0, 1000.0)[: decoded.size],
                               rtol=0, atol=0.5 * pb.scale[0] + 1e-12)  # never clipped
    # every 4th output sample is a source sample: the anti-aliased resampling keeps them
    # to within 0.1 % of the signal's range
    assert np.max(np.abs(decoded[::4] - ecg[: decoded[::4].size])) < 1e-3 * np.ptp(ecg)
    assert not (pb.status & hp.STATUS_SATURATED).any()
    assert pb.report["channels"]["PPG"]["source"] == "PLETH"


@needs_real
def test_source_saturation_and_missing_samples_are_flagged():
    chans = read_channels(REAL / "mixedsignals")
    resp = next(c for c in chans if c.name == "Resp")
    assert resp.saturated.sum() > 1000  # clips at both rails for seconds at a time
    pb = hub_from_channels(chans, {"RSP": "Resp", "ECG": "II"}, 1000.0, 0.0, 0.0, "mixed")
    sat = (pb.status & hp.STATUS_SATURATED) != 0
    assert pb.report["channels"]["RSP"]["saturated_samples"] == int(sat.sum()) > 10_000
    # ECG has WFDB "no sample" values: held, and flagged as lead-off, never sent as 0 mV
    gaps = (pb.status & hp.STATUS_ECG_LEAD_OFF) != 0
    assert pb.report["channels"]["ECG"]["missing_samples"] == int(gaps.sum()) > 0


@needs_real
def test_a_wfdb_record_missing_a_data_file_gives_the_signals_it_has(tmp_path):
    """PTB's s0010_re keeps its three Frank leads in a .xyz file the corpus does not have:
    the twelve leads in the .dat play; a record with no data file at all is one line."""
    chans = read_channels(REAL / "s0010_re.hea")
    assert [c.name for c in chans][:3] == ["i", "ii", "iii"] and len(chans) == 12
    assert all(c.fs_hz == 1000.0 and c.values.size == 38400 for c in chans)
    (tmp_path / "s0010_re.hea").write_bytes((REAL / "s0010_re.hea").read_bytes())
    with pytest.raises(ReplayError, match="none of the record's data files is there"):
        read_channels(tmp_path / "s0010_re.hea")


def test_a_signal_beyond_the_default_scale_gets_a_coarser_one_not_clipped(tmp_path):
    t = np.arange(0, 2, 0.004)
    big = 5e6 * np.sin(2 * np.pi * t)  # au far beyond 1e-4 x 2^31
    path = tmp_path / "big.csv"
    path.write_text("time_s,RSP (au)\n" + "\n".join(f"{a},{b}" for a, b in zip(t, big,
                                                                                 strict=True)))
    pb = hub_from_channels(read_channels(path), {}, 250.0, 0.0, 0.0, str(path))
    assert pb.scale[0] > 1e-4
    np.testing.assert_allclose(pb.raw[:, 0] * pb.scale[0], big[: pb.raw.shape[0]],
                               atol=pb.scale[0])


def test_bad_sources_get_one_line_errors(tmp_path):
    no_time = tmp_path / "x.csv"
    no_time.write_text("ECG,PPG\n1,2\n3,4\n5,6\n")
    with pytest.raises(ReplayError, match="no time column"):
        read_channels(no_time)
    ok = tmp_path / "y.csv"
    ok.write_text("time_s,ECG (NU),PPG\n0,1,2\n0.01,3,4\n0.02,5,6\n")
    with pytest.raises(ReplayError, match="no channel 'PLETH' for PPG"):
        hub_from_channels(read_channels(ok), {"PPG": "PLETH"}, 1000.0, 0, 0, "y")
    with pytest.raises(ReplayError, match="unit 'NU' cannot be converted to mV"):
        hub_from_channels(read_channels(ok), {}, 1000.0, 0, 0, "y")
    with pytest.raises(ReplayError, match="RIG=SOURCE"):
        parse_channel_map("ppg")
    with pytest.raises(ReplayError, match="no such file"):
        plan_replay(_cfg(tmp_path, hub=str(tmp_path / "missing.csv")))
    cfg = _cfg(tmp_path, hub=str(ok))
    with pytest.raises(ReplayError, match=r"the config's \[hub\] is disabled"):
        plan_replay(dataclasses.replace(cfg, hub={**cfg.hub, "enabled": False}))


# ------------------------------------------------------------------ through the seams


def test_hub_playback_is_bit_exact_through_protocol_and_driver_and_keeps_recorded_gaps():
    rng = np.random.default_rng(1)
    n = 3000
    present = np.ones(n, bool)
    present[1000:1040] = False  # the recording lost 40 samples here
    status = np.zeros(n, np.uint16)
    status[500:510] = hp.STATUS_SATURATED
    pb = HubPlayback(("ECG", "PPG"), ("mV", "au"), (1e-4, 1e-4), (0.0, 0.0), 1000.0,
                     rng.integers(-2**31, 2**31 - 1, (n, 2), dtype=np.int64).astype(np.int32),
                     status, (rng.integers(0, 128, n) << 1).astype(np.uint8), present, row0=300)
    wire = Wire()
    t0 = time.monotonic_ns() + 200_000_000
    crystal = Crystal(ppm=-60, origin_host_ns=t0, origin_device_s=7.0)
    emu = HubEmulator(Scenario(10.0), crystal, wire, t0_ns=t0, signal=pb)
    hub = Hub(HubSettings(port=emu.port))
    try:
        hub.open()
        assert hub.info.channels == ("ECG", "PPG")
        hub.start()
        blocks: list[SampleBlock] = []
        end = time.monotonic() + 6.0
        while time.monotonic() < end and sum(map(len, blocks)) < int(present.sum()):
            blocks += hub.poll(0.05)
    finally:
        hub.close()
        emu.close()
    raw = np.concatenate([b.raw for b in blocks])
    seq = np.concatenate([b.index for b in blocks])
    rows = seq - seq[0] + (emu.start_row - pb.row0)
    assert emu.start_row == pb.row0  # the MCU waited for the recording's first row
    np.testing.assert_array_equal(raw, pb.raw[rows])
    assert present[rows].all() and rows.size == present.sum()  # every gap stays a gap
    np.testing.assert_array_equal(np.concatenate([b.trigger for b in blocks]) & 0xFE,
                                  pb.din[rows])
    got_status = np.concatenate([b.status for b in blocks]).astype(np.uint16)
    np.testing.assert_array_equal(got_status & hp.STATUS_SATURATED,
                                  pb.status[rows] & hp.STATUS_SATURATED)
    assert hub.counters.dropped == 40


def test_eeg_playback_feeds_the_emulator_and_comes_back_within_one_lsb():
    settings = Ads1299Settings(fs_hz=1000)
    uv_per_count = settings.uv_per_count()[0]
    rng = np.random.default_rng(2)
    counts = rng.integers(-40_000, 40_000, (4000, 8))
    names = ("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2")
    pb = EegPlayback(names[::-1], 1000.0, counts[:, ::-1] * uv_per_count, start_s=0.0)
    t0 = time.monotonic_ns()
    emu = Ads1299Emulator(Crystal(ppm=40.0, origin_host_ns=t0), None, None, t0_ns=t0,
                          channels=names, source=pb, input_noise_uv=0.0)
    drv = Ads1299([emu], emu.drdy_line(), settings)
    blocks: list[SampleBlock] = []
    try:
        drv.open()
        drv.start()
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            blocks += drv.poll(0.05)
    finally:
        drv.close()
    raw = np.concatenate([b.raw for b in blocks]).astype(np.int64)
    t = np.concatenate([b.index for b in blocks])
    # the emulator's first sample sits at its START instant after t0: find it by content
    first = int(np.flatnonzero((counts == raw[0]).all(axis=1))[0])
    want = counts[first + (t - t[0])]
    assert raw.shape[0] > 500
    assert np.max(np.abs(raw - want)) <= 1  # channels matched by name, not position


# ------------------------------------------------------------------ the whole rig


def _offline_hr(pb: HubPlayback, block: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The rig's streaming features on the same samples, in the rig's block sizes:
    (data time s, the vitals' hr_bpm) after every block."""
    info = StreamInfo("hub", pb.fs_hz, pb.channels, pb.units, pb.scale, pb.offset, "us",
                      STATUS_HUB)  # as the hub driver describes it: its fault bits count
    pipe = FeaturePipeline(None, info)
    values = pb.raw * np.asarray(pb.scale)
    ts, hrs = [], []
    for i in range(0, pb.raw.shape[0], block):
        k = np.arange(i, min(i + block, pb.raw.shape[0]))
        t_ns = ((k + pb.row0) * 1e9 / pb.fs_hz).astype(np.int64)
        pipe.update(SampleBlock("hub", k, k * 1000, t_ns, pb.raw[k], values[k],
                                np.zeros(k.size, np.uint8), pb.status[k].astype(np.uint32)))
        hr = pipe.summary()["hr_bpm"]
        ts.append((k[-1] + 1 + pb.row0) / pb.fs_hz)
        hrs.append(hr.value if hr.valid else np.nan)
    return np.asarray(ts), np.asarray(hrs)


def _reference_hr(path: Path, channel: str, start_s: float, span_s: float) -> float:
    """NeuroKit2's median heart rate on the source samples (information, not the check)."""
    import neurokit2 as nk

    c = next(c for c in read_channels(path) if c.name == channel)
    x = c.values[round(start_s * c.fs_hz): round((start_s + span_s) * c.fs_hz)]
    if channel == "PLETH":
        peaks = nk.ppg_peaks(nk.ppg_clean(x, sampling_rate=c.fs_hz), sampling_rate=c.fs_hz)
        beats = peaks[1]["PPG_Peaks"]
    else:
        peaks = nk.ecg_peaks(nk.ecg_clean(x, sampling_rate=c.fs_hz), sampling_rate=c.fs_hz)
        beats = peaks[1]["ECG_R_Peaks"]
    return float(60.0 * c.fs_hz / np.median(np.diff(beats)))


@needs_real
def test_replay_of_a103l_publishes_the_vitals_the_features_give_offline(broker, tmp_path):
    from hil.subscriber import Collector

    start_s, span_s = 60.0, 13.0
    cfg_path = tmp_path / "rig.toml"
    sim = config.example_path("sim").read_text()
    cfg_path.write_text(sim.replace("[mqtt]\nenabled = false", "[mqtt]\nenabled = true")
                        .replace("port = 1883", f"port = {broker.port}")
                        .replace('host = "localhost"', 'host = "127.0.0.1"'))
    vitals = Collector(broker.port, "mmme/v1/sim-01/vitals", client_id="replay-vitals").start()
    try:
        res = _cli(["run", "--config", str(cfg_path), "--replay", f"hub={A103L}",
                    "--channel-map", "ppg=PLETH,ecg=II", "--replay-start", str(start_s),
                    "--replay-span", str(span_s), "--record-dir", str(tmp_path / "rec"),
                    "--ground-truth", str(tmp_path / "gt.json"), "--json", "--quiet"])
        time.sleep(0.5)
    finally:
        vitals.stop()
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["replay"]["hub"]["channels"]["PPG"]["source"] == "PLETH"
    assert summary["replay"]["not_played_at_start"]["hub_s"] == 0.0
    assert summary["streams"]["hub"]["dropped"] == 0
    t0_ns = json.loads((tmp_path / "gt.json").read_text())["t0_ns"]
    pub = [(m.payload["t_ns"], m.payload["hr_bpm"]) for m in vitals.messages
           if m.payload and m.payload.get("hr_bpm") is not None]
    assert len(pub) >= 5, f"only {len(pub)} vitals with a heart rate"
    plan = plan_replay(_cfg(tmp_path, hub=str(A103L), channel_map={"PPG": "PLETH", "ECG": "II"},
                            start_s=start_s, span_s=span_s))
    off_t, off_hr = _offline_hr(plan.hub)
    worst = {"early": 0.0, "settled": 0.0}
    settled = 0
    for t_ns, hr in pub:
        # data time of the newest sample at publication, about; after the replay's end the
        # last value stands until it goes stale
        t = min((t_ns - t0_ns) / 1e9, off_t[-1])
        near = off_hr[(off_t >= t - 3.0) & (off_t <= t + 0.5)]  # processing lag, under load
        near = near[np.isfinite(near)]
        assert near.size, (t, hr)
        # Until the clock model has sync-pulse pairs (a few s) the hub's samples carry the
        # arrival time of their read, so early beat times, and the 5-s mean heart rate over
        # them, differ from the offline ones; once every beat in the window is on the
        # fitted clock, each published value is one the features gave offline around then
        # (to a few hundredths of a bpm: the rig's blocks end elsewhere than offline).
        phase = "settled" if t >= SETTLED_S else "early"
        settled += phase == "settled"
        worst[phase] = max(worst[phase], float(np.min(np.abs(near - hr))))
    assert settled >= 3, f"only {settled} vitals after {SETTLED_S} s"
    assert worst["settled"] < 0.1, worst
    nk_ecg = _reference_hr(A103L, "II", start_s, span_s)
    nk_ppg = _reference_hr(A103L, "PLETH", start_s, span_s)
    median = float(np.median([hr for _, hr in pub]))
    print(f"\nREPLAY a103l {start_s:g}-{start_s + span_s:g} s: published hr median "
          f"{median:.1f} bpm ({len(pub)} vitals; from {SETTLED_S:g} s each within "
          f"{worst['settled']:.3f} bpm of the offline features, before {worst['early']:.3f}); "
          f"NeuroKit2 ECG {nk_ecg:.1f}, PPG {nk_ppg:.1f}")


def _dense(stream: object) -> tuple[np.ndarray, np.ndarray]:
    """(counts on the sample counter, int64; which samples arrived)."""
    idx = stream.index - stream.index[0]
    out = np.zeros((int(idx[-1]) + 1, stream.raw.shape[1]), np.int64)
    out[idx] = stream.raw
    have = np.zeros(out.shape[0], bool)
    have[idx] = True
    return out, have


def test_replay_of_a_sim_recording_reproduces_its_streams(tmp_path):
    first = _cli(["run", "--sim", "--duration", "3", "--record-dir", str(tmp_path / "a"),
                  "--json", "--quiet"])
    assert first.returncode == 0, first.stderr[-2000:]
    src = json.loads(first.stdout.strip().splitlines()[-1])["recording"]
    second = _cli(["run", "--sim", "--replay", src,
                   "--record-dir", str(tmp_path / "b"), "--json", "--quiet"])
    assert second.returncode == 0, second.stderr[-2000:]
    out = json.loads(second.stdout.strip().splitlines()[-1])
    assert out["replay"]["not_replayed"] == []
    assert_reproduces(src, out["recording"], out)


def test_replay_of_a_face_store_recording_plays_the_camera_at_full_rate(tmp_path):
    """A field recording (640x480 at 200 fps, `face` store) replays every frame, not just
    its 2-fps context frames: the replayed rig receives the frames the source recorded."""
    vga = str(config.example_path("sim-vga"))
    first = _cli(["run", "--config", vga, "--sim", "--duration", "3", "--record-dir",
                  str(tmp_path / "a"), "--json", "--quiet"])
    assert first.returncode == 0, first.stderr[-2000:]
    src = json.loads(first.stdout.strip().splitlines()[-1])["recording"]
    from edge.recording.format import open_recording

    recorded = open_recording(src, frames=False).frame_t_ns.size
    second = _cli(["run", "--config", vga, "--sim", "--replay", src, "--record-dir",
                   str(tmp_path / "b"), "--json", "--quiet"])
    assert second.returncode == 0, second.stderr[-2000:]
    cam = json.loads(second.stdout.strip().splitlines()[-1])["streams"]["camera"]
    # Under load frames may be lost, each counted; 2-fps context frames alone would be 1 %.
    print(f"\nface-store replay: camera {cam}, recorded {recorded}")
    assert cam["received"] + cam["dropped"] >= 0.95 * recorded > 300, (cam, recorded)
    assert cam["received"] >= 0.8 * recorded, (cam, recorded)


def _aligned(a: object, b: object, window: int = 50) -> tuple[np.ndarray, np.ndarray,
                                                                  np.ndarray, np.ndarray]:
    """Two runs of one stream on their sample counters, lined up by content: (source rows,
    replay rows, source counts, replay counts) for every replayed row inside the source.
    Either run may have lost samples (counted, under load); a row either lost is left out."""
    xa, pa = _dense(a)
    xb, pb = _dense(b)
    live = pb & (np.abs(xb).max(axis=1) > 0)  # the recording plays from its first sample on
    probe = next(i for i in range(int(np.argmax(live)) + 100, live.size - window)
                 if live[i: i + window].all())  # a stretch the replay did not lose
    d = int(np.argmin([np.abs(xa[i: i + window] - xb[probe: probe + window]).max()
                       for i in range(xa.shape[0] - window)])) - probe  # source - replay row
    j = np.arange(max(-d, 0), min(xa.shape[0] - d, xb.shape[0]))
    j = j[pa[j + d] & pb[j]]
    return j + d, j, xa, xb


def assert_reproduces(src: str, replayed: str, summary: dict) -> None:
    """The replay's streams are the source's: hub and frames bit-exact, EEG within 1 LSB.
    Under load a run may lose samples or frames: each loss must be counted, never a
    sample or frame that differs."""
    from edge.recording.format import iter_frames, open_recording

    a, b = open_recording(src, frames=False), open_recording(replayed, frames=False)
    ia, ib, xa, xb = _aligned(a.streams["hub"], b.streams["hub"])
    assert ia.size > 0.8 * len(a.streams["hub"]) - summary["streams"]["hub"]["dropped"]
    np.testing.assert_array_equal(xa[ia], xb[ib])  # bit-exact after the protocol round trip
    assert b.streams["hub"].info.channels == a.streams["hub"].info.channels
    ia, ib, xa, xb = _aligned(a.streams["eeg"], b.streams["eeg"])
    assert ia.size > 1000
    assert np.max(np.abs(xa[ia] - xb[ib])) <= 1  # within 1 LSB after the chip's conversion
    fa = {f.seq: f.luma for f in iter_frames(src)}
    fb = list(iter_frames(replayed))
    cam = summary["streams"]["camera"]["detail"]
    lost = (cam.get("overrun", 0) + summary["replay"]["not_played_at_start"]["camera_frames"]
            + summary["recorder"]["dropped_frames"])
    assert len(fb) + lost == len(fa)  # every source frame replayed or counted lost
    for f in fb:
        np.testing.assert_array_equal(f.luma, fa[f.seq])  # frames bit-exact, same counter


def test_a_replay_that_does_not_fit_is_one_line_and_exit_status_2(tmp_path):
    missing = _cli(["run", "--replay", f"hub={tmp_path / 'none.csv'}", "--duration", "1"])
    assert missing.returncode == 2
    assert missing.stderr.strip().endswith("none.csv: no such file")
    assert len(missing.stderr.strip().splitlines()) == 1
    bad_map = _cli(["run", "--replay", f"hub={A103L}", "--channel-map", "ppg"])
    assert bad_map.returncode == 2 and "RIG=SOURCE" in bad_map.stderr


def test_a_recorded_hub_stream_keeps_its_counts_and_gaps_and_can_be_renamed():
    from edge.recording.format import StreamData
    from hil.sim.playback.devices import hub_from_stream

    n = 2000
    index = np.delete(np.arange(n), np.arange(700, 750))  # the recording lost 50 samples
    raw = np.random.default_rng(3).integers(-10**6, 10**6, (index.size, 3)).astype(np.int32)
    info = StreamInfo("hub", 1000.0, ("PPG", "SKT A", "STP"), ("au", "degC", "code"),
                      (1e-4, 1e-4, 1.0), (0.0, 0.0, 0.0), "us")
    stream = StreamData(info, index, index * 1000, index * 10**6, raw,
                        np.full(index.size, 0x05, np.uint8), np.zeros(index.size, np.uint32))
    pb = hub_from_stream(stream, 1000.0, 0, "rec", {"skt": "skt a"})
    assert pb.channels == ("PPG", "SKT", "STP")
    np.testing.assert_array_equal(pb.raw[index], raw)  # counts as recorded
    assert (~pb.present).sum() == 50 and not pb.present[700:750].any()
    assert (pb.din[index] == 0x04).all()  # DIN bits kept; bit 0 (sync) is the live line's
    slow = hub_from_stream(stream, 500.0, 0, "rec")  # another rate: resampled, not dropped
    assert slow.raw.shape[0] == 1000 and slow.fs_hz == 500.0


def test_a_recordings_markers_and_coded_intervals_land_on_the_replay_time_line(tmp_path):
    from edge.recording.recorder import Recorder
    from sensors.blocks import Marker

    info = StreamInfo("hub", 1000.0, ("ECG",), ("mV",), (1e-4,), (0.0,), "us")
    rec = Recorder(tmp_path / "r.mcap", [info])
    t0 = 10**12  # the recording's first sample instant (its host clock)
    k = np.arange(3000)
    rec.write_block(SampleBlock("hub", k, k * 1000, t0 + k * 10**6, (k % 97)[:, None]
                                .astype(np.int32), (k % 97)[:, None] * 1e-4,
                                np.zeros(k.size, np.uint8), np.zeros(k.size, np.uint32)))
    rec.write_marker(Marker(101, t0 + 1_001_000_000))  # strobe 1 ms after the code
    rec.write_event("ground_truth", {"onset_ns": t0 + 1_500_000_000, "apex_ns": t0 + 1_600_000_000,
                                     "offset_ns": t0 + 1_800_000_000, "emotion": "happy",
                                     "composite": "positive", "kind": "micro"}, t0 + 1_500_000_000)
    rec.close()
    plan = plan_replay(_cfg(tmp_path, recording=str(tmp_path / "r.mcap")))
    assert [(m.t_s, m.code) for m in plan.markers] == [(1.0, 101)]
    (g,) = plan.truth
    assert (g["onset_s"], g["apex_s"], g["offset_s"]) == (1.5, 1.6, 1.8)
    assert g["kind"] == "micro" and g["composite"] == "positive"  # what hil.e2e scores
    assert plan.hub.rows() == (0, 3000) and plan.span_s == 3.0


def test_edf_channels_convert_units_and_flag_the_digital_rails(tmp_path):
    import edfio

    t = np.arange(0, 4, 1 / 256)
    ecg_uv = 1500.0 * np.sin(2 * np.pi * 1.2 * t)
    ecg_uv[300:400] = 5000.0  # at the physical maximum: the ADC's rail
    edf = edfio.Edf([edfio.EdfSignal(ecg_uv, 256, label="ECG", physical_dimension="uV",
                                     physical_range=(-5000, 5000))])
    edf.write(tmp_path / "x.edf")
    pb = hub_from_channels(read_channels(tmp_path / "x.edf"), {}, 1024.0, 0, 0, "x.edf")
    assert pb.units == ("mV",)
    np.testing.assert_allclose(pb.raw[4 * 50, 0] * pb.scale[0], ecg_uv[50] / 1000, atol=1e-3)
    sat = (pb.status & hp.STATUS_SATURATED) != 0
    assert sat[4 * 300: 4 * 399].all() and sat.sum() == pytest.approx(400, abs=8)


@pytest.mark.skipif(not (REAL.parent / "eeg" / "test_bdf_stim_channel.bdf").exists(),
                    reason="../shared/data/real is not here")
def test_a_bdf_plays_as_eeg_on_the_channels_the_rig_has(tmp_path):
    import edfio

    bdf = REAL.parent / "eeg" / "test_bdf_stim_channel.bdf"
    plan = plan_replay(_cfg(tmp_path, eeg=str(bdf)))
    assert plan.eeg.names == ("C3", "C4")  # of Fp1 ... O2 in the rig's config
    assert "Fp1" in plan.eeg.report["missing_play_zero"]
    c3 = next(s for s in edfio.read_edf(bdf).signals if s.label == "C3")
    assert plan.eeg.fs_hz == 1000.0  # resampled to the chips' rate before it travels
    np.testing.assert_allclose(plan.eeg.uv[::2, 0], c3.data[: plan.eeg.uv[::2].shape[0]],
                               atol=0.01 * np.ptp(c3.data))


def test_camera_playback_hands_out_recorded_frames_at_their_times(tmp_path):
    from edge.recording.recorder import Recorder
    from hil.sim.playback.devices import CameraPlayback, PlaybackCamera
    from sensors.blocks import Frame

    rng = np.random.default_rng(4)
    rec = Recorder(tmp_path / "c.mcap", [], camera={"width": 64, "height": 48, "fps": 100.0})
    t_rec = 5 * 10**12 + np.arange(60) * 10_000_000  # 100 fps on the recording's clock
    lumas = rng.integers(0, 256, (60, 48, 64), dtype=np.uint8)
    seqs = np.delete(np.arange(62), [10, 11])  # the sensor lost two frames
    for s, t, img in zip(seqs, t_rec, lumas, strict=True):
        rec.write_frame(Frame(seq=int(s), t_ns=int(t), luma=img))
    rec.close()
    spec = CameraPlayback(str(tmp_path / "c.mcap"), int(t_rec[0]), int(t_rec[0]),
                          int(t_rec[-1]) + 1, 60)
    t0 = time.monotonic_ns() + 200_000_000
    cam = PlaybackCamera(spec, width=64, height=48, fps=100.0, t0_ns=t0, buffer_frames=4)
    got = []
    try:
        cam.start()
        end = time.monotonic() + 3.0
        while time.monotonic() < end and len(got) + cam.counters.dropped < 60:
            f = cam.read(0.05)
            if f is not None:
                got.append(f)
            if len(got) == 20:
                time.sleep(0.2)  # a slow reader: the 4-frame ring overflows, counted
    finally:
        cam.close()
    assert cam.counters.dropped >= 10 and len(got) + cam.counters.dropped == 60
    i = np.searchsorted(seqs, [f.seq for f in got])
    for f, k in zip(got, i, strict=True):
        np.testing.assert_array_equal(f.luma, lumas[k])  # bit-exact, recorded counter
        assert f.t_ns == t0 + (t_rec[k] - t_rec[0])  # at its recorded time on this run
    small = PlaybackCamera(spec, width=32, height=24, fps=100.0, t0_ns=time.monotonic_ns())
    try:
        small.start()
        f = small.read(1.0)
    finally:
        small.close()
    assert f is not None and f.luma.shape == (24, 32)  # converted to the rig's size


@pytest.mark.skipif(not (REAL.parent / "bitalino" / "ecg_1000hz.txt").exists(),
                    reason="../shared/data/real is not here")
def test_an_opensignals_file_plays_its_ecg_in_millivolts():
    path = REAL.parent / "bitalino" / "ecg_1000hz.txt"
    pb = hub_from_channels(read_channels(path), {}, 1000.0, 0, 0, str(path))
    assert pb.channels == ("ECG",) and pb.units == ("mV",)  # BITalino's transfer function
    mv = pb.raw[:, 0] * pb.scale[0]
    assert pb.raw.shape[0] == 22350 and 0.3 < np.ptp(mv) < 5.0  # a surface ECG's size


def test_mmme_hil_run_scores_a_replayed_recording_against_its_coded_intervals(tmp_path):
    """A session recorded elsewhere (here: frames rendered by the camera simulator, with the
    scenario's expressions written as the recording's coded intervals, as import-mmme
    writes them) is replayed through the whole rig and scored against those intervals."""
    from edge.recording.recorder import Recorder
    from hil.e2e import run_replay
    from hil.sim.camera import SimCamera
    from hil.sim.scenario import generate

    scen = generate(12.0, 3, seed=5)
    cam = SimCamera(scen, fps=150.0, seed=5)
    base = 7 * 10**12  # the recording's own host clock
    rec = Recorder(tmp_path / "s.mcap", [], camera={"width": 320, "height": 240, "fps": 150.0})
    for f in cam.offline(0.0, scen.duration_s):
        rec.write_frame(dataclasses.replace(f, t_ns=base + f.t_ns))
    for e in scen.expressions:
        rec.write_event("ground_truth", {
            "onset_ns": base + round(e.onset_s * 1e9), "apex_ns": base + round(e.apex_s * 1e9),
            "offset_ns": base + round(e.offset_s * 1e9), "emotion": e.emotion,
            "composite": {"happy": "positive", "surprise": "surprise"}.get(e.emotion,
                                                                         "negative"),
            "kind": e.kind}, base + round(e.onset_s * 1e9))
    rec.close()
    result = run_replay(tmp_path / "s.mcap", tmp_path / "work")
    print(f"\nREPLAY scored: F1 {result['f1_overall']}, emotion UF1 {result['emotion_uf1']}, "
          f"events {result['events']}")
    assert result["errors"] == []
    assert result["events"]["truth"] == 3
    assert result["f1_overall"] >= 0.5, result["spotting"]  # the simulator's faces, replayed
    assert result["events"]["emotion"] == result["events"]["me"] > 0
