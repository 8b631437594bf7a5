"""Recordings home, against a real sshd on a loopback port and real rsync: only finished
segments leave, a cut transfer resumes from what arrived, the server's checksum must
match before anything is deleted, and deletion waits for the disk's low-water mark."""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from fleet_sshd import Sshd
from mcap.writer import CompressionType, Writer

from edge.mqtt import messages
from fleet.offload import (
    PARTIAL_DIR,
    Offloader,
    OffloadSettings,
    read_state,
    sha256_file,
    sidecar,
)
from fleet.synthetic import health_body

MB = 2**20


@pytest.fixture(scope="module")
def sshd() -> Iterator[Sshd]:
    with Sshd() as s:
        yield s


def write_segment(path: Path, size_b: int, finish: bool = True) -> Path:
    """An MCAP segment of incompressible data; unfinished: no footer, no closing magic."""
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "wb")  # noqa: SIM115 (kept open for an unfinished segment)
    w = Writer(f, compression=CompressionType.NONE, chunk_size=4 * MB)
    w.start(profile="mmme", library="test")
    ch = w.register_channel("/blob", "application/octet-stream", w.register_schema("b", "", b""))
    block = 4 * MB
    for i in range(max(size_b // block, 1)):
        w.add_message(ch, log_time=i, publish_time=i, data=os.urandom(block))
    if finish:
        w.finish()
    f.close()
    return path


def settings_for(sshd: Sshd, server: Path, **kw: object) -> OffloadSettings:
    return OffloadSettings(dest=f"{sshd.user}@127.0.0.1:{server}", port=sshd.port,
                           identity_file=str(sshd.client_key),
                           known_hosts=str(sshd.known_hosts), timeout_s=20,
                           **kw)  # type: ignore[arg-type]


def test_only_finished_segments_queue_with_a_checksum_beside_them(tmp_path: Path) -> None:
    rig = tmp_path / "rig"
    done = write_segment(rig / "ses01" / "a.mcap", MB)
    writing = write_segment(rig / "ses01" / "a.seg001.mcap", MB, finish=False)
    crashed = write_segment(rig / "ses00" / "old.mcap", MB, finish=False)
    os.utime(crashed, (time.time() - 7200, time.time() - 7200))
    busy = write_segment(rig / "ses02" / "b.mcap", MB)  # finished, but the recorder says busy
    off = Offloader(OffloadSettings(dest="x@h:/srv", stale_s=3600), rig,
                    in_progress=lambda: {busy})
    assert off.queue() == [crashed, done]
    assert off.checksum(done) == sha256_file(done)
    assert sidecar(done, ".sha256").read_text() == f"{sha256_file(done)}  a.mcap\n"
    assert writing not in off.queue() and busy not in off.queue()


def test_cut_midway_resumes_verifies_and_only_then_deletes(sshd: Sshd, tmp_path: Path) -> None:
    rig, server = tmp_path / "rig", tmp_path / "server"
    seg = write_segment(rig / "ses01" / "sub01.mcap", 200 * MB)
    size = seg.stat().st_size
    writing = write_segment(rig / "ses01" / "sub01.seg001.mcap", MB, finish=False)
    off = Offloader(settings_for(sshd, server, bwlimit_kbps=10_000, low_water_mb=0), rig,
                    in_progress=lambda: {writing})
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(off.step()))
    t.start()
    # Cut the link once a good part has gone: kill the ssh under rsync, as a dropped link.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and t.is_alive() and not (
            off.snapshot()["sending"] and off.snapshot()["bytes_left"] <= size - 20 * MB):
        time.sleep(0.05)
    sending = off.snapshot()
    assert sending["sending"] == "sub01.mcap" and sending["bytes_left"] <= size - 20 * MB
    assert off.sending_pid is not None
    ssh = [p for p in psutil.Process(off.sending_pid).children(recursive=True)
           if p.name() == "ssh"]
    assert ssh, "rsync runs no ssh child"
    for p in ssh:
        p.send_signal(signal.SIGKILL)
    t.join(60)
    assert result == [False]
    assert not sidecar(seg, ".verified").exists() and seg.exists()
    # The server keeps what arrived (rsync --partial); nothing is under the final name.
    partial = server / "ses01" / PARTIAL_DIR / "sub01.mcap"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not partial.exists():
        time.sleep(0.05)
    arrived = partial.stat().st_size
    assert arrived >= 10 * MB and not (server / "ses01" / "sub01.mcap").exists()
    assert off.snapshot()["queued"] == 1 and "rsync exit" in off.snapshot()["last_error"]

    # Resume at full speed: only what had not arrived crosses the link again.
    off.settings = dataclasses.replace(off.settings, bwlimit_kbps=0)
    assert off.step() is True
    literal = off.snapshot()["last_literal_bytes"]
    print(f"segment {size} B, arrived before the cut {arrived} B, resent {literal} B")
    assert 0 <= literal <= size - arrived + 4 * MB, (literal, size, arrived)
    assert sha256_file(server / "ses01" / "sub01.mcap") == sha256_file(seg)
    state = off.snapshot()
    assert state["queued"] == 0 and state["verified"] == 1 and state["bytes_left"] == 0
    written = read_state(rig)
    assert written is not None and 0 <= written.pop("age_s") < 60 and written == state
    health = messages.Envelope("rig-01").wrap("health", {**health_body(random.Random(0)),
                                                         "offload": state})
    assert messages.validate("health", health) == []

    # Verified, but the disk is above low water: the segment stays on the rig.
    off.settings = dataclasses.replace(off.settings, low_water_mb=1000)
    assert off.reclaim(free_mb=lambda: 10_000.0) == [] and seg.exists()
    # Under low water: the verified segment goes; the one being written never does.
    assert off.reclaim(free_mb=lambda: 0.0) == [seg]
    assert not seg.exists() and writing.exists() and sidecar(seg, ".verified").exists()


def test_a_wrong_copy_at_the_server_is_not_verified_and_not_deleted(
        sshd: Sshd, tmp_path: Path) -> None:
    rig, server = tmp_path / "rig", tmp_path / "server"
    seg = write_segment(rig / "a.mcap", 2 * MB)
    off = Offloader(settings_for(sshd, server, low_water_mb=1e12), rig)
    off.checksum(seg)
    assert off.send(seg)
    with open(server / "a.mcap", "r+b") as f:  # the server's disk flipped a byte
        f.seek(1000)
        f.write(b"\x00" if f.read(1) != b"\x00" else b"\x01")
    assert off.verify(seg) is False
    assert "server has sha256" in off.snapshot()["last_error"]
    assert off.reclaim() == [] and seg.exists()


def test_changed_after_verification_is_sent_again_not_deleted(
        sshd: Sshd, tmp_path: Path) -> None:
    rig, server = tmp_path / "rig", tmp_path / "server"
    seg = write_segment(rig / "a.mcap", 2 * MB)
    assert Offloader(settings_for(sshd, server, low_water_mb=0), rig).step() is True
    with open(seg, "r+b") as f:  # rewritten in place after the server confirmed it
        f.seek(1000)
        f.write(b"\x00" if f.read(1) != b"\x00" else b"\x01")
    off = Offloader(settings_for(sshd, server, low_water_mb=1e12), rig)
    assert off.reclaim() == [] and seg.exists()
    assert off.queue() == [seg]


def test_cli_offload_once_ships_every_finished_segment(sshd: Sshd, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    rig, server = tmp_path / "rig", tmp_path / "server"
    segs = [write_segment(rig / "ses01" / f"s{i}.mcap", MB) for i in range(3)]
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-m", "fleet.cli", "offload", str(rig),
         "--dest", f"{sshd.user}@127.0.0.1:{server}", "--ssh-port", str(sshd.port),
         "--identity-file", str(sshd.client_key), "--known-hosts", str(sshd.known_hosts),
         "--low-water-mb", "0", "--once", "--json"],
        capture_output=True, text=True, timeout=120, cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)})
    assert out.returncode == 0, out.stderr[-2000:]
    state = json.loads(out.stdout.strip().splitlines()[-1])
    assert state["queued"] == 0 and state["verified"] == 3 and state["deleted"] == 0
    for s in segs:
        assert sha256_file(server / "ses01" / s.name) == sha256_file(s)


def test_the_state_says_how_old_it_is(tmp_path: Path) -> None:
    off = Offloader(OffloadSettings(dest="x@h:/srv"), tmp_path)
    assert read_state(tmp_path) is None  # no offloader ever ran here
    off.write_state()
    now = time.time()
    assert read_state(tmp_path, now_wall_s=now)["age_s"] < 5  # type: ignore[index]
    assert read_state(tmp_path, now_wall_s=now + 600)["age_s"] >= 595  # type: ignore[index]
