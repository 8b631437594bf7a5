"""A dashboard-like subscriber: collects a rig's messages, deduplicated on ``msg_id``.

It keeps a persistent MQTT session (clean_start False, long session expiry), so
messages published while it was disconnected are queued by the broker for it: the way
a dashboard or a study server should subscribe.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sensors.blocks import monotonic_ns


@dataclass
class Received:
    topic: str
    payload: dict[str, Any] | None  # None: not JSON
    raw: bytes
    t_ns: int  # local CLOCK_MONOTONIC at arrival
    retained: bool


@dataclass
class Collector:
    port: int
    topic_filter: str = "mmme/v1/#"
    client_id: str = "mmme-collector"
    host: str = "127.0.0.1"
    messages: list[Received] = field(default_factory=list)
    duplicates: int = 0
    _seen: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _connected: threading.Event = field(default_factory=threading.Event)
    _client: mqtt.Client | None = None

    def start(self, timeout_s: float = 10.0) -> Collector:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        protocol=mqtt.MQTTv5)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_disconnect = lambda *_a: self._connected.clear()
        c.reconnect_delay_set(0.1, 1.0)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        c.connect_async(self.host, self.port, keepalive=10, clean_start=False, properties=props)
        c.loop_start()
        self._client = c
        if not self._connected.wait(timeout_s):
            raise TimeoutError("collector could not connect")
        return self

    def _on_connect(self, client: mqtt.Client, *_a: Any) -> None:
        client.subscribe(self.topic_filter, qos=1)
        self._connected.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        raw = bytes(msg.payload)
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = None
        msg_id = payload.get("msg_id") if isinstance(payload, dict) else None
        with self._lock:
            if msg_id and not msg.retain:
                if msg_id in self._seen:
                    self.duplicates += 1
                    return
                self._seen.add(msg_id)
            self.messages.append(Received(msg.topic, payload, raw, monotonic_ns(),
                                          bool(msg.retain)))

    def of(self, kind: str) -> list[dict[str, Any]]:
        """Payloads of one kind (``events/me``, ``status``...), in arrival order."""
        with self._lock:
            return [m.payload for m in self.messages
                    if m.topic.endswith("/" + kind) and m.payload is not None]

    def wait_for(self, kind: str, count: int, timeout_s: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.of(kind)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        return self.of(kind)

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
