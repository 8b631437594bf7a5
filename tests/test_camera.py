"""Camera seam: the frame-gap detector, the real backends' failure modes, and the camera
emulator (timing, ring-buffer losses, AU rendering, blinks, faults)."""

from __future__ import annotations

import sys
import time

import cv2
import numpy as np
import pytest

from hil.sim.camera import SimCamera
from hil.sim.crystal import Crystal
from hil.sim.face_render import AU_REGIONS, AUS
from hil.sim.scenario import Blink, ExpressionEvent, HeadMove, Scenario
from hil.sim.wire import SYNC, Wire
from sensors.blocks import monotonic_ns
from sensors.camera import (
    MIN_BUFFERS,
    FrameGapDetector,
    OpenCVSource,
    Picamera2Source,
    buffers_for,
    pick_sensor_mode,
)
from sensors.errors import BackendUnavailable, DeviceNotFound, WrongDevice
from sensors.fakes import IMX219_MODES, FakePicamera2, make_fake_picamera2
from sensors.seams import FrameSource

FPS = 150.0
PERIOD_NS = 1e9 / FPS


def expression(aus: tuple[str, ...], intensity: float = 1.0, onset: float = 1.0,
               apex: float = 1.15, offset: float = 1.35) -> ExpressionEvent:
    return ExpressionEvent(onset_s=onset, apex_s=apex, offset_s=offset, aus=aus,
                           emotion="tense", intensity=intensity)


def quiet_camera(scenario: Scenario | None = None, **kw) -> SimCamera:
    """A noiseless camera, so image differences are the face's motion only."""
    kw.setdefault("noise_sigma", 0.0)
    return SimCamera(scenario or Scenario(duration_s=3.0), **kw)


def box_mask(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = box
    m = np.zeros(shape, bool)
    m[max(y, 0) : y + h, max(x, 0) : x + w] = True
    return m


def flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 9, 5, 5, 1.1, 0)


# ---- FrameGapDetector --------------------------------------------------------------------


def test_gap_detector_numbers_jittered_frames_and_counts_every_gap() -> None:
    rng = np.random.default_rng(4)
    true_seq = np.cumsum(rng.choice([1, 1, 1, 1, 2, 3, 6], size=2000)) + 10
    jitter = rng.uniform(-0.2, 0.2, size=true_seq.size) * PERIOD_NS
    t_ns = (5_000_000_000 + true_seq * PERIOD_NS + jitter).astype(np.int64)
    det = FrameGapDetector(FPS, first_seq=int(true_seq[0]))
    seq = det.process(t_ns)
    np.testing.assert_array_equal(seq, true_seq)
    assert det.dropped == int(true_seq[-1] - true_seq[0] + 1 - true_seq.size)
    assert det.frames == true_seq.size and det.anomalies == 0


def test_gap_detector_follows_a_camera_that_runs_slower_than_nominal() -> None:
    # A sensor mode that really runs at 146 fps: a 20-frame gap would be miscounted
    # with the nominal period (20 * 150/146 = 20.5 periods).
    real_period = 1e9 / 146.0
    true_seq = np.concatenate([np.arange(0, 300), np.arange(320, 400)])
    t_ns = (true_seq * real_period).astype(np.int64)
    det = FrameGapDetector(FPS)
    np.testing.assert_array_equal(det.process(t_ns), true_seq)
    assert det.dropped == 20
    assert det.period_ns == pytest.approx(real_period, rel=0.005)


def test_gap_detector_counts_non_advancing_timestamps_as_anomalies() -> None:
    det = FrameGapDetector(100.0)
    assert det.update(1_000_000_000) == (0, 0)
    assert det.update(1_010_000_000) == (1, 0)
    assert det.update(1_010_000_000) == (2, 0)  # duplicate stamp: next frame, flagged
    assert det.update(1_040_000_000) == (4, 1)  # 3 periods after the last good stamp
    assert det.anomalies == 1 and det.dropped == 1


# ---- real backends without hardware -------------------------------------------------------


def test_picamera2_source_without_the_package_is_backend_unavailable(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import picamera2 -> ImportError
    with pytest.raises(BackendUnavailable, match="apt install python3-picamera2"):
        Picamera2Source()


@pytest.mark.parametrize("device", ["/dev/video99", 99])
def test_opencv_source_on_a_missing_device_is_device_not_found_and_quiet(device, capfd) -> None:
    with pytest.raises(DeviceNotFound, match="video99"):
        OpenCVSource(device)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_opencv_source_on_a_node_that_is_no_camera_is_device_not_found(capfd) -> None:
    with pytest.raises(DeviceNotFound):
        OpenCVSource("/dev/null")
    assert capfd.readouterr().err == ""


def test_sensor_mode_choice_reaches_the_frame_rate_or_refuses() -> None:
    assert pick_sensor_mode(IMX219_MODES, 320, 240, 150.0)["size"] == (640, 480)
    assert pick_sensor_mode(IMX219_MODES, 1280, 720, 30.0)["size"] == (1640, 1232)
    with pytest.raises(WrongDevice, match="no sensor mode reaches 300"):
        pick_sensor_mode(IMX219_MODES, 320, 240, 300.0)


def test_picamera2_source_configures_fixed_exposure_and_numbers_frames_from_timestamps(
    monkeypatch,
) -> None:
    monkeypatch.setattr(FakePicamera2, "timestamps_ns",
                        [1_000_000_000 + round(k * PERIOD_NS) for k in (0, 1, 2, 5, 6)])
    monkeypatch.setitem(sys.modules, "picamera2", make_fake_picamera2())
    src = Picamera2Source(width=320, height=240, fps=FPS, exposure_us=3000)
    assert isinstance(src, FrameSource)
    cam = FakePicamera2.instances[-1]
    controls = cam.config["controls"]
    assert controls["AeEnable"] is False and controls["ExposureTime"] == 3000
    assert controls["FrameDurationLimits"] == (6667, 6667)
    assert cam.config["main"] == {"size": (320, 240), "format": "YUV420"}
    assert cam.config["sensor"]["output_size"] == (640, 480)
    src.start()
    frames = [src.read(0.1) for _ in range(5)]
    assert [f.seq for f in frames] == [0, 1, 2, 5, 6]
    assert [f.t_ns for f in frames] == [r.t_ns for r in cam.requests]
    assert all(f.luma.shape == (240, 320) and f.luma.dtype == np.uint8 for f in frames)
    assert [int(f.luma[0, 0]) for f in frames] == [1, 2, 3, 4, 5]  # Y plane, no padding
    assert all(r.released for r in cam.requests)
    assert src.counters.samples == 5 and src.counters.dropped == 2
    assert src.read(0.01) is None  # no frame within the timeout
    src.close()


# ---- emulator: timing and losses -----------------------------------------------------------


def test_live_frames_arrive_in_order_at_the_crystal_rate() -> None:
    crystal = Crystal(ppm=200.0)
    cam = SimCamera(Scenario(duration_s=5.0), fps=FPS, crystal=crystal, buffer_frames=64)
    assert isinstance(cam, FrameSource)
    cam.start()
    frames = []
    t_end = time.monotonic() + 0.6
    while time.monotonic() < t_end:
        f = cam.read(0.1)
        assert f is not None
        assert monotonic_ns() >= f.t_ns + PERIOD_NS * 0.99  # read out before it is handed over
        frames.append(f)
    cam.stop()
    assert cam.read(0.01) is None
    seq = np.array([f.seq for f in frames])
    t = np.array([f.t_ns for f in frames])
    assert np.all(np.diff(seq) == 1)
    # Period set by the camera's crystal: 200 ppm fast means shorter periods in host time.
    np.testing.assert_allclose(np.diff(t), PERIOD_NS / 1.0002, atol=1.0)
    assert 0.5 * 0.6 * FPS < len(frames) < 0.6 * FPS + 64 + 5
    assert frames[0].luma.shape == (240, 320) and frames[0].luma.dtype == np.uint8
    assert cam.counters.samples == len(frames) and cam.counters.dropped == 0


def test_capture_buffers_cover_the_same_time_at_any_frame_rate() -> None:
    assert buffers_for(150.0, 0.1) == 15
    assert buffers_for(200.0, 0.1) == 20
    assert buffers_for(300.0, 0.1) == 30
    assert buffers_for(30.0, 0.1) == MIN_BUFFERS  # a V4L2 stream needs a few at any rate
    with pytest.raises(ValueError):
        buffers_for(0.0, 0.1)


def test_the_simulated_rig_camera_gets_the_configured_buffer_time() -> None:
    from edge import config
    from hil.sim.rig import SimBench

    cfg = config.load(config.example_path("sim"))
    bench = SimBench.from_config(cfg, duration_s=5.0)
    try:
        assert bench.camera.buffer_frames == buffers_for(cfg.camera["fps"], 0.1) == 15
    finally:
        bench.close()


def test_a_slow_consumer_loses_the_oldest_frames_and_they_are_counted() -> None:
    cam = SimCamera(Scenario(duration_s=5.0), fps=200.0, buffer_frames=4)
    cam.start()
    got = [cam.read(0.2)]
    time.sleep(0.15)  # 30 frame periods: the 4-buffer ring has been overwritten
    got += [cam.read(0.2) for _ in range(6)]
    assert all(f is not None for f in got)
    seq = np.array([f.seq for f in got])
    gaps = np.diff(seq) - 1
    assert np.all(gaps >= 0) and gaps.max() >= 20
    assert cam.counters.dropped == gaps.sum() == cam.counters.extra["overrun"]
    det = FrameGapDetector(200.0, first_seq=int(seq[0]))
    np.testing.assert_array_equal(det.process([f.t_ns for f in got]), seq)


def test_injected_sensor_drops_are_seq_gaps_and_the_gap_detector_finds_each_one() -> None:
    cam = quiet_camera(Scenario(duration_s=2.0), t0_ns=7_000_000_000, crystal=Crystal(ppm=-80))
    cam.drop_frames([3, 4, 50, 51, 52, 200])
    cam.drop_frames(0.05)
    frames = list(cam.offline(0.0, 2.0))
    seq = np.array([f.seq for f in frames])
    lost = sorted(set(range(seq[0], seq[-1] + 1)) - set(seq.tolist()))
    assert {3, 4, 50, 51, 52, 200} <= set(lost)
    assert len(lost) > 6 + 5  # the random 5 % added more
    assert lost == [i for i in range(seq[0], seq[-1] + 1) if cam.is_dropped(i)]
    det = FrameGapDetector(FPS, first_seq=int(seq[0]))
    np.testing.assert_array_equal(det.process([f.t_ns for f in frames]), seq)
    assert det.dropped == len(lost)


def test_live_sensor_drops_are_counted_as_drops_not_overruns() -> None:
    cam = SimCamera(Scenario(duration_s=5.0), fps=200.0, buffer_frames=64)
    cam.drop_frames(0.2)
    cam.start()
    frames = [cam.read(0.2) for _ in range(40)]
    seq = np.array([f.seq for f in frames])
    assert cam.counters.dropped == (np.diff(seq) - 1).sum() > 0
    assert cam.counters.extra["sensor_drop"] == cam.counters.dropped
    assert cam.counters.extra["overrun"] == 0


def test_offline_frames_follow_the_crystal_and_carry_the_sync_line() -> None:
    t0 = 10_000_000_000
    wire = Wire()
    wire[SYNC].drive(t0 + 500_000_000, 1)
    wire[SYNC].drive(t0 + 520_000_000, 0)
    cam = quiet_camera(Scenario(duration_s=1.0), t0_ns=t0, wire=wire, crystal=Crystal(ppm=-50))
    frames = list(cam.offline(0.0, 1.0))
    assert [f.seq for f in frames] == list(range(len(frames)))
    assert len(frames) == 150
    t = np.array([f.t_ns for f in frames])
    np.testing.assert_allclose(t - t0, np.arange(150) * PERIOD_NS / 0.99995, atol=1.0)
    high = [f.seq for f in frames if f.trigger]
    expected = [f.seq for f in frames if t0 + 500_000_000 <= f.t_ns < t0 + 520_000_000]
    assert high == expected and len(high) == 3


def test_rendering_is_deterministic_per_seed_and_offline_matches_render() -> None:
    sc = Scenario(duration_s=2.0, expressions=(expression(("AU12",)),))
    a, b = SimCamera(sc, seed=3), SimCamera(sc, seed=3)
    np.testing.assert_array_equal(a.render(1.1), b.render(1.1))
    assert not np.array_equal(a.render(1.1), SimCamera(sc, seed=4).render(1.1))
    f = next(a.offline(1.1, 1.2))
    np.testing.assert_array_equal(f.luma, a.render(a.frame_t_s(f.seq)))
    noise = a.render(0.5).astype(float) - quiet_camera(sc).render(0.5)
    assert 1.5 < noise.std() < 2.5  # noise_sigma=2 by default


# ---- emulator: the face --------------------------------------------------------------------


def test_face_fills_about_half_the_frame_and_landmarks_sit_inside_it() -> None:
    cam = quiet_camera()
    x, y, w, h = cam.face_box()
    assert 0.5 <= h / cam.height <= 0.6
    assert x >= 0 and y >= 0 and x + w <= cam.width and y + h <= cam.height
    for name, (px, py) in cam.landmarks().items():
        assert x <= px <= x + w and y <= py <= y + h, name
    lm = cam.landmarks()
    assert lm["brow_left_inner"][1] < lm["eye_left"][1] < lm["nose_tip"][1] < lm["mouth_left"][1]


UPPER_FACE = ("brows", "eyes")


@pytest.mark.parametrize("au", AUS)
def test_each_au_moves_its_own_face_region_and_nothing_far_from_it(au: str) -> None:
    cam = quiet_camera(Scenario(duration_s=2.0, expressions=(expression((au,)),)))
    neutral, apex = cam.render(0.5), cam.render(1.15)
    diff = np.abs(apex.astype(float) - neutral)
    boxes = cam.region_boxes()
    own = np.zeros(diff.shape, bool)
    for region in AU_REGIONS[au]:
        own |= box_mask(diff.shape, boxes[region])
    assert diff[own].sum() > 0.9 * diff.sum()
    assert diff[own].max() > 20  # a visible movement at intensity 1
    x, y, w, h = cam.face_box()
    pad = h // 8  # hair at the temples moves with the outer brows
    head = box_mask(diff.shape, (x - pad, y - pad, w + 2 * pad, h + 2 * pad))
    assert diff[~head].max() <= 1  # the background does not move
    # The far half of the face (outside the AU's own regions) does not move at all.
    far = ("mouth",) if AU_REGIONS[au][0] in (*UPPER_FACE, "nose", "cheeks") else UPPER_FACE
    for region in far:
        assert diff[box_mask(diff.shape, boxes[region]) & ~own].max() <= 1, region
    assert cam.frame_truth(round(1.15 * FPS))["aus"] == {au: pytest.approx(1.0, abs=0.01)}


@pytest.mark.parametrize(
    ("au", "region", "direction"),
    [("AU1", "brows", -1), ("AU4", "brows", +1), ("AU12", "mouth", -1), ("AU15", "mouth", +1)],
)
def test_au_motion_goes_the_right_way(au: str, region: str, direction: int) -> None:
    cam = quiet_camera(Scenario(duration_s=2.0, expressions=(expression((au,)),)))
    v = flow(cam.render(0.5), cam.render(1.15))[..., 1]
    m = box_mask(v.shape, cam.region_boxes()[region])
    moving = m & (np.abs(v) > 0.3)
    assert moving.sum() > 20
    assert np.sign(np.median(v[moving])) == direction  # image y grows downwards


def test_au12_pulls_the_mouth_corners_up_and_outwards() -> None:
    cam = quiet_camera(Scenario(duration_s=2.0, expressions=(expression(("AU12",)),)))
    f = flow(cam.render(0.5), cam.render(1.15))
    lm = cam.landmarks()
    for side, sign in (("left", -1), ("right", 1)):
        x, y = (round(c) for c in lm[f"mouth_{side}"])
        u, v = f[y - 3 : y + 4, x - 3 : x + 4].reshape(-1, 2).mean(axis=0)
        assert v < -0.5 and np.sign(u) == sign


def test_intensity_scales_the_motion_and_0_3_stays_under_a_pixel() -> None:
    def peak_motion(intensity: float) -> tuple[float, float]:
        cam = quiet_camera(Scenario(duration_s=2.0, expressions=(expression(("AU4",), intensity),)))
        truth = cam.frame_truth(round(1.15 * FPS))
        disp = cam.renderer.displacement(truth["au_scale"])
        v = flow(cam.render(0.5), cam.render(1.15))[..., 1]
        m = box_mask(v.shape, cam.region_boxes()["brows"])
        return float(np.abs(disp).max()), float(np.percentile(np.abs(v[m]), 99))

    disp_lo, flow_lo = peak_motion(0.3)
    disp_hi, flow_hi = peak_motion(1.0)
    assert 2.0 < disp_hi < 4.0 and disp_lo < 1.0
    assert disp_lo / disp_hi == pytest.approx(0.3, rel=0.02)
    assert 0.15 < flow_lo / flow_hi < 0.5


def test_expression_follows_onset_apex_offset() -> None:
    cam = quiet_camera(Scenario(duration_s=2.0, expressions=(expression(("AU12", "AU6")),)))
    neutral = cam.render(0.5).astype(float)
    times = [0.99, 1.05, 1.1, 1.15, 1.25, 1.3, 1.36]
    energy = [np.abs(cam.render(t) - neutral).sum() for t in times]
    assert energy[0] == 0 and energy[-1] == 0
    assert energy[1] < energy[2] < energy[3] and energy[3] > energy[4] > energy[5]
    fractions = [cam.truth(t)["aus"].get("AU12", 0.0) for t in times]
    assert fractions[0] == 0.0 and fractions[3] == pytest.approx(1.0) and fractions[-1] == 0.0
    assert all(0.0 < f < 1.0 for f in fractions[1:3] + fractions[4:6])


def test_a_blink_closes_the_eyes_and_touches_nothing_else() -> None:
    cam = quiet_camera(Scenario(duration_s=2.0, blinks=(Blink(t_s=1.0, duration_s=0.15),)))
    neutral = cam.render(0.5).astype(float)
    closed = cam.render(1.06)  # 40 % into the blink: lids fully closed
    assert cam.truth(1.06)["blink"] == pytest.approx(1.0)
    diff = np.abs(closed - neutral)
    eyes = box_mask(diff.shape, cam.region_boxes()["eyes"])
    assert diff[~eyes].max() == 0
    assert diff[eyes].max() > 40
    x, y = (round(c) for c in cam.landmarks()["eye_right"])
    iris = (slice(y - 1, y + 2), slice(x - 2, x + 3))
    assert closed[iris].mean() > neutral[iris].mean() + 20  # the dark eye is covered by lid
    np.testing.assert_array_equal(cam.render(1.2), cam.render(0.5))  # eyes open again


def test_head_movement_shifts_the_whole_face_and_its_box() -> None:
    move = HeadMove(t_s=1.0, duration_s=0.4, dx_px=3.0, dy_px=-1.0)
    cam = quiet_camera(Scenario(duration_s=2.0, head_moves=(move,)))
    a, b = cam.render(0.5).astype(np.float32), cam.render(1.2).astype(np.float32)
    (dx, dy), _ = cv2.phaseCorrelate(a, b)
    assert dx == pytest.approx(3.0, abs=0.5) and dy == pytest.approx(-1.0, abs=0.5)
    x, y, _, _ = cam.face_box()
    assert cam.face_box(1.2)[:2] == (x + 3, y - 1)


# ---- emulator: faults ------------------------------------------------------------------------


def test_freeze_repeats_one_image_with_advancing_timestamps() -> None:
    cam = SimCamera(Scenario(duration_s=2.0), t0_ns=0)
    cam.freeze(0.5, 0.8)
    frames = [f for f in cam.offline(0.4, 0.9)]
    inside = [f for f in frames if 0.5 <= f.t_ns / 1e9 < 0.8]
    assert len(inside) >= 40
    assert all(np.array_equal(f.luma, inside[0].luma) for f in inside)
    assert np.all(np.diff([f.t_ns for f in inside]) > 0)
    outside = [f for f in frames if f.t_ns / 1e9 >= 0.8][:2]
    assert not np.array_equal(outside[0].luma, outside[1].luma)  # sensor noise moves again
    assert cam.frame_truth(inside[5].seq)["frozen"]


def test_face_off_shows_background_only() -> None:
    cam = quiet_camera(Scenario(duration_s=2.0, expressions=(expression(("AU12",)),)))
    cam.face_off(1.0, 1.5)
    off = cam.render(1.15)
    np.testing.assert_array_equal(off, cam.render(1.4))
    face = cam.render(0.5)
    fb = box_mask(face.shape, cam.face_box())
    assert np.abs(off.astype(float) - face)[fb].mean() > 30
    truth = cam.truth(1.15)
    assert truth["face"] is False and truth["aus"] == {} and truth["face_box"] is None


def test_lighting_extremes_darken_or_saturate_the_frame() -> None:
    cam = SimCamera(Scenario(duration_s=2.0))
    normal = float(cam.render(0.2).mean())
    cam.set_lighting(0.05, 0.5, 1.0)
    cam.set_lighting(4.0, 1.0, 1.5)
    assert cam.render(0.7).mean() < 0.1 * normal
    assert (cam.render(1.2) == 255).mean() > 0.5
    assert cam.render(1.7).mean() == pytest.approx(normal, rel=0.02)


def test_flicker_ripples_brightness_at_twice_mains() -> None:
    cam = quiet_camera(flicker=0.1)
    t = np.arange(0, 0.05, 0.0005)
    means = np.array([cam.render(float(x)).mean() for x in t[:40]])
    assert means.max() / means.min() > 1.15
    period = 1 / 100.0
    np.testing.assert_allclose(cam.render(0.0025).mean(), cam.render(0.0025 + period).mean(),
                               rtol=1e-3)


@pytest.mark.bench
def test_render_cost_leaves_room_for_200_fps() -> None:
    from hil.sim.camera import bench_render

    costs = bench_render(n_frames=1500)
    for name, (p50, p99) in costs.items():
        print(f"render {name:6s} p50 {p50:.3f} ms  p99 {p99:.3f} ms (CPU time, 320x240)")
    assert costs["worst"][0] < 3.0  # CPU time: a busy shared machine does not inflate it


def test_the_shipped_photograph_is_the_grey_astronaut_pixel_for_pixel() -> None:
    """hil/sim/astronaut_grey.png is skimage's astronaut() through COLOR_RGB2GRAY, lossless."""
    import hashlib

    from hil.sim.face_render import photograph_u8

    img = photograph_u8()
    assert img.shape == (512, 512) and img.dtype == np.uint8
    assert hashlib.sha256(img.tobytes()).hexdigest() == (
        "5492ee081c90c2bb57bcdf9a2a43866ea52f2a1906d4d26fc70e0d895a8105dd")
