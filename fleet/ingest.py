"""``mmme-fleet ingest``: every rig's results from MQTT 5 into PostgreSQL.

One worker is one MQTT client in a shared subscription group (``$share/<group>/...``):
the broker splits the messages among the group's workers, so more workers carry more
rigs, on Mosquitto or on a clustered broker (EMQX, HiveMQ, VerneMQ) alike.

Delivery: a QoS 1 message is acknowledged (paho's ``manual_ack``) only after the
transaction holding its row has committed. A worker killed mid-batch has acknowledged
nothing of that batch; its session is persistent (fixed client id, ``clean_start``
off, a session expiry), so the broker keeps what it had sent and queued for it and
hands it over again when the worker comes back. Rows are idempotent on ``msg_id``
(``ON CONFLICT DO NOTHING``), so a redelivered message is harmless: every QoS 1 result
is in the database exactly once. QoS 0 kinds (vitals, health) are what the rig calls
superseded within a second; they are stored as they come.

A payload that is not JSON, fails its JSON Schema, names another rig than its topic, or
has a time outside the retention goes to ``quarantine`` with the reason, in the same
transaction, and is acknowledged like any other: nothing is dropped silently.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge.mqtt import messages
from edge.mqtt.publisher import secure_client
from fleet import db

log = logging.getLogger(__name__)

KINDS = tuple(db.TABLES)  # what the fleet stores (not cmd/ack)
MAINTENANCE_S = 3600.0  # partitions ahead and retention, once an hour
RETIRE_QUIET_S = 1.0  # a retiring worker leaves after this long with nothing coming in


@dataclass(frozen=True)
class IngestSettings:
    dsn: str
    host: str = "localhost"
    port: int = 1883
    group: str = "mmme-fleet"
    worker_id: str = "w0"  # fixed per worker: its broker session survives a restart
    batch_max: int = 500
    # Longest a message waits for more to join its batch. Short: under load the batches
    # fill by themselves while the previous one commits (up to batch_max).
    batch_wait_s: float = 0.005
    receive_maximum: int = 1000  # QoS 1 messages the broker may have unacked with us
    session_expiry_s: int = 7 * 24 * 3600  # how long the broker keeps a dead worker's queue
    retention_days: int = 365
    partitions_ahead_days: int = 2
    keepalive_s: int = 30
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    credentials_file: str = ""

    @property
    def client_id(self) -> str:
        return f"mmme-fleet-{self.group}-{self.worker_id}"


@dataclass
class IngestCounters:
    received: int = 0
    inserted: int = 0
    duplicates: int = 0  # redelivered: already in the table
    quarantined: int = 0
    batches: int = 0
    acked: int = 0
    db_errors: int = 0
    connects: int = 0
    last_error: str = ""


class Stopping(Exception):
    """Asked to stop while the database was away."""


@dataclass(frozen=True)
class Incoming:
    generation: int  # which MQTT connection it came on: a mid is only valid on that one
    mid: int
    qos: int
    topic: str
    raw: bytes


@dataclass
class Sorted:
    """One batch sorted into rows per kind and quarantined messages."""

    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    quarantine: list[tuple[str, str, bytes, str]] = field(default_factory=list)
    days: set[date] = field(default_factory=set)


def accepted_days(retention_days: int, ahead_days: int, now: datetime | None = None
                  ) -> tuple[date, date]:
    today = (now or datetime.now(timezone.utc)).date()
    return today - timedelta(days=retention_days), today + timedelta(days=ahead_days)


def classify(topic: str, raw: bytes, first_day: date, last_day: date
             ) -> tuple[str, tuple[Any, ...]] | str:
    """(kind, row) for a good message; the reason, as text, for a bad one."""
    parts = topic.split("/")
    if len(parts) < 4 or "/".join(parts[:2]) != messages.PREFIX:
        return f"topic {topic!r} is not under {messages.PREFIX}/<rig_id>/"
    rig_id, kind = parts[2], "/".join(parts[3:])
    if kind not in db.TABLES:
        return f"kind {kind!r} is not stored by the fleet"
    try:
        text = raw.decode("utf-8")
        payload = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"not JSON: {exc}"
    if not isinstance(payload, dict):
        return f"not a JSON object: {type(payload).__name__}"
    errors = messages.validate(kind, payload)
    if errors:
        return "schema: " + "; ".join(errors[:5])
    if payload["rig_id"] != rig_id:
        return f"rig_id {payload['rig_id']!r} differs from the topic's {rig_id!r}"
    try:
        row = db.row_for(kind, payload, text)
    except (KeyError, TypeError, ValueError) as exc:
        return f"unreadable field: {type(exc).__name__}: {exc}"
    day = row[4].astimezone(timezone.utc).date()
    if not first_day <= day <= last_day:
        return (f"wall_time {payload['wall_time']} outside the accepted days "
                f"{first_day}..{last_day} (retention, or a rig clock not set)")
    return kind, row


def sort_batch(batch: list[Incoming], first_day: date, last_day: date) -> Sorted:
    out = Sorted()
    for m in batch:
        got = classify(m.topic, m.raw, first_day, last_day)
        if isinstance(got, str):
            out.quarantine.append((db.digest(m.topic, m.raw), m.topic, m.raw, got))
            continue
        kind, row = got
        out.rows.setdefault(kind, []).append(row)
        out.days.add(row[4].astimezone(timezone.utc).date())
    return out


class IngestWorker:
    """One worker: an MQTT client feeding a batch writer thread. ``run`` blocks."""

    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self.counters = IngestCounters()
        self._queue: queue.Queue[Incoming] = queue.Queue(maxsize=4 * settings.receive_maximum)
        self._stop = threading.Event()
        self._generation = 0
        self._client: mqtt.Client | None = None
        self._conn: psycopg.Connection | None = None
        self._partitions: set[tuple[str, date]] = set()
        self._next_maintenance = 0.0
        self._retire = False
        self.ready = threading.Event()  # migrated and subscribed

    # -- database --------------------------------------------------------------------------
    def _connect_db(self) -> psycopg.Connection:
        backoff = 0.2
        while True:
            try:
                conn = psycopg.connect(self.settings.dsn, connect_timeout=5)
                conn.autocommit = True  # explicit transactions only (conn.transaction())
                return conn
            except psycopg.OperationalError as exc:
                self.counters.db_errors += 1
                self.counters.last_error = f"database: {exc}".strip()
                if self._stop.wait(backoff):
                    raise Stopping from exc
                backoff = min(backoff * 2, 5.0)

    def _maintain(self, conn: psycopg.Connection) -> None:
        s = self.settings
        today = datetime.now(timezone.utc).date()
        days = {today + timedelta(days=i) for i in range(-1, s.partitions_ahead_days + 1)}
        db.ensure_partitions(conn, days, self._partitions)
        for name in db.drop_expired(conn, s.retention_days, today):
            log.info("retention: dropped partition %s", name)
            self._partitions = {p for p in self._partitions
                                if db.partition_name(*p) != name}
        self._next_maintenance = time.monotonic() + MAINTENANCE_S

    def _write(self, batch: list[Incoming]) -> None:
        """One transaction for the whole batch; raises OperationalError if the DB is gone."""
        conn = self._conn
        assert conn is not None
        s = self.settings
        first_day, last_day = accepted_days(s.retention_days, s.partitions_ahead_days)
        sorted_ = sort_batch(batch, first_day, last_day)
        db.ensure_partitions(conn, sorted_.days, self._partitions)
        try:
            with conn.transaction(), conn.cursor() as cur:
                counts = self._insert(cur, sorted_)
            self._count(*counts)
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            # A row the schema let through but PostgreSQL refuses (e.g. \u0000 in jsonb):
            # retry one message per savepoint so only the culprit goes to quarantine.
            log.warning("batch refused (%s): retrying message by message", exc)
            self._write_one_by_one(conn, batch, first_day, last_day)
        self.counters.batches += 1

    @staticmethod
    def _insert(cur: psycopg.Cursor, sorted_: Sorted) -> tuple[int, int, int]:
        """(inserted, duplicates, quarantined); counted by the caller once committed."""
        inserted = duplicates = 0
        for kind, rows in sorted_.rows.items():
            cur.executemany(db.TABLES[kind].sql(), rows)  # rowcount: the sum over rows
            new = max(cur.rowcount, 0)
            inserted += new
            duplicates += len(rows) - new
        if sorted_.quarantine:
            cur.executemany(db.QUARANTINE_SQL, sorted_.quarantine)
        return inserted, duplicates, len(sorted_.quarantine)

    def _count(self, inserted: int, duplicates: int, quarantined: int) -> None:
        self.counters.inserted += inserted
        self.counters.duplicates += duplicates
        self.counters.quarantined += quarantined

    def _write_one_by_one(self, conn: psycopg.Connection, batch: list[Incoming],
                          first_day: date, last_day: date) -> None:
        totals = [0, 0, 0]
        with conn.transaction(), conn.cursor() as cur:
            for m in batch:
                one = sort_batch([m], first_day, last_day)
                try:
                    with conn.transaction():
                        counts = self._insert(cur, one)
                except psycopg.OperationalError:
                    raise
                except psycopg.Error as exc:
                    cur.execute(db.QUARANTINE_SQL, (db.digest(m.topic, m.raw), m.topic, m.raw,
                                                    f"database refused: {exc}".strip()))
                    counts = (0, 0, 1)
                totals = [a + b for a, b in zip(totals, counts, strict=True)]
        self._count(*totals)

    # -- MQTT ------------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=s.client_id,
                             protocol=mqtt.MQTTv5, manual_ack=True)
        client.reconnect_delay_set(0.2, 5)
        secure_client(client, s.tls, s.ca_file, s.cert_file, s.key_file, s.credentials_file)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: Any,
                    _props: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            self.counters.last_error = f"broker refused: {reason}"
            return
        self._generation += 1
        self.counters.connects += 1
        opts = SubscribeOptions(qos=1)
        client.subscribe([(f"$share/{self.settings.group}/{messages.PREFIX}/+/{k}", opts)
                          for k in KINDS])

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, reasons: Any,
                      _props: Any = None) -> None:
        refused = [r for r in reasons if getattr(r, "is_failure", False)]
        if refused:
            self.counters.last_error = f"subscription refused: {refused}"
            log.error("subscription refused by the broker: %s", refused)
        self.ready.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _flags: Any, reason: Any,
                       _props: Any = None) -> None:
        self.counters.last_error = f"broker: disconnected ({reason})"

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        # Blocks paho's thread when the writer is behind: back-pressure, never a drop.
        self._queue.put(Incoming(self._generation, msg.mid, msg.qos, msg.topic,
                                 bytes(msg.payload)))

    def _gather(self) -> list[Incoming]:
        try:
            batch = [self._queue.get(timeout=0.2)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.settings.batch_wait_s
        while len(batch) < self.settings.batch_max:
            left = deadline - time.monotonic()
            try:
                batch.append(self._queue.get(timeout=left) if left > 0
                             else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _ack(self, batch: list[Incoming]) -> None:
        client = self._client
        if client is None:
            return
        for m in batch:
            # A mid from an earlier connection means nothing now: the broker resends
            # that message on the new connection and it is acknowledged then.
            if m.qos > 0 and m.generation == self._generation:
                client.ack(m.mid, m.qos)
                self.counters.acked += 1

    # -- lifecycle -------------------------------------------------------------------------
    def stop(self, retire: bool = False) -> None:
        """Stop after the batch in hand. ``retire``: this worker id leaves for good."""
        self._retire = retire
        self._stop.set()

    def _step(self) -> int:
        batch = self._gather()
        self.counters.received += len(batch)
        if batch:
            self._write_until_done(batch)
            self._ack(batch)
        if time.monotonic() >= self._next_maintenance:
            self._retry_db(lambda: self._maintain(self._conn))
        return len(batch)

    def _retire_session(self, client: mqtt.Client) -> None:
        """Hand the group's share over, store what was already ours, end the session.

        A stopped worker's session keeps receiving its share of the group's messages
        until it expires (the broker queues them for it); one that will not come back
        unsubscribes first, drains what it holds, then disconnects with a session expiry
        of 0, so the broker holds nothing for it afterwards.
        """
        client.unsubscribe([f"$share/{self.settings.group}/{messages.PREFIX}/+/{k}"
                            for k in KINDS])
        quiet_since, deadline = time.monotonic(), time.monotonic() + 60.0
        while time.monotonic() - quiet_since < RETIRE_QUIET_S and time.monotonic() < deadline:
            if self._step():
                quiet_since = time.monotonic()
        props = Properties(PacketTypes.DISCONNECT)
        props.SessionExpiryInterval = 0
        client.disconnect(properties=props)

    def run(self) -> IngestCounters:
        s = self.settings
        try:
            self._conn = self._connect_db()
        except Stopping:  # asked to stop before the database ever answered
            return self.counters
        db.migrate(self._conn)
        self._maintain(self._conn)
        client = self._make_client()
        self._client = client
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = s.session_expiry_s
        props.ReceiveMaximum = s.receive_maximum
        client.connect_async(s.host, s.port, keepalive=s.keepalive_s, clean_start=False,
                             properties=props)
        client.loop_start()
        retired = False
        try:
            while not self._stop.is_set():
                self._step()
            if self._retire:
                self._stop.clear()  # the database may still be waited for while draining
                self._retire_session(client)
                retired = True
        except Stopping:
            pass
        finally:
            if not retired:
                client.disconnect()
            client.loop_stop()
            if self._conn is not None:
                self._conn.close()
        return self.counters

    def _write_until_done(self, batch: list[Incoming]) -> None:
        self._retry_db(lambda: self._write(batch))

    def _retry_db(self, step: Any) -> None:
        """Run ``step`` until it commits, reconnecting through a database outage."""
        while True:
            try:
                step()
                return
            except psycopg.OperationalError as exc:
                self.counters.db_errors += 1
                self.counters.last_error = f"database: {exc}".strip()
                log.warning("database: %s; reconnecting", exc)
                if self._conn is not None:
                    self._conn.close()
                if self._stop.wait(0.5):
                    raise Stopping from exc  # nothing of this batch was acknowledged
                self._conn = self._connect_db()
                self._partitions.clear()

    def summary(self) -> dict[str, Any]:
        return asdict(self.counters)
