"""The publisher: outbox -> paho, with a retained status, a will, and commands.

State lives here, outside paho's callbacks: callbacks only set flags and push acks or
commands into queues. Each connection gets a fresh paho client, so paho's in-memory
queue never re-sends anything behind the outbox's back: after a reconnect the outbox
is replayed from its oldest unacknowledged row, in order. A message may then arrive
twice (its PUBACK was lost with the connection): subscribers deduplicate on ``msg_id``,
which makes delivery exactly-once after deduplication.

QoS 0 kinds (vitals, health) are sent only while connected and counted as dropped
otherwise: they are superseded within a second anyway.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.mqtt import messages
from edge.mqtt.commands import CommandHandler
from edge.mqtt.outbox import Outbox

log = logging.getLogger(__name__)

ACK_FLUSH_NS = 50_000_000  # longest an acked row waits for its batched delete
SERVE_GATHER_S = 0.002  # shortest send cycle: adds at most this much latency


@dataclass(frozen=True)
class MqttSettings:
    host: str = "localhost"
    port: int = 1883
    protocol: str = "5"  # or "3.1.1"
    keepalive_s: int = 30
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    credentials_file: str = ""  # "username:password" on the first line, or two lines
    outbox: str = "outbox.sqlite"
    window: int = 64  # QoS 1 messages in flight at once
    reconnect_max_s: float = 5.0

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> MqttSettings:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in section.items() if k in known})


def read_credentials(path: str) -> tuple[str, str]:
    """Username and password from a file (never from the command line)."""
    lines = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{path}: empty credentials file")
    if len(lines) == 1 and ":" in lines[0]:
        user, _, pw = lines[0].partition(":")
        return user, pw
    if len(lines) >= 2:
        return lines[0], lines[1]
    raise ValueError(f"{path}: expected 'user:password' or two lines")


def secure_client(client: mqtt.Client, tls: bool, ca_file: str, cert_file: str,
                  key_file: str, credentials_file: str) -> None:
    """TLS (server checked against ``ca_file`` or the system store, optional client
    certificate) and username/password from ``credentials_file``, each where configured."""
    if tls:
        ctx = ssl.create_default_context(cafile=ca_file or None)
        if cert_file:
            ctx.load_cert_chain(cert_file, key_file or None)
        client.tls_set_context(ctx)
    if credentials_file:
        client.username_pw_set(*read_credentials(credentials_file))


@dataclass
class PublisherCounters:
    connects: int = 0
    disconnects: int = 0
    sent: int = 0
    acked: int = 0
    qos0_sent: int = 0
    qos0_dropped: int = 0
    commands: int = 0
    commands_rejected: int = 0
    last_error: str = ""
    extra: dict[str, int] = field(default_factory=dict)


class Publisher:
    """Publishes a rig's messages; start() returns at once, delivery runs in a thread."""

    def __init__(self, settings: MqttSettings, rig_id: str, status: dict[str, Any],
                 on_command: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
                 envelope: messages.Envelope | None = None) -> None:
        self.settings = settings
        self.rig_id = rig_id
        self.envelope = envelope or messages.Envelope(rig_id)
        self.outbox = Outbox(settings.outbox)
        self.counters = PublisherCounters()
        self._status = dict(status)
        self._commands = CommandHandler(on_command)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._connected = threading.Event()
        self._attempt_over = threading.Event()  # connected, refused or closed before CONNACK
        self._acked_mids: deque[int] = deque()
        self._incoming: deque[bytes] = deque(maxlen=256)
        self._client: mqtt.Client | None = None
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)

    # -- what the rig calls ----------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        self._thread.start()

    def publish(self, kind: str, body: dict[str, Any], t_ns: int | None = None) -> str:
        """Stamp, and either commit to the outbox (QoS 1) or send now (QoS 0)."""
        payload = self.envelope.wrap(kind, body, t_ns)
        data = messages.encode(payload)
        topic = messages.topic(self.rig_id, kind)
        if messages.QOS.get(kind, 1) == 1:
            self.outbox.put(topic, data, 1)
            self._wake.set()
        else:
            client = self._client
            if client is not None and self.connected:
                client.publish(topic, data, qos=0)
                self.counters.qos0_sent += 1
            else:
                self.counters.qos0_dropped += 1
        return str(payload["msg_id"])

    def publish_many(self, kind: str, bodies: list[dict[str, Any]],
                     t_ns: int | None = None) -> list[str]:
        """A burst of one QoS 1 kind committed in one transaction (one fsync, not N);
        as durable as ``publish``: every message is on disk when this returns."""
        if messages.QOS.get(kind, 1) != 1:
            return [self.publish(kind, b, t_ns) for b in bodies]
        payloads = [self.envelope.wrap(kind, b, t_ns) for b in bodies]
        topic = messages.topic(self.rig_id, kind)
        self.outbox.put_many([(topic, messages.encode(p), 1) for p in payloads])
        self._wake.set()
        return [str(p["msg_id"]) for p in payloads]

    def update_status(self, **fields: Any) -> None:
        """Change the retained online status (e.g. recording on/off) and republish."""
        self._status.update(fields)
        client = self._client
        if client is not None and self.connected:
            self._publish_status(client, "online")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Clean shutdown: drain what the outbox can send, say offline, disconnect."""
        deadline = time.monotonic() + timeout_s
        while self.connected and len(self.outbox) and time.monotonic() < deadline:
            time.sleep(0.02)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=max(deadline - time.monotonic(), 1.0))
        self.outbox.close()

    # -- the connection loop ---------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        s = self.settings
        proto = mqtt.MQTTv5 if s.protocol == "5" else mqtt.MQTTv311
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=proto,
                             client_id=f"mmme-{self.rig_id}")
        client.max_inflight_messages_set(s.window)
        client.max_queued_messages_set(0)
        secure_client(client, s.tls, s.ca_file, s.cert_file, s.key_file, s.credentials_file)
        will = messages.encode(self.envelope.wrap("status", {**self._status, "state": "offline",
                                                             "reason": "connection lost"}))
        client.will_set(messages.topic(self.rig_id, "status"), will, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: mqtt.Client, _u: Any, _flags: Any, reason: Any,
                    _props: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            self.counters.last_error = f"connect refused: {reason}"
            self._attempt_over.set()
            return
        client.subscribe(messages.topic(self.rig_id, "cmd"), qos=1)
        self._publish_status(client, "online")
        self.counters.connects += 1
        self._connected.set()
        self._attempt_over.set()
        self._wake.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _flags: Any, reason: Any,
                       _props: Any = None) -> None:
        if not self._attempt_over.is_set():
            # e.g. the broker dropped the TLS session for want of a client certificate
            self.counters.last_error = f"connection closed before CONNACK: {reason}"
            self._attempt_over.set()
        self._connected.clear()
        self.counters.disconnects += 1
        self._wake.set()

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, reason: Any = None,
                    _props: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            # e.g. the broker's ACL refuses the topic: resending cannot help, so count it
            refused = self.counters.extra.get("publish_refused", 0) + 1
            self.counters.extra["publish_refused"] = refused
            self.counters.last_error = f"publish refused: {reason}"
        self._acked_mids.append(mid)
        self._wake.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._incoming.append(bytes(msg.payload))
        self._wake.set()

    def _publish_status(self, client: mqtt.Client, state: str) -> None:
        body = {**self._status, "state": state}
        payload = messages.encode(self.envelope.wrap("status", body))
        client.publish(messages.topic(self.rig_id, "status"), payload, qos=1, retain=True)

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                client = self._make_client()
            except (OSError, ValueError) as exc:  # unreadable CA, key or credentials file
                self.counters.last_error = f"client setup: {exc}"
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.settings.reconnect_max_s)
                continue
            self._client = client
            self._attempt_over.clear()
            try:
                client.connect(self.settings.host, self.settings.port,
                               keepalive=self.settings.keepalive_s)
            except (OSError, ssl.SSLError) as exc:
                self.counters.last_error = f"connect: {exc}"
                self._client = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.settings.reconnect_max_s)
                continue
            client.loop_start()
            try:
                if self._await_attempt(10.0):
                    backoff = 0.2
                    self._serve(client)
            finally:
                clean = self._stop.is_set() and self.connected
                if clean:
                    self._publish_status(client, "offline")
                    time.sleep(0.1)  # let the offline status leave before DISCONNECT
                client.disconnect()
                client.loop_stop()
                self._connected.clear()
                self._client = None
            if not self._stop.is_set():
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.settings.reconnect_max_s)

    def _await_attempt(self, timeout_s: float) -> bool:
        """True once connected; False on refusal, stop or timeout (no 10 s hang)."""
        deadline = time.monotonic() + timeout_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self._attempt_over.wait(0.05):
                return self.connected
        return self.connected

    def _serve(self, client: mqtt.Client) -> None:
        """Send the outbox in order while connected; forget rows as their PUBACKs come."""
        inflight: dict[int, int] = {}  # paho mid -> outbox row id
        done: list[int] = []  # acknowledged rows not yet deleted from the outbox
        first_done_ns = 0
        last_sent = 0
        while self.connected and not self._stop.is_set():
            self._wake.wait(0.1)
            # Let a burst of publishes and PUBACKs gather: one peek per message would
            # ping-pong the GIL and the outbox lock with the producer's commits.
            time.sleep(SERVE_GATHER_S)
            self._wake.clear()
            self._handle_commands()
            while self._acked_mids:
                row = inflight.pop(self._acked_mids.popleft(), None)
                if row is not None:
                    first_done_ns = first_done_ns if done else time.monotonic_ns()
                    done.append(row)
            # Deleting acked rows in batches saves a commit per PUBACK. A delete lost in
            # a crash only means that row is sent again (subscribers dedupe on msg_id).
            if done and (len(done) >= self.settings.window // 2 or not inflight
                         or time.monotonic_ns() - first_done_ns >= ACK_FLUSH_NS):
                self._forget(done)
                done = []
            room = self.settings.window - len(inflight)
            if room <= 0:
                continue
            for row in self.outbox.peek(last_sent, room):
                info = client.publish(row.topic, row.payload, qos=row.qos)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    break  # connection went away: the row stays and is replayed later
                inflight[info.mid] = row.id
                last_sent = row.id
                self.counters.sent += 1
        # Anything in flight stays in the outbox and is replayed on the next connection.
        self._forget(done)
        self._handle_commands()

    def _forget(self, rows: list[int]) -> None:
        if rows:
            self.outbox.ack(rows)
            self.counters.acked += len(rows)

    def _handle_commands(self) -> None:
        while self._incoming:
            raw = self._incoming.popleft()
            self.counters.commands += 1
            ack = self._commands.handle(raw)
            if not ack["ok"]:
                self.counters.commands_rejected += 1
            self.publish("ack", ack)


def status_body(software_version: str, model_version: str, config_hash: str,
                streams: list[str]) -> dict[str, Any]:
    return {
        "software_version": software_version,
        "model_version": model_version,
        "config_hash": config_hash,
        "streams": streams,
        "recording": False,
    }


__all__ = ["MqttSettings", "Publisher", "json", "read_credentials", "secure_client",
           "status_body"]
