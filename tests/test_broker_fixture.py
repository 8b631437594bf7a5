"""The suite's own broker: a real Mosquitto on a free loopback port that survives restarts."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from hil.broker import Broker


def _roundtrip(port: int) -> bytes:
    got = threading.Event()
    box: list[bytes] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_message(_c, _u, msg):
        box.append(msg.payload)
        got.set()

    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        c.subscribe("t/x", qos=1)
        c.publish("t/x", b"hello", qos=1).wait_for_publish(5)
        assert got.wait(5)
    finally:
        c.loop_stop()
        c.disconnect()
    return box[0]


def test_private_broker_carries_messages(broker: Broker) -> None:
    assert broker.port != 1883
    assert _roundtrip(broker.port) == b"hello"


def test_broker_restarts_on_the_same_port() -> None:
    with Broker() as b:
        port = b.port
        b.stop()
        b.start()
        assert b.port == port
        assert _roundtrip(port) == b"hello"
