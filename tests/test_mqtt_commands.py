"""Commands on mmme/v1/<rig>/cmd through a real broker: every bad payload is answered
with a schema-valid error ack, and the rig keeps serving valid commands afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.mqtt import messages
from edge.mqtt.commands import MAX_COMMAND_BYTES, CommandError
from edge.mqtt.publisher import MqttSettings, Publisher, status_body
from hil.broker import Broker
from hil.subscriber import Collector

RIG = "rig-c"
CMD = messages.topic(RIG, "cmd")


class FakeRig:
    """The handler the runtime would pass: records calls, refuses a double start."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.recording = False
        self.buggy = False  # returns a result that is not JSON

    def __call__(self, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((cmd, args))
        if self.buggy:
            return {"not json": object()}
        if cmd == "start_recording":
            if self.recording:
                raise CommandError("already recording")
            self.recording = True
            return {"recording": True}
        if cmd == "set_session":
            return {"session": args["session"], "subject": args["subject"]}
        if cmd == "insert_marker":
            return {"code": args["code"]}
        return {}


@pytest.fixture
def rig(broker: Broker, tmp_path: Path) -> Iterator[tuple[Publisher, FakeRig, Collector, Any]]:
    handler = FakeRig()
    pub = Publisher(MqttSettings(host="127.0.0.1", port=broker.port,
                                 outbox=str(tmp_path / "o.sqlite")),
                    RIG, status_body("test", "none", "cafe", ["eeg"]), on_command=handler)
    # fresh client ids: the Collector keeps a persistent session on the shared broker
    acks = Collector(broker.port, messages.topic(RIG, "ack"),
                     client_id=f"acks-{tmp_path.name}").start()
    status = Collector(broker.port, messages.topic(RIG, "status"),
                       client_id=f"status-{tmp_path.name}").start()
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                         client_id=f"dash-{tmp_path.name}")
    sender.connect("127.0.0.1", broker.port)
    sender.loop_start()
    pub.start()
    try:
        assert status.wait_for("status", 1, 15), "rig not online"
        yield pub, handler, acks, sender
    finally:
        sender.disconnect()
        sender.loop_stop()
        acks.stop()
        status.stop()
        pub.stop()


def _send(sender: Any, payload: bytes) -> None:
    sender.publish(CMD, payload, qos=1).wait_for_publish(10)


def _next_ack(acks: Collector, count: int) -> dict[str, Any]:
    got = acks.wait_for("ack", count, 15)
    assert len(got) >= count, f"no ack #{count}"
    ack = got[count - 1]
    assert messages.validate("ack", ack) == [], ack
    return ack


BAD = {
    "malformed JSON": (b'{"cmd_id": "x1", "cmd": ', "not JSON"),
    "not an object": (b'["start_recording"]', "invalid command"),
    "wrong type of cmd_id": (b'{"cmd_id": 7, "cmd": "start_recording"}', "invalid command"),
    "wrong type of args": (json.dumps({"cmd_id": "x2", "cmd": "insert_marker",
                                       "args": {"code": "seven"}}).encode(), "invalid command"),
    "marker code out of range": (json.dumps({"cmd_id": "x3", "cmd": "insert_marker",
                                             "args": {"code": 256}}).encode(), "invalid command"),
    "unknown command": (b'{"cmd_id": "x4", "cmd": "format_disk"}', "invalid command"),
    "not UTF-8": (b'{"cmd_id": "\xff\xfe", "cmd": "start_recording"}', "not UTF-8"),
    "oversize": (json.dumps({"cmd_id": "x5", "cmd": "set_session", "args": {
        "session": "s", "subject": "p", "pad": "x" * MAX_COMMAND_BYTES}}).encode(), "exceeds"),
    "nested too deeply": (b"[" * 4000, "nested"),
}


def test_every_bad_command_gets_an_error_ack_and_the_rig_keeps_serving(rig: Any) -> None:
    pub, handler, acks, sender = rig
    for n, (name, (payload, why)) in enumerate(BAD.items(), 1):
        _send(sender, payload)
        ack = _next_ack(acks, n)
        assert ack["ok"] is False, name
        assert why in ack["error"], (name, ack["error"])
    assert handler.calls == [], "a bad command reached the handler"
    assert pub.counters.commands_rejected == len(BAD)

    good = [
        ({"cmd_id": "g1", "cmd": "start_recording"}, {"recording": True}),
        ({"cmd_id": "g2", "cmd": "set_session", "args": {"session": "s01", "subject": "p07"}},
         {"session": "s01", "subject": "p07"}),
        ({"cmd_id": "g3", "cmd": "insert_marker", "args": {"code": 42}}, {"code": 42}),
    ]
    for k, (cmd, result) in enumerate(good, len(BAD) + 1):
        _send(sender, json.dumps(cmd).encode())
        ack = _next_ack(acks, k)
        assert (ack["ok"], ack["cmd_id"], ack["cmd"], ack["result"]) == (
            True, cmd["cmd_id"], cmd["cmd"], result)
    assert pub.connected


def test_a_refusal_or_a_handler_bug_is_an_error_ack_not_a_crash(rig: Any) -> None:
    pub, handler, acks, sender = rig
    handler.recording = True  # so start_recording raises CommandError
    _send(sender, b'{"cmd_id": "r1", "cmd": "start_recording"}')
    ack = _next_ack(acks, 1)
    assert (ack["ok"], ack["cmd_id"], ack["error"]) == (False, "r1", "already recording")

    handler.buggy = True
    _send(sender, b'{"cmd_id": "r2", "cmd": "stop_recording"}')
    ack = _next_ack(acks, 2)
    assert (ack["ok"], ack["cmd_id"]) == (False, "r2")
    assert "internal error" in ack["error"]

    handler.buggy = handler.recording = False
    _send(sender, b'{"cmd_id": "r3", "cmd": "start_recording"}')
    assert _next_ack(acks, 3)["ok"] is True
    assert pub.connected
