"""The real rig process on MQTT: status, vitals and health arrive; commands on its cmd
topic start and stop recordings, set the session, insert markers, and bad ones are
refused with an error ack while the rig keeps running."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge import config
from edge.mqtt import messages
from hil.broker import Broker
from hil.subscriber import Collector

RIG = "cmd-rig"


def _config(tmp: Path, port: int) -> Path:
    text = config.example_path("sim").read_text()
    text = text.replace('[mqtt]\nenabled = false\nhost = "localhost"\nport = 1883',
                        f'[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {port}\n'
                        f'outbox = "{tmp}/outbox.sqlite"')
    path = tmp / "rig.toml"
    path.write_text(text.replace('id = "sim-01"', f'id = "{RIG}"'))
    return path


def _send(port: int, payload: bytes) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(f"mmme/v1/{RIG}/cmd", payload, qos=1).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()


def _ack_for(sub: Collector, cmd_id: str | None, n_before: int, timeout_s: float = 15) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        acks = sub.of("ack")[n_before:]
        for a in acks:
            if a.get("cmd_id") == cmd_id:
                return a
        time.sleep(0.05)
    raise AssertionError(f"no ack for {cmd_id}: {sub.of('ack')}")


def test_commands_drive_the_running_rig(tmp_path: Path) -> None:
    with Broker() as b:
        sub = Collector(b.port, f"mmme/v1/{RIG}/#", client_id="cmd-dash").start()
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "--sim", "--config",
             str(_config(tmp_path, b.port)), "--json", "--quiet",
             "--record-dir", str(tmp_path / "rec")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            status = sub.wait_for("status", 1, 30)
            assert status and status[-1]["state"] == "online" and status[-1]["recording"]
            assert sub.wait_for("vitals", 2, 20), "no vitals"

            def command(body: dict | bytes) -> dict:
                n = len(sub.of("ack"))
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                _send(b.port, raw)
                cmd_id = None if isinstance(body, bytes) else body.get("cmd_id")
                ack = _ack_for(sub, cmd_id, n)
                assert not messages.validate("ack", ack)
                return ack

            assert not command(b"{not json")["ok"]
            assert not command({"cmd_id": "x1", "cmd": "self_destruct"})["ok"]
            assert not command({"cmd_id": "x2", "cmd": "insert_marker",
                                "args": {"code": "ten"}})["ok"]
            again = command({"cmd_id": "c0", "cmd": "start_recording"})
            assert not again["ok"] and "already recording" in again["error"]
            stopped = command({"cmd_id": "c1", "cmd": "stop_recording"})
            assert stopped["ok"] and stopped["result"]["recording"] is False
            assert command({"cmd_id": "c2", "cmd": "set_session",
                            "args": {"session": "ses02", "subject": "s07"}})["ok"]
            started = command({"cmd_id": "c3", "cmd": "start_recording"})
            assert started["ok"] and "s07_ses02" in started["result"]["file"]
            marker = command({"cmd_id": "c4", "cmd": "insert_marker", "args": {"code": 77}})
            assert marker["ok"]
            deadline = time.monotonic() + 10
            while not any(m["code"] == 77 for m in sub.of("markers")):
                assert time.monotonic() < deadline, "inserted marker never published"
                time.sleep(0.05)
            assert sub.of("status")[-1]["recording"] is True
        finally:
            proc.terminate()  # systemctl stop: a clean end, with the summary
            out, err = proc.communicate(timeout=90)
            sub.stop()
        assert proc.returncode == 0, err[-2000:]
        summary = json.loads(out.strip().splitlines()[-1])
        assert len(summary["recordings"]) == 2
        assert all(Path(p).exists() for p in summary["recordings"])
        assert summary["errors"] == []
