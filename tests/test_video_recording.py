"""The camera's video stores: every recorded frame and face region decodes back bit-exact
to the simulator's frame; the encoder drops (counted) rather than blocks; a hardware
encoder that cannot open falls back to FFV1; a cut file decodes up to its last chunk;
the recording stops cleanly before a small real file system is full."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from small_disk import small_disk

from edge.recording.export import export
from edge.recording.format import (
    CAMERA_TOPIC,
    FACE_TOPIC,
    VIDEO_ENCODING,
    iter_messages,
    open_recording,
)
from edge.recording.info import info
from edge.recording.recorder import Recorder
from edge.recording.video import (
    CANDIDATES,
    FFV1,
    CodecChoice,
    FacePlacer,
    VideoEncoder,
    face_crop_size,
    open_encoder,
)
from hil.sim.camera import SimCamera
from hil.sim.scenario import generate
from sensors.blocks import Frame, SampleBlock, StreamInfo

FPS = 200.0
W, H = 640, 480
N_FRAMES = 40  # 0.2 s at 200 fps: every frame checked, each test about a second


@pytest.fixture(scope="module")
def sim_frames() -> tuple[list[Frame], tuple[int, int, int, int]]:
    """The simulator's frames at the field rig's size, and where its face is."""
    cam = SimCamera(generate(3.0, 1, seed=3), fps=FPS, width=W, height=H, seed=3)
    frames = [f for _, f in zip(range(N_FRAMES), cam.offline(0.0), strict=False)]
    return frames, cam.face_box()


def _record(path: Path, frames: list[Frame], store: str, codec: str = "ffv1", **kw) -> dict:
    face = kw.pop("face_box", None)
    rec = Recorder(path, [], camera={"store": store, "width": W, "height": H, "fps": FPS,
                                     "context_fps": 20.0, "codec": codec}, face_box=face, **kw)
    for f in frames:
        rec.write_frame(f)
        time.sleep(0.0005)  # a camera's pace, roughly: the encoder's queue never fills
    return rec.close()


def test_ffv1_gray_round_trip_is_bit_exact_on_noise_and_extremes() -> None:
    from edge.recording.format import VideoHeader, VideoTopicDecoder, encode_video

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48, 64), dtype=np.uint8), np.zeros((48, 64), np.uint8),
              np.full((48, 64), 255, np.uint8)]
    enc = VideoEncoder(FFV1, 64, 48, FPS)
    dec = VideoTopicDecoder()
    out = []
    for i, img in enumerate(images):
        for pk in enc.encode(img, i):
            assert pk.keyframe  # intra-only: every frame decodes alone
            hd = VideoHeader(i, i, 0, FFV1.codec_id, True, False, 48, 64, 0, 0, 48, 64)
            out += dec.decode(encode_video(hd, pk.data, enc.extradata))
    assert [im.header.seq for im in out] == [0, 1, 2]
    for im, want in zip(out, images, strict=True):
        np.testing.assert_array_equal(im.luma, want)


@pytest.mark.parametrize("codec", ["ffv1", "x264"])
def test_lossless_store_decodes_every_frame_bit_exact(tmp_path: Path, sim_frames,
                                                      codec: str) -> None:
    frames, _ = sim_frames
    stats = _record(tmp_path / "l.mcap", frames, "lossless", codec)
    assert stats["video"]["codec"] in ("ffv1", "libx264") or stats["video"]["codec"].endswith(
        "_nvenc")
    assert stats["video"]["dropped_queue"] == 0
    r = open_recording(tmp_path / "l.mcap")
    assert r.camera["store"] == "lossless" and r.complete and r.bad_messages == 0
    assert [f.seq for f in r.frames] == [f.seq for f in frames]
    for got, want in zip(r.frames, frames, strict=True):
        assert got.t_ns == want.t_ns
        np.testing.assert_array_equal(got.luma, want.luma)
    # Smaller than the raw frames by the codec's ratio (sensor noise: about 2x).
    raw = sum(f.luma.nbytes for f in frames)
    assert stats["written_bytes"] < 0.6 * raw


def test_face_store_decodes_every_face_region_bit_exact(tmp_path: Path, sim_frames) -> None:
    frames, (fx, fy, fw, fh) = sim_frames
    tracked = {"box": None}

    def face_box():  # the spotter's tracker: no face for the first frames, then the face
        return tracked["box"]

    rec = Recorder(tmp_path / "f.mcap", [], camera={
        "store": "face", "width": W, "height": H, "fps": FPS, "context_fps": 20.0},
        face_box=face_box)
    for i, f in enumerate(frames):
        if i == 10:
            tracked["box"] = (fx + 60.0, fy + 30.0, float(fw), float(fh))  # off centre
        rec.write_frame(f)
        time.sleep(0.0005)
    stats = rec.close()
    assert stats["video"]["dropped_queue"] == 0
    r = open_recording(tmp_path / "f.mcap")
    by_seq = {f.seq: f.luma for f in frames}
    assert [im.header.seq for im in r.faces] == [f.seq for f in frames]  # full rate
    cw, ch = face_crop_size(W, H, 0.7)
    for im in r.faces:
        hd = im.header
        assert (hd.width, hd.height) == (cw, ch)  # one fixed size for the encoder
        np.testing.assert_array_equal(im.luma, by_seq[hd.seq][hd.y:hd.y + ch, hd.x:hd.x + cw])
    # The box is stored per frame: centred and untracked first, then on the face.
    assert not r.faces[0].header.tracked and r.faces[-1].header.tracked
    x, y, _, _ = r.faces[-1].header.box
    assert x <= fx + 60 and x + cw >= fx + 60 + fw and y <= fy + 30
    np.testing.assert_array_equal(r.face_boxes[-1], r.faces[-1].header.box)
    # Whole frames at the context rate (20 fps of 200: every 10th), bit-exact too.
    assert 3 <= len(r.context) <= 5
    for f in r.context:
        np.testing.assert_array_equal(f.luma, by_seq[f.seq])
    assert r.camera["store"] == "face"


def test_export_writes_face_regions_and_info_shows_storage(tmp_path: Path, sim_frames) -> None:
    import cv2

    frames, box = sim_frames
    _record(tmp_path / "e.mcap", frames[:20], "face", face_box=lambda: box)
    res = export(tmp_path / "e.mcap", tmp_path / "out")
    assert res["faces"] == 20 and res["frames"] >= 2
    vdir = tmp_path / "out" / "sub-01" / "ses-01" / "video"
    rows = (vdir / "sub-01_ses-01_task-mmme_face.tsv").read_text().splitlines()
    head = rows[0].split("\t")
    first = dict(zip(head, rows[1].split("\t"), strict=True))
    png = cv2.imread(str(vdir / first["file"]), cv2.IMREAD_GRAYSCALE)
    x, y, w, h = (int(first[k]) for k in ("x", "y", "width", "height"))
    np.testing.assert_array_equal(png, frames[0].luma[y:y + h, x:x + w])
    st = info(str(tmp_path / "e.mcap"))["storage"]
    assert st["bytes"] == (tmp_path / "e.mcap").stat().st_size
    assert st["bytes_per_s"] > 0 and st["hours_left"] > 0


def test_encoder_behind_drops_counted_frames_and_never_blocks(tmp_path: Path,
                                                             sim_frames) -> None:
    frames, _ = sim_frames
    rec = Recorder(tmp_path / "d.mcap", [], camera={"store": "lossless", "width": W,
                                                    "height": H, "fps": 8.0})  # queue of 4
    t = time.perf_counter()
    for f in frames:  # a burst far faster than FFV1 encodes 640x480
        rec.write_frame(f)
    burst_s = time.perf_counter() - t
    stats = rec.close()
    v = stats["video"]
    assert v["dropped_queue"] > 0 and v["frames_encoded"] + v["dropped_queue"] == N_FRAMES
    assert stats["dropped_frames"] == v["dropped_queue"]
    # Handing a frame over costs far less than encoding one (measured on this host).
    enc = VideoEncoder(FFV1, W, H, FPS)
    t = time.perf_counter()
    enc.encode(frames[0].luma, 0)
    assert burst_s < N_FRAMES * (time.perf_counter() - t)
    r = open_recording(tmp_path / "d.mcap")
    by_seq = {f.seq: f.luma for f in frames}
    assert len(r.frames) == v["frames_encoded"]
    for f in r.frames:  # what was kept is intact, in order, gaps where frames were dropped
        np.testing.assert_array_equal(f.luma, by_seq[f.seq])
    assert list(r.frame_seq) == sorted(r.frame_seq)


def test_encoder_that_cannot_open_falls_back_to_ffv1() -> None:
    missing = CodecChoice("mmme_no_such_encoder", "h264", 2, "yuv420p")
    tried: list[str] = []
    enc = open_encoder(64, 48, FPS, (missing, FFV1), tried)
    assert enc.choice is FFV1 and len(tried) == 1 and "mmme_no_such_encoder" in tried[0]
    assert CANDIDATES[-1] is FFV1 and all(c.hardware for c in CANDIDATES[:-1])
    with pytest.raises(RuntimeError, match="no lossless encoder"):
        open_encoder(64, 48, FPS, (missing,))


@pytest.mark.skipif(Path("/dev/nvidia0").exists(), reason="an NVIDIA GPU is present")
def test_without_a_gpu_the_default_choice_is_ffv1() -> None:
    assert open_encoder(64, 48, FPS).choice is FFV1


@pytest.mark.parametrize("codec", ["ffv1", "x264"])
def test_cut_file_decodes_every_frame_of_its_intact_chunks(tmp_path: Path, sim_frames,
                                                          codec: str) -> None:
    frames, _ = sim_frames
    path = tmp_path / "c.mcap"
    rec = Recorder(path, [], camera={"store": "lossless", "width": W, "height": H,
                                     "fps": FPS, "codec": codec}, chunk_period_s=0.02)
    for f in frames:
        rec.write_frame(f)
        time.sleep(0.002)
    rec.close()
    data = path.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: len(data) * 2 // 3])  # a power cut mid-file
    r = open_recording(cut)
    assert not r.complete and 0 < len(r.frames) < N_FRAMES
    assert [f.seq for f in r.frames] == [f.seq for f in frames[: len(r.frames)]]
    for got, want in zip(r.frames, frames[: len(r.frames)], strict=True):
        np.testing.assert_array_equal(got.luma, want.luma)


def test_inter_codec_skips_to_the_next_keyframe_after_a_damaged_chunk(tmp_path: Path,
                                                                     sim_frames) -> None:
    from mcap.reader import make_reader

    frames, _ = sim_frames
    path = tmp_path / "x.mcap"
    # 40 fps in the config: a keyframe every 0.5 s is every 20th frame (0 and 20 here).
    rec = Recorder(path, [], camera={"store": "lossless", "width": W, "height": H,
                                     "fps": 40.0, "codec": "x264"}, chunk_period_s=0.01)
    for f in frames:
        rec.write_frame(f)
        time.sleep(0.012)  # about a frame per chunk
    assert rec.close()["video"]["dropped_queue"] == 0
    with open(path, "rb") as fh:
        chunks = make_reader(fh).get_summary().chunk_indexes
    bad = next(c for c in chunks if c.message_start_time > frames[5].t_ns)
    data = bytearray(path.read_bytes())
    data[bad.chunk_start_offset + bad.chunk_length // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    r = open_recording(path)
    got = [f.seq for f in r.frames]
    by_seq = {f.seq: f.luma for f in frames}
    for f in r.frames:  # never a frame decoded against a lost reference
        np.testing.assert_array_equal(f.luma, by_seq[f.seq])
    assert got[:5] == [f.seq for f in frames[:5]]
    assert [f.seq for f in frames[20:]] == got[-20:]  # back from the keyframe on
    assert len(got) < N_FRAMES and r.problems


def test_face_placer_holds_still_and_follows_the_face() -> None:
    p = FacePlacer(640, 480, 272, 336)
    assert p.place(None) == (184, 72, False)  # centred before the tracker has a face
    assert p.place((200.0, 100.0, 240.0, 280.0)) == (184, 72, True)  # face inside: stay
    x, y, _ = p.place((330.0, 100.0, 240.0, 280.0))  # centre moved 130 px: follow
    assert (x, y) == (314, 72) and p.moves == 1
    assert p.place((600.0, 400.0, 100.0, 100.0))[:2] == (368, 144)  # clamped to the frame
    p.place((0.0, 0.0, 400.0, 400.0))
    assert p.clipped == 1  # a face larger than the crop is counted


def _eeg_info() -> StreamInfo:
    return StreamInfo(name="eeg", fs_hz=1000.0, channels=("a",), units=("uV",), scale=(1.0,),
                      offset=(0.0,), device_time_unit="sample")


def _block(k: int, n: int = 1000) -> SampleBlock:
    idx = np.arange(k * n, (k + 1) * n, dtype=np.int64)
    rng = np.random.default_rng(k)
    return SampleBlock(stream="eeg", index=idx, device_t=idx, host_t_ns=idx * 1_000_000,
                       raw=(raw := rng.integers(-2**23, 2**23, (n, 1), dtype=np.int32)),
                       values=raw.astype(np.float64), status=np.zeros(n, np.uint32),
                       trigger=np.zeros(n, np.uint8))


def _fill_until_stopped(rec: Recorder, timeout_s: float = 20.0) -> int:
    k = 0
    deadline = time.monotonic() + timeout_s
    while not rec.status.startswith("stopped"):
        assert time.monotonic() < deadline, f"never stopped; status {rec.status}"
        rec.write_block(_block(k))
        k += 1
        time.sleep(0.002)
    return k


def test_low_space_stops_cleanly_before_a_small_disk_is_full(tmp_path: Path) -> None:
    with small_disk(tmp_path, 4) as mnt:
        rec = Recorder(mnt / "r.mcap", [_eeg_info()], chunk_period_s=0.02,
                       min_free_bytes=1 << 20)
        k = _fill_until_stopped(rec)
        assert "low disk space" in rec.status
        assert rec.write_block(_block(k)) is False  # after the stop: refused and counted
        stats = rec.close()
        assert stats["write_errors"] == 0 and stats["dropped_low_space"] >= 1
        assert stats["storage"]["stopped_low_space"]
        free = os.statvfs(mnt)
        assert free.f_bavail * free.f_frsize >= 512 * 1024  # never ran the disk full
        r = open_recording(mnt / "r.mcap")
        assert r.complete  # summary and footer written: a clean stop, not a torn file
        s = r.streams["eeg"]
        assert len(s) > 0 and np.array_equal(s.index, np.arange(len(s)))


def test_storage_figures_from_the_free_space_seam(tmp_path: Path) -> None:
    free = {"bytes": 10 * 2**30}
    rec = Recorder(tmp_path / "s.mcap", [_eeg_info()], chunk_period_s=0.02,
                   min_free_bytes=2**30, free_bytes=lambda _p: free["bytes"])
    for k in range(30):
        rec.write_block(_block(k))
        time.sleep(0.01)
    st = rec.storage()
    assert st["write_bytes_per_s"] > 0 and st["disk_free_mb"] == 10 * 1024
    want_h = (9 * 2**30) / st["write_bytes_per_s"] / 3600
    assert st["hours_left"] == pytest.approx(want_h, rel=0.01)
    free["bytes"] = 2**30 + 100  # the next chunk would go under the reserve: stop
    _fill_until_stopped(rec)
    assert rec.close()["storage"]["stopped_low_space"]


def test_video_channels_and_the_store_are_in_the_file(tmp_path: Path, sim_frames) -> None:
    frames, _ = sim_frames
    _record(tmp_path / "m.mcap", frames[:3], "lossless")
    msgs = [m for m in iter_messages(tmp_path / "m.mcap") if m.topic == CAMERA_TOPIC]
    assert msgs and all(m.channel.message_encoding == VIDEO_ENCODING for m in msgs)
    assert json.loads(msgs[0].channel.metadata["camera"])["store"] == "lossless"
    assert FACE_TOPIC not in {m.topic for m in iter_messages(tmp_path / "m.mcap")}


def test_storage_on_health_validates_against_the_schema(tmp_path: Path) -> None:
    from edge.mqtt.messages import Envelope, validate

    rec = Recorder(tmp_path / "h.mcap", [_eeg_info()], chunk_period_s=0.02)
    for k in range(10):
        rec.write_block(_block(k))
        time.sleep(0.01)
    body = {"streams": {}, "cpu_percent": 1.0, "recorder": rec.status,
            "storage": rec.storage()}
    rec.close()
    assert body["storage"]["disk_free_mb"] > 0 and body["storage"]["hours_left"] is not None
    assert validate("health", Envelope("r1").wrap("health", body)) == []
    body["storage"] = {"write_bytes_per_s": "fast"}
    assert validate("health", Envelope("r1").wrap("health", body))  # a wrong one is caught


def test_lossless_coder_benchmark_reports_every_coder_or_why_it_did_not_open(capsys) -> None:
    from hil.benchmarks import lossless_coders

    assert lossless_coders.main(["--width", "160", "--height", "120", "--frames", "8",
                                 "--only", "ffv1,x264-ultrafast", "--json"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(got) == {"ffv1", "x264-ultrafast"}
    for r in got.values():
        assert r["ratio"] > 1.0 and r["cpu_ms_per_frame"] > 0, r


def test_a_face_store_replays_whole_frames_at_full_rate_with_the_face_bit_exact(
        tmp_path: Path, sim_frames) -> None:
    """What `--replay` plays of a field recording: every frame, the face region as
    recorded pasted on the newest context frame; the context instants whole and exact."""
    from edge.recording.format import iter_full_rate_frames

    frames, box = sim_frames
    _record(tmp_path / "f.mcap", frames, "face", face_box=lambda: tuple(map(float, box)))
    r = open_recording(tmp_path / "f.mcap")
    context = {f.seq for f in r.context}
    faces = {im.header.seq: im.header for im in r.faces}
    by_seq = {f.seq: f for f in frames}
    played = list(iter_full_rate_frames(tmp_path / "f.mcap"))
    assert [f.seq for f in played] == [f.seq for f in frames]  # 200 fps, not 20
    for f in played:
        src, hd = by_seq[f.seq], faces[f.seq]
        assert f.luma.shape == (H, W) and f.t_ns == src.t_ns and f.trigger == src.trigger
        region = (slice(hd.y, hd.y + hd.height), slice(hd.x, hd.x + hd.width))
        np.testing.assert_array_equal(f.luma[region], src.luma[region])
        if f.seq in context:
            np.testing.assert_array_equal(f.luma, src.luma)
    assert context and min(context) == frames[0].seq  # no mid-grey frame was needed


def test_a_lossless_store_replays_its_frames_as_recorded(tmp_path: Path, sim_frames) -> None:
    from edge.recording.format import iter_full_rate_frames

    frames, _ = sim_frames
    _record(tmp_path / "l.mcap", frames, "lossless")
    played = list(iter_full_rate_frames(tmp_path / "l.mcap"))
    assert [f.seq for f in played] == [f.seq for f in frames]
    for f, src in zip(played, frames, strict=True):
        np.testing.assert_array_equal(f.luma, src.luma)
