"""systemd integration: sd_notify datagrams on a real AF_UNIX socket, a watchdog that
pets only while every stream flows, and the unit file as systemd-analyze reads it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge import config
from edge.recording.info import info
from edge.service import Notifier, StreamProgress, Watchdog, watchdog_interval_s

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "mmme-edge.service"


class SystemdSide:
    """What systemd holds: the bound notify socket, read without blocking the test."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.05)
        self.lines: list[str] = []

    def drain(self, wait_s: float = 0.0) -> list[str]:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self.lines += self.sock.recv(4096).decode().splitlines()
            except TimeoutError:
                if time.monotonic() >= deadline:
                    return self.lines

    def wait_for(self, line: str, count: int = 1, timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.lines.count(line) < count and time.monotonic() < deadline:
            self.drain(0.05)
        return self.lines.count(line) >= count


@pytest.fixture
def systemd(monkeypatch: pytest.MonkeyPatch) -> Iterator[SystemdSide]:
    # pytest's tmp_path can exceed the 108-byte limit of a socket path: use a short one
    d = tempfile.mkdtemp(prefix="sdn-")
    side = SystemdSide(os.path.join(d, "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", os.path.join(d, "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # pet every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield side
    side.sock.close()
    shutil.rmtree(d, ignore_errors=True)


def _wait(cond, timeout_s: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(cond())


def test_notifier_sends_ready_status_watchdog_and_stopping(systemd: SystemdSide) -> None:
    n = Notifier()
    assert n.enabled
    assert n.ready("3 streams flowing")
    assert n.status("eeg 250 Hz\nhub 100 Hz")  # one STATUS line, whatever the caller sends
    assert n.watchdog()
    assert n.stopping()
    assert systemd.drain(0.2) == ["READY=1", "STATUS=3 streams flowing",
                                  "STATUS=eeg 250 Hz hub 100 Hz", "WATCHDOG=1", "STOPPING=1"]


def test_notifier_reaches_an_abstract_socket() -> None:
    address = f"@mmme-test-{os.getpid()}-{time.monotonic_ns()}"
    side = SystemdSide(address)
    try:
        assert Notifier(address).ready()
        assert side.drain(0.2) == ["READY=1"]
    finally:
        side.sock.close()


def test_without_notify_socket_everything_is_a_quiet_no_op(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled
    assert not n.ready() and not n.watchdog() and not n.status("x") and not n.stopping()
    assert n.sent == 0 and n.last_error == ""


def test_a_vanished_systemd_socket_is_reported_not_raised() -> None:
    n = Notifier("/nonexistent/notify")
    assert not n.watchdog()
    assert "nonexistent" in n.last_error


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process_only() -> None:
    assert watchdog_interval_s({"WATCHDOG_USEC": "10000000"}) == 5.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "10000000",
                                "WATCHDOG_PID": str(os.getpid())}) == 5.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval_s({}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "soon"}) is None


def test_ready_waits_for_flow_and_petting_stops_while_a_stream_stalls(
    systemd: SystemdSide,
) -> None:
    flowing = threading.Event()
    dog = Watchdog(Notifier(), flowing.is_set).start()
    try:
        assert dog.interval_s == pytest.approx(0.1)
        assert _wait(lambda: dog.checks >= 3)
        assert systemd.drain(0.1) == [], "READY or WATCHDOG before any stream flowed"

        flowing.set()
        assert systemd.wait_for("READY=1")
        assert systemd.wait_for("WATCHDOG=1", count=3), "no periodic WATCHDOG=1"
        assert systemd.lines.index("READY=1") < systemd.lines.index("WATCHDOG=1")

        flowing.clear()  # a stream stalls
        seen = dog.checks
        assert _wait(lambda: dog.checks >= seen + 2)  # the watchdog has noticed
        systemd.drain(0.1)
        pets = systemd.lines.count("WATCHDOG=1")
        time.sleep(0.6)  # six intervals in which a healthy rig would have petted
        systemd.drain(0.1)
        assert systemd.lines.count("WATCHDOG=1") == pets, "petted while stalled"
        assert any(ln.startswith("STATUS=stalled") for ln in systemd.lines)

        flowing.set()  # flowing again before systemd gave up: petting resumes
        assert systemd.wait_for("WATCHDOG=1", count=pets + 2)
        assert systemd.lines.count("READY=1") == 1
    finally:
        dog.stop()
    assert systemd.wait_for("STOPPING=1")


def test_a_flow_check_that_raises_counts_as_stalled(systemd: SystemdSide) -> None:
    def broken() -> bool:
        raise RuntimeError("tally gone")

    dog = Watchdog(Notifier(), broken).start()
    try:
        assert _wait(lambda: dog.checks >= 3)
        assert systemd.drain(0.1) == []
    finally:
        dog.stop(status=None)


def test_stream_progress_needs_every_stream_to_advance() -> None:
    counts = {"eeg": 0, "hub": 0}
    flowing = StreamProgress(lambda: counts, ["eeg", "hub"], stall_s=0.2)
    assert not flowing(), "nothing received yet"
    counts.update(eeg=250, hub=100)
    assert flowing()
    time.sleep(0.3)
    counts["eeg"] = 500  # the hub stopped
    assert not flowing()
    assert flowing.stalled() == ["hub"]
    counts["hub"] = 130
    assert flowing()


# -- the unit file -----------------------------------------------------------------------
def _unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_is_a_notify_service_that_keeps_its_devices() -> None:
    s = _unit_settings()
    assert s["Type"] == ["notify"] and s["WatchdogSec"] == ["10"]
    assert s["Restart"] == ["on-failure"]
    assert "PrivateDevices" not in s, "PrivateDevices hides spidev, gpiochip, tty, video"
    assert s["DevicePolicy"] == ["closed"]
    allowed = " ".join(s["DeviceAllow"])
    for dev in ("char-spidev", "char-gpiochip", "char-ttyACM", "char-ttyUSB",
                "char-video4linux", "char-dma_heap", "char-media"):
        assert f"{dev} rw" in allowed, dev
    assert set(s["SupplementaryGroups"][0].split()) >= {"gpio", "spi", "dialout", "video"}
    assert s["ExecStart"][0].endswith("mmme-edge run --config /etc/mmme-edge/rig.toml")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # verify insists the ExecStart binary exists: point it at a stand-in executable
    exe = tmp_path / "mmme-edge"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    text = UNIT.read_text()
    start = _unit_settings()["ExecStart"][0].split()[0]
    unit = tmp_path / "mmme-edge.service"
    unit.write_text(text.replace(start, str(exe)))
    res = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                         text=True, timeout=60)
    problems = [ln for ln in (res.stdout + res.stderr).splitlines()
                if "mmme-edge.service" in ln]
    assert res.returncode == 0 and not problems, res.stdout + res.stderr


def test_systemctl_stop_finishes_the_recording_and_the_summary(tmp_path: Path) -> None:
    """SIGTERM to the whole control group, as ``systemctl stop`` sends it: the rig stops
    cleanly (exit 0, summary, footer written) and its child processes (direct-mode EEG
    acquisition, the camera's sensor) wait for it instead of dying first."""
    text = config.example_path("sim").read_text().replace(
        'eeg_link = "bridge"', 'eeg_link = "spi"\ncamera_process = true')
    cfg = tmp_path / "rig.toml"
    cfg.write_text(text)
    d = tempfile.mkdtemp(prefix="sdn-")
    side = SystemdSide(os.path.join(d, "notify"))
    env = {**os.environ, "NOTIFY_SOCKET": os.path.join(d, "notify")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "--sim", "--config", str(cfg), "--json",
         "--quiet", "--record-dir", str(tmp_path / "rec")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True, cwd=REPO)
    try:
        assert side.wait_for("READY=1", timeout_s=60), side.lines  # every stream flows
        time.sleep(2.0)
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        told = side.drain(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        side.sock.close()
        shutil.rmtree(d, ignore_errors=True)
    assert proc.returncode == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["errors"] == [], summary["errors"]
    assert "STOPPING=1" in told
    rec = info(summary["recording"])
    assert rec["complete"], rec["segments"]
    for name in ("eeg", "hub"):  # everything drained was recorded
        assert rec["streams"][name]["samples"] == summary["streams"][name]["received"] > 1000
