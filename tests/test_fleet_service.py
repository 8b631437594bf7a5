"""The fleet as deployed: its systemd units as systemd-analyze reads them, and an ingest
worker behind the example ACL with a password, through its shared subscription."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from edge.mqtt.publisher import MqttSettings, Publisher, status_body
from fleet.cluster import Cluster
from fleet.ingest import IngestSettings, IngestWorker
from fleet.synthetic import me_body
from hil.broker import Broker

REPO = Path(__file__).resolve().parents[1]
UNITS = ("mmme-fleet-ingest@.service", "mmme-fleet-offload.service")
ACL_EXAMPLE = REPO / "systemd" / "mosquitto-acl.example"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_verify_accepts_the_fleet_units(name: str, tmp_path: Path) -> None:
    exe = tmp_path / "mmme-fleet"  # verify insists the ExecStart binary exists
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    text = (REPO / "systemd" / name).read_text()
    assert "/opt/mmme-edge/venv/bin/mmme-fleet" in text
    unit = tmp_path / name.replace("@.", "@w0.")
    unit.write_text(text.replace("/opt/mmme-edge/venv/bin/mmme-fleet", str(exe)))
    res = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                         text=True, timeout=60)
    problems = [ln for ln in (res.stdout + res.stderr).splitlines()
                if re.search(r"mmme-fleet-\w+@?\w*\.service", ln)]
    assert res.returncode == 0 and not problems, res.stdout + res.stderr


@pytest.mark.skipif(not Path(MOSQUITTO_PASSWD).exists(), reason="needs mosquitto_passwd")
def test_ingest_behind_the_example_acl_reads_every_rig(tmp_path: Path) -> None:
    users = {"rig-a": "pw-a", "mmme-fleet": "pw-fleet"}
    passwd = tmp_path / "passwd"
    for i, (user, pw) in enumerate(users.items()):
        flags = ["-c", "-b"] if i == 0 else ["-b"]  # -b: fine for a test, never for real
        subprocess.run([MOSQUITTO_PASSWD, *flags, str(passwd), user, pw], check=True,
                       capture_output=True)
    creds = {}
    for user, pw in users.items():
        creds[user] = tmp_path / f"{user}.cred"
        creds[user].write_text(f"{user}\n{pw}\n")
        creds[user].chmod(0o600)
    conf = f"password_file {passwd}\nacl_file {ACL_EXAMPLE}\n"
    with Cluster() as db, Broker(extra_conf=conf, allow_anonymous=False) as broker:
        worker = IngestWorker(IngestSettings(
            dsn=db.dsn, host="127.0.0.1", port=broker.port, group=f"g{uuid.uuid4().hex[:6]}",
            credentials_file=str(creds["mmme-fleet"])))
        t = threading.Thread(target=worker.run, daemon=True)
        t.start()
        assert worker.ready.wait(20), worker.counters
        pub = Publisher(MqttSettings(host="127.0.0.1", port=broker.port,
                                     outbox=str(tmp_path / "o.sqlite"),
                                     credentials_file=str(creds["rig-a"])),
                        "rig-a", status_body("t", "m", "c", ["eeg"]))
        pub.start()
        try:
            mid = pub.publish("events/me", me_body(__import__("random").Random(0)))
            deadline = time.monotonic() + 20
            rows: list[tuple[str]] = []
            while not rows and time.monotonic() < deadline:
                with psycopg.connect(db.dsn) as conn:
                    rows = conn.execute("SELECT msg_id FROM me_events").fetchall()
                time.sleep(0.1)
        finally:
            pub.stop()
            worker.stop()
            t.join(10)
        assert rows == [(mid,)], worker.counters
        assert "refused" not in worker.counters.last_error


def test_the_rigs_health_carries_the_offload_state_into_the_database(tmp_path: Path) -> None:
    import json
    import sys

    from edge import config
    from fleet.offload import STATE_FILE

    rec = tmp_path / "rec"
    rec.mkdir()
    state = {"queued": 2, "sending": "sub01.seg001.mcap", "verified": 5,
             "bytes_left": 123456789, "deleted": 1, "failures": 0, "last_error": ""}
    (rec / STATE_FILE).write_text(json.dumps(state))  # as `mmme-fleet offload` leaves it
    with Cluster() as db, Broker() as broker:
        text = config.example_path("sim").read_text().replace(
            '[mqtt]\nenabled = false\nhost = "localhost"\nport = 1883',
            f'[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {broker.port}\n'
            f'outbox = "{tmp_path}/outbox.sqlite"')
        assert "enabled = true" in text
        cfg = tmp_path / "rig.toml"
        cfg.write_text(text.replace('id = "sim-01"', 'id = "off-rig"'))
        worker = IngestWorker(IngestSettings(dsn=db.dsn, host="127.0.0.1", port=broker.port,
                                             group="g-health"))
        t = threading.Thread(target=worker.run, daemon=True)
        t.start()
        assert worker.ready.wait(20)
        rig = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "--sim", "--config", str(cfg),
             "--duration", "6", "--json", "--quiet", "--record-dir", str(rec)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        try:
            rig.wait(120)
            deadline = time.monotonic() + 20
            rows: list[tuple[object, ...]] = []
            while not rows and time.monotonic() < deadline:
                with psycopg.connect(db.dsn) as conn:
                    rows = conn.execute("SELECT offload FROM health WHERE rig_id = 'off-rig'"
                                        " AND offload IS NOT NULL").fetchall()
                time.sleep(0.2)
        finally:
            if rig.poll() is None:
                rig.kill()
            worker.stop()
            t.join(10)
        assert rows and rows[-1][0] == state
        assert worker.counters.quarantined == 0
