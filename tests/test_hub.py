"""The hub driver against the emulated MCU over a real pty, and the physiology model."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from driver_runs import cat, collect

from hil.sim.crystal import Crystal
from hil.sim.hub import HubEmulator
from hil.sim.physio import CHANNELS, PhysioModel
from hil.sim.scenario import ExpressionEvent, PhysioResponse, Scenario, Subject, generate
from hil.sim.wire import SYNC, Wire
from sensors.blocks import SampleBlock, monotonic_ns
from sensors.errors import DeviceNotFound, DeviceTimeout, WrongDevice
from sensors.hub import Hub, HubSettings

PPM = 40.0


@pytest.fixture
def wire() -> Wire:
    return Wire()


@pytest.fixture
def emu(wire: Wire) -> Iterator[HubEmulator]:
    crystal = Crystal(ppm=PPM, origin_host_ns=monotonic_ns(), origin_device_s=5.0)
    with HubEmulator(generate(60, 4, seed=2), crystal, wire=wire, seed=3) as e:
        yield e


def poll_until(hub: Hub, predicate: Callable[[list], bool], timeout_s: float) -> list[SampleBlock]:
    blocks, end = [], time.monotonic() + timeout_s
    while time.monotonic() < end and not predicate(blocks):
        blocks += hub.poll(0.05)
    return blocks


def assert_bit_exact(emu: HubEmulator, blocks: list[SampleBlock]) -> None:
    index, raw = cat(blocks, "index"), cat(blocks, "raw")
    truth, known = emu.truth(index)
    assert known.all()
    assert np.array_equal(raw, truth)


def test_streams_bit_exact_samples_with_none_lost(emu: HubEmulator, wire: Wire):
    t = monotonic_ns()
    for k in range(3):  # sync pulses the MCU must see on its TRIG input
        wire[SYNC].drive(t + (k + 1) * 500_000_000, 1)
        wire[SYNC].drive(t + (k + 1) * 500_000_000 + 20_000_000, 0)
    hub = Hub(HubSettings(port=emu.port, fs_hz=1000))
    hub.open()
    assert hub.connected
    info = hub.info
    assert (info.name, info.fs_hz, info.device_time_unit) == ("hub", 1000.0, "us")
    assert info.channels == CHANNELS and info.units == ("mV", "au", "au", "uS", "degC")
    hub.start()
    blocks = collect(hub, 2.5)
    hub.stop()
    blocks += hub.poll(0.0)  # samples taken before STOP arrive with its ACK
    hub.close()

    index = cat(blocks, "index")
    assert index.size > 1500  # 2.5 s at 1 kHz, leaving room for a slow shared machine
    assert np.array_equal(index, np.arange(index[0], index[0] + index.size))
    assert hub.counters.dropped == 0 and hub.counters.errors == 0
    assert hub.counters.samples == index.size
    assert_bit_exact(emu, blocks)
    table = emu.truth_table()
    pos = np.searchsorted(table["seq"], index)
    assert np.array_equal(cat(blocks, "device_t"), table["t_us"][pos])
    trig = cat(blocks, "trigger")
    assert np.array_equal(trig, table["trigger"][pos]) and trig.any() and not trig.all()
    step_us = np.diff(cat(blocks, "device_t")).mean()
    assert step_us == pytest.approx(1000 * (1 + PPM * 1e-6), abs=0.5)  # the MCU's crystal
    values, raw = cat(blocks, "values"), cat(blocks, "raw")
    assert np.allclose(values, raw * np.array(info.scale) + np.array(info.offset))
    assert 4.0 < values[:, info.index("EDA")].mean() < 6.0  # the subject's SCL, uS
    host = cat(blocks, "host_t_ns")
    assert np.all(np.diff(host) >= 0)


def test_stop_from_another_thread_while_polling_parses_every_frame_once(emu: HubEmulator):
    # The runtime polls on a pump thread and stops from the main one: the parser must not
    # see the same bytes twice (a repeated counter would read as an MCU restart).
    hub = Hub(HubSettings(port=emu.port, fs_hz=1000))
    hub.open()
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # as the runtime's short interval: threads interleave often
    for _ in range(40):
        hub.start()
        blocks: list[SampleBlock] = []
        done = threading.Event()

        def pump(out: list[SampleBlock] = blocks, stop: threading.Event = done) -> None:
            while not stop.is_set():
                out.extend(hub.poll(0.0))

        t = threading.Thread(target=pump)
        t.start()
        time.sleep(0.15)
        hub.stop()
        time.sleep(0.05)
        done.set()
        t.join()
        blocks += hub.poll(0.0)
        index = cat(blocks, "index")
        assert np.all(np.diff(index) == 1)
        assert np.all(np.diff(cat(blocks, "device_t")) > 0)
    sys.setswitchinterval(switch)
    hub.close()
    assert hub.counters.extra["seq_restarts"] == 0 and hub.counters.dropped == 0


def test_absent_port_is_device_not_found(tmp_path):
    with pytest.raises(DeviceNotFound, match="ttyNOPE"):
        Hub(HubSettings(port=str(tmp_path / "ttyNOPE"))).open()


@pytest.mark.parametrize(("kind", "message"), [("magic", "ACME"), ("version", "v2")])
def test_wrong_identity_is_a_clear_error(emu: HubEmulator, kind: str, message: str):
    emu.set_wrong_identity(kind)
    hub = Hub(HubSettings(port=emu.port))
    with pytest.raises(WrongDevice, match=message):
        hub.open()
    assert not hub.connected


def test_silent_device_times_out(emu: HubEmulator):
    emu.stop_answering()
    with pytest.raises(DeviceTimeout, match="IDENTIFY"):
        Hub(HubSettings(port=emu.port, reply_timeout_s=0.3)).open()


def test_set_rate_is_applied(emu: HubEmulator):
    hub = Hub(HubSettings(port=emu.port, fs_hz=500))
    hub.open()
    hub.start()
    blocks = poll_until(hub, lambda b: sum(map(len, b)) > 200, 5.0)
    hub.close()
    assert hub.info.fs_hz == 500 and emu.fs_hz == 500
    assert np.diff(cat(blocks, "device_t")).mean() == pytest.approx(2000, abs=1)


def test_mcu_side_loss_is_counted_exactly(emu: HubEmulator):
    hub = Hub(HubSettings(port=emu.port))
    hub.open()
    hub.start()
    blocks = poll_until(hub, lambda b: sum(map(len, b)) > 100, 5.0)
    emu.drop_frames(37)
    blocks += poll_until(hub, lambda b: sum(map(len, b)) > 400, 5.0)
    hub.close()
    index = cat(blocks, "index")
    assert hub.counters.dropped == 37
    assert index[-1] - index[0] + 1 - index.size == 37
    assert_bit_exact(emu, blocks)


def test_corruption_on_the_wire_never_raises_and_loss_matches_truth(emu: HubEmulator):
    hub = Hub(HubSettings(port=emu.port))
    hub.open()
    hub.start()
    emu.corrupt(1e-3)
    blocks = collect(hub, 2.0)
    emu.corrupt(0.0)
    blocks += poll_until(hub, lambda b: sum(map(len, b)) > 50, 2.0)
    hub.close()
    index = cat(blocks, "index")
    assert emu.bytes_corrupted > 0 and hub.counters.errors + hub.counters.resyncs > 0
    missing = index[-1] - index[0] + 1 - index.size
    assert hub.counters.dropped == missing > 0
    assert_bit_exact(emu, blocks)  # nothing corrupted was delivered


def test_unplug_and_replug_recover_with_the_gap_counted(emu: HubEmulator):
    hub = Hub(HubSettings(port=emu.port, reconnect_interval_s=0.2))
    hub.open()
    hub.start()
    before = poll_until(hub, lambda b: sum(map(len, b)) > 200, 5.0)
    emu.unplug()
    poll_until(hub, lambda _: not hub.connected, 3.0)
    assert not hub.connected and hub.counters.extra["disconnects"] == 1
    assert hub.poll(0.3) == []  # retries quietly while the port is gone
    emu.replug()
    after = poll_until(hub, lambda b: hub.connected and sum(map(len, b)) > 200, 5.0)
    hub.close()
    assert hub.counters.extra["reconnects"] == 1
    blocks = before + after
    index = cat(blocks, "index")
    table = emu.truth_table()
    span = (table["seq"] >= index[0]) & (table["seq"] <= index[-1])
    lost_in_mcu = int(np.count_nonzero(~table["sent"][span]))
    assert lost_in_mcu > 100  # the MCU kept sampling while unplugged
    # The samples that never reached the host are the gap: nothing else is missing.
    assert hub.counters.dropped == index[-1] - index[0] + 1 - index.size
    assert hub.counters.dropped >= lost_in_mcu
    assert_bit_exact(emu, blocks)


# ---------------------------------------------------------------- physiology model

def one_event(t_s: float, response: PhysioResponse, hr_bpm: float = 65.0) -> Scenario:
    ev = ExpressionEvent(onset_s=t_s, apex_s=t_s + 0.15, offset_s=t_s + 0.35,
                         aus=("AU9",), emotion="disgust", response=response)
    return Scenario(duration_s=60.0, seed=4, subject=Subject(hr_bpm=hr_bpm, rr_bpm=12.0),
                    expressions=(ev,))


def test_heart_and_breathing_rates_match_the_subject():
    model = PhysioModel(Scenario(duration_s=120.0, subject=Subject(hr_bpm=62, rr_bpm=14)))
    truth = model.truth()
    assert 60 / np.diff(truth.r_peaks_s).mean() == pytest.approx(62, abs=1.0)
    assert 60 / np.diff(truth.breath_onsets_s).mean() == pytest.approx(14, abs=0.5)
    assert np.allclose(truth.ppg_peaks_s, truth.r_peaks_s + 0.23)
    fs = 1000
    t = np.arange(0, 30 * fs) / fs
    v = model.chunk(t)
    for name, peaks in (("ECG", truth.r_peaks_s), ("PPG", truth.ppg_peaks_s)):
        x = v[:, CHANNELS.index(name)]
        for p in peaks[(peaks > 1) & (peaks < 29)]:
            i = int(np.rint(p * fs))
            window = x[i - 100 : i + 100]
            assert abs(np.argmax(window) - 100) <= (3 if name == "ECG" else 25)


def test_scr_appears_at_event_plus_latency():
    model = PhysioModel(one_event(10.0, PhysioResponse(scr_latency_s=2.0, scr_amp_us=0.5)),
                        nsscr_per_min=0.0, noise=False)
    calm = PhysioModel(one_event(10.0, PhysioResponse(scr_amp_us=0.0)),
                       nsscr_per_min=0.0, noise=False)
    truth = model.truth()
    assert truth.scr_onsets_s.tolist() == [12.0] and truth.scr_amps_us.tolist() == [0.5]
    assert truth.scr_event.tolist() == [0]
    t = np.arange(8.0, 20.0, 0.001)
    eda = CHANNELS.index("EDA")
    rise = model.values(t)[:, eda] - calm.values(t)[:, eda]
    assert np.all(rise[t <= 12.0] == 0.0) and np.all(rise[t > 12.01] > 0)
    assert rise.max() == pytest.approx(0.5, abs=1e-3)
    assert 12.5 < t[np.argmax(rise)] < 14.0  # Bateman peak about 1.2 s after onset


def test_heart_rate_changes_over_a_few_beats_then_recovers():
    model = PhysioModel(one_event(20.0, PhysioResponse(hr_delta_bpm=-8.0)), noise=False)
    base = PhysioModel(one_event(20.0, PhysioResponse(hr_delta_bpm=0.0)), noise=False)
    t = np.array([19.0, 23.0, 30.0])
    assert (model.hr_bpm(t) - base.hr_bpm(t)).tolist() == pytest.approx([0.0, -8.0, 0.0])
    r = model.truth().r_peaks_s
    rr_during = np.diff(r[(r > 21.5) & (r < 24.5)]).mean()
    rr_before = np.diff(r[(r > 12) & (r < 19.5)]).mean()
    assert rr_during > rr_before * 1.05  # slower beats for a few beats


def test_inspiratory_pause_holds_the_breath_at_full():
    model = PhysioModel(one_event(20.0, PhysioResponse(resp_pause_s=1.5)), noise=False)
    (p0, p1), = model.truth().pauses_s
    assert 20.0 <= p0 < 25.0 and p1 - p0 == pytest.approx(1.5, abs=0.01)
    rsp = model.values(np.arange(p0 + 0.05, p1 - 0.05, 0.01))[:, CHANNELS.index("RSP")]
    assert np.ptp(rsp) < 1e-6 and rsp.mean() == pytest.approx(1.0, abs=1e-6)  # held full
    assert model.br_bpm(np.array([(p0 + p1) / 2]))[0] == 0.0
    onsets = model.truth().breath_onsets_s
    assert not np.any((onsets > p0) & (onsets < p1))


def test_fingertip_cools_late():
    model = PhysioModel(one_event(5.0, PhysioResponse(skt_delta_c=-0.2, scr_amp_us=0.0)),
                        noise=False)
    calm = PhysioModel(one_event(5.0, PhysioResponse(skt_delta_c=0.0, scr_amp_us=0.0)),
                       noise=False)
    t = np.array([5.0, 8.0, 22.0])
    d = (model.values(t) - calm.values(t))[:, CHANNELS.index("SKT")]
    assert d[0] == 0.0 and -0.1 < d[1] < 0.0 and d[2] == pytest.approx(-0.2, abs=0.01)


def test_deterministic_and_independent_of_chunking():
    sc = generate(20, 2, seed=5)
    t = np.arange(0, 3000) / 1000
    a = PhysioModel(sc, seed=1).chunk(t)
    m = PhysioModel(sc, seed=1)
    b = np.concatenate([m.chunk(t[:7]), m.chunk(t[7:1234]), m.chunk(t[1234:])])
    assert np.array_equal(a, b)
    assert not np.array_equal(a, PhysioModel(sc, seed=2).chunk(t))
    late = PhysioModel(sc, seed=1).values(np.array([500.0]))  # past the horizon: grows
    assert np.isfinite(late).all()


def test_the_crystals_scalar_reading_equals_its_vectorised_one():
    # The emulators read one instant per batch with device_s_at: it must be the same clock.
    c = Crystal(ppm=-73.0, origin_host_ns=123_456_789, origin_device_s=7.0)
    c.step(5_000_000_000, 0.25)
    hosts = np.array([0, 123_456_789, 4_999_999_999, 5_000_000_000, 9_876_543_210_123])
    assert [c.device_s_at(int(h)) for h in hosts] == c.device_s(hosts).tolist()
