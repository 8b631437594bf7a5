"""The fleet's ingest against a real PostgreSQL (initdb under a temp dir) and a real
Mosquitto: idempotence, quarantine, migrations, partitions and retention, and no QoS 1
result lost or doubled through a broker outage, an ingest outage, a database outage
and a worker killed in the middle of a batch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.mqtt import messages
from edge.mqtt.publisher import MqttSettings, Publisher, status_body
from fleet import db
from fleet.cluster import Cluster
from fleet.ingest import IngestSettings, IngestWorker
from fleet.synthetic import me_body
from hil.broker import Broker

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Cluster() as c:
        yield c


@pytest.fixture
def dsn(cluster: Cluster) -> str:
    """A fresh database per test on the module's cluster."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(cluster.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return cluster.dsn.replace(f"dbname={cluster.dbname}", f"dbname={name}")


def count(dsn: str, sql: str, *args: object) -> int:
    with psycopg.connect(dsn) as conn:
        return int(conn.execute(sql, args).fetchone()[0])  # type: ignore[index]


class ThreadWorker:
    """An ingest worker in this process (for the tests that do not kill it)."""

    def __init__(self, dsn: str, port: int, group: str, **kw: object) -> None:
        self.worker = IngestWorker(IngestSettings(dsn=dsn, host="127.0.0.1", port=port,
                                                  group=group, **kw))  # type: ignore[arg-type]
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()
        assert self.worker.ready.wait(20), self.worker.counters

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(10)


class ProcWorker:
    """``mmme-fleet ingest`` as its own process, so it can be SIGKILLed."""

    def __init__(self, dsn: str, port: int, group: str, worker_id: str = "w0") -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fleet.cli", "ingest", "--dsn", dsn, "--host", "127.0.0.1",
             "--port", str(port), "--group", group, "--worker-id", worker_id],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=REPO)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        assert line.startswith("ready"), f"worker did not start: {line!r}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)


def rig(port: int, tmp: Path, rig_id: str) -> Publisher:
    pub = Publisher(MqttSettings(host="127.0.0.1", port=port, outbox=str(tmp / f"{rig_id}.db"),
                                 keepalive_s=5),
                    rig_id, status_body("test", "none", "cafe", ["eeg"]))
    pub.start()
    deadline = time.monotonic() + 20  # QoS 0 kinds (vitals, health) go only when connected
    while not pub.connected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pub.connected, pub.counters.last_error
    return pub


def wait_rows(dsn: str, table: str, n: int, timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    got = -1
    while time.monotonic() < deadline:
        got = count(dsn, f"SELECT count(*) FROM {table}")
        if got >= n:
            return got
        time.sleep(0.1)
    return got


def assert_exactly_once(dsn: str, ids: list[str]) -> None:
    with psycopg.connect(dsn) as conn:
        rows = [r[0] for r in conn.execute("SELECT msg_id FROM me_events")]
    assert len(rows) == len(set(rows)), "a msg_id is stored twice"
    missing = set(ids) - set(rows)
    assert not missing, f"{len(missing)} of {len(ids)} results missing"


def raw_client(port: int) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                    client_id=f"raw-{uuid.uuid4().hex[:6]}")
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


# -- migrations, partitions, retention --------------------------------------------------------
def test_migrations_are_versioned_and_applied_once(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        first = db.migrate(conn)
        again = db.migrate(conn)
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert first == [v for v, _, _ in db.migrations()] and first[0] == 1
    assert again == []
    assert versions == first


def test_partitions_made_ahead_and_dropped_past_retention(dsn: str) -> None:
    today = date(2026, 12, 4)
    with psycopg.connect(dsn, autocommit=True) as conn:
        db.migrate(conn)
        known: set[tuple[str, date]] = set()
        db.ensure_partitions(conn, {today - timedelta(days=40), today, today + timedelta(1)},
                             known)
        dropped = db.drop_expired(conn, retention_days=30, today=today)
        left = {r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'me_events'")}
    assert dropped == sorted(f"{t}_p20261025" for t in db.PARTITIONED)
    assert left == {"me_events_p20261204", "me_events_p20261205"}


# -- idempotence and quarantine ------------------------------------------------------------
def test_redelivered_message_is_stored_once(dsn: str) -> None:
    # Its own broker: a new shared subscription also gets every rig's retained status.
    with Broker() as broker:
        _redeliver(dsn, broker)


def _redeliver(dsn: str, broker: Broker) -> None:
    w = ThreadWorker(dsn, broker.port, "g-dup")
    env = messages.Envelope("rig-dup")
    payload = messages.encode(env.wrap("events/me", me_body(__import__("random").Random(1))))
    c = raw_client(broker.port)
    try:
        for _ in range(3):  # what a rig resends when its PUBACK was lost
            c.publish("mmme/v1/rig-dup/events/me", payload, qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 20
        while w.worker.counters.received < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        c.loop_stop()
        w.stop()
    assert count(dsn, "SELECT count(*) FROM me_events") == 1
    assert w.worker.counters.duplicates == 2
    assert count(dsn, "SELECT count(*) FROM quarantine") == 0


def test_bad_payloads_go_to_quarantine_with_the_reason(dsn: str, broker: Broker) -> None:
    w = ThreadWorker(dsn, broker.port, "g-bad", batch_wait_s=0.5)
    env = messages.Envelope("rig-q")
    good = env.wrap("events/me", me_body(__import__("random").Random(2)))
    nul = {**env.wrap("events/me", me_body(__import__("random").Random(3))), "note": "a\u0000b"}
    bad = {
        "mmme/v1/rig-q/events/me": [
            b"{not json", messages.encode({**good, "msg_id": "rig-q.x.1", "confidence": 7}),
            messages.encode(nul)],
        "mmme/v1/rig-other/events/me": [messages.encode({**good, "msg_id": "rig-q.x.2"})],
        "mmme/v1/rig-q/markers": [messages.encode(
            {**env.wrap("markers", {"code": 101, "marker_t_ns": 1}),
             "wall_time": "1970-01-01T00:00:05.000+00:00"})],
    }
    c = raw_client(broker.port)
    try:
        # In one batch with a good message: the bad ones must not take it down with them.
        c.publish("mmme/v1/rig-q/events/me", messages.encode(good), qos=1).wait_for_publish(5)
        for topic, payloads in bad.items():
            for p in payloads:
                c.publish(topic, p, qos=1).wait_for_publish(5)
        assert wait_rows(dsn, "quarantine", 5, 20) == 5
    finally:
        c.loop_stop()
        w.stop()
    with psycopg.connect(dsn) as conn:
        reasons = sorted(r[0] for r in conn.execute("SELECT reason FROM quarantine"))
        stored = [r[0] for r in conn.execute("SELECT msg_id FROM me_events")]
    assert stored == [good["msg_id"]]
    assert any(r.startswith("not JSON") for r in reasons)
    assert any(r.startswith("schema: confidence") for r in reasons)
    assert any("differs from the topic" in r for r in reasons)
    assert any("outside the accepted days" in r for r in reasons)
    assert any(r.startswith("database refused") and "\\u0000" in r for r in reasons)


def test_columns_and_jsonb_copy(dsn: str, broker: Broker, tmp_path: Path) -> None:
    w = ThreadWorker(dsn, broker.port, "g-cols")
    pub = rig(broker.port, tmp_path, "rig-c")
    try:
        me = me_body(__import__("random").Random(4))
        mid = pub.publish("events/me", me)
        pub.publish("markers", {"code": 101, "marker_t_ns": 42})
        assert wait_rows(dsn, "markers", 1) == 1
        assert wait_rows(dsn, "me_events", 1) == 1
    finally:
        pub.stop()
        w.stop()
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT rig_id, kind, apex_ns, regions, confidence, "
                           "payload->>'msg_id' FROM me_events").fetchone()
        marker = conn.execute("SELECT code, marker_t_ns FROM markers").fetchone()
    assert row == ("rig-c", me["kind"], me["interval"]["apex_ns"], me["regions"],
                   me["confidence"], mid)
    assert marker == (101, 42)


# -- outages -----------------------------------------------------------------------------------
def publish_events(pub: Publisher, n: int) -> list[str]:
    rng = __import__("random").Random(n)
    return [pub.publish("events/me", me_body(rng)) for _ in range(n)]


def test_ingest_outage_and_worker_killed_mid_batch_lose_nothing(
        dsn: str, broker: Broker, tmp_path: Path) -> None:
    w = ProcWorker(dsn, broker.port, "g-kill")
    pub = rig(broker.port, tmp_path, "rig-k")
    ids = publish_events(pub, 20)
    assert wait_rows(dsn, "me_events", 20) == 20
    # Ingest outage: the worker is killed; the rig goes on publishing.
    w.kill()
    ids += publish_events(pub, 100)
    time.sleep(0.5)
    # Killed mid-batch: its insert waits on a lock we hold, so the batch is in the worker,
    # written but not committed, when it dies.
    w = ProcWorker(dsn, broker.port, "g-kill")
    with psycopg.connect(dsn) as holder:
        holder.execute("LOCK TABLE me_events IN ACCESS EXCLUSIVE MODE")
        ids += publish_events(pub, 50)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not count(
                dsn, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE 'INSERT INTO me_events%%'"):
            time.sleep(0.05)
        assert count(dsn, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                     " AND query LIKE 'INSERT INTO me_events%%'") >= 1
        w.kill()
        holder.rollback()
    w = ProcWorker(dsn, broker.port, "g-kill")
    try:
        ids += publish_events(pub, 30)
        assert wait_rows(dsn, "me_events", len(ids)) >= len(ids)
        time.sleep(0.5)  # anything redelivered late would show as a second row
    finally:
        pub.stop()
        w.stop()
    assert_exactly_once(dsn, ids)
    assert count(dsn, "SELECT count(*) FROM me_events") == len(ids)


def test_broker_and_database_outages_lose_nothing(dsn: str, tmp_path: Path) -> None:
    with Cluster() as own_db, Broker() as b:
        own_dsn = own_db.dsn
        w = ThreadWorker(own_dsn, b.port, "g-out")
        pub = rig(b.port, tmp_path, "rig-o")
        try:
            ids = publish_events(pub, 20)
            b.stop()  # broker outage: the rig's outbox keeps what it cannot send
            ids += publish_events(pub, 50)
            b.start()
            ids += publish_events(pub, 20)
            assert wait_rows(own_dsn, "me_events", len(ids)) == len(ids)
            own_db.stop()  # database outage: the worker acknowledges nothing meanwhile
            ids += publish_events(pub, 50)
            time.sleep(1.0)
            own_db.start()
            ids += publish_events(pub, 20)
            assert wait_rows(own_dsn, "me_events", len(ids)) >= len(ids)
            time.sleep(0.5)
        finally:
            pub.stop()
            w.stop()
        assert w.worker.counters.db_errors >= 1
        assert_exactly_once(own_dsn, ids)
        assert count(own_dsn, "SELECT count(*) FROM me_events") == len(ids)


# -- the views -----------------------------------------------------------------------------------
def test_views_join_expression_emotion_vitals_and_track_drops(
        dsn: str, broker: Broker, tmp_path: Path) -> None:
    import random

    from fleet.synthetic import emotion_body, health_body, vitals_body

    rng = random.Random(5)
    w = ThreadWorker(dsn, broker.port, "g-views")
    pub = rig(broker.port, tmp_path, "rig-v")
    try:
        pub.publish("status", {**status_body("t", "m", "c", ["eeg"]), "state": "online",
                               "session": "ses02", "subject": "sub07"})
        time.sleep(0.05)
        for _ in range(3):
            pub.publish("vitals", {**vitals_body(rng), "hr_bpm": 70.0})
        far = pub.envelope.wrap("vitals", {**vitals_body(rng), "hr_bpm": 200.0},
                                t_ns=time.monotonic_ns() + 60_000_000_000)  # a minute on
        me = me_body(rng)
        me_id = pub.publish("events/me", me)
        pub.publish("events/emotion", emotion_body(me_id, me, rng))
        lone_id = pub.publish("events/me", me_body(rng))  # its window is still open
        for dropped in (0, 4, 9):
            h = health_body(rng)
            h["streams"]["eeg"]["dropped"] = dropped
            pub.publish("health", h)
        c = raw_client(broker.port)
        c.publish("mmme/v1/rig-v/vitals", messages.encode(far), qos=1).wait_for_publish(5)
        c.loop_stop()
        assert wait_rows(dsn, "emotion_events", 1) == 1
        assert wait_rows(dsn, "health", 3) == 3 and wait_rows(dsn, "vitals", 4) == 4
    finally:
        pub.stop()
        w.stop()
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT msg_id, subject, session, predicted, hr_bpm, vitals_n"
            " FROM expression_timeline ORDER BY wall_time").fetchall()
        drops = conn.execute(
            "SELECT dropped_new FROM rig_stream_health WHERE stream = 'eeg'"
            " ORDER BY seq").fetchall()
        hourly = conn.execute(  # summed: the three may straddle an hour
            "SELECT sum(dropped), sum(health_n) FROM rig_drops_hourly WHERE stream = 'eeg'"
        ).fetchall()
    assert rows[0] == (me_id, "sub07", "ses02", "positive", 70.0, 3)
    assert rows[1][:4] == (lone_id, "sub07", "ses02", None)
    assert [d[0] for d in drops] == [0, 4, 5]
    assert hourly == [(9, 3)]


def test_a_retired_worker_hands_its_share_over_and_leaves_no_session(
        dsn: str, broker: Broker, tmp_path: Path) -> None:
    a = ThreadWorker(dsn, broker.port, "g-ret", worker_id="a")
    b = ThreadWorker(dsn, broker.port, "g-ret", worker_id="b")
    pub = rig(broker.port, tmp_path, "rig-r")
    try:
        ids = publish_events(pub, 40)
        assert wait_rows(dsn, "me_events", 40) == 40
        a.worker.stop(retire=True)
        a.thread.join(30)
        # A stopped (not retired) worker would keep half of these queued for itself.
        ids += publish_events(pub, 40)
        assert wait_rows(dsn, "me_events", 80, timeout_s=15) == 80
    finally:
        pub.stop()
        b.stop()
    assert_exactly_once(dsn, ids)
    present: list[bool] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                    client_id=a.worker.settings.client_id)
    c.on_connect = lambda _c, _u, flags, _r, _p=None: present.append(flags.session_present)
    c.connect("127.0.0.1", broker.port, clean_start=False)
    c.loop_start()
    deadline = time.monotonic() + 10
    while not present and time.monotonic() < deadline:
        time.sleep(0.05)
    c.disconnect()
    c.loop_stop()
    assert present == [False]


def test_counters_count_each_message_once_when_a_batch_falls_back(dsn: str) -> None:

    # Its own broker: a new shared subscription also gets every rig's retained status.
    with Broker() as broker:
        _count_through_fallback(dsn, broker)


def _count_through_fallback(dsn: str, broker: Broker) -> None:
    import random

    w = ThreadWorker(dsn, broker.port, "g-count", batch_wait_s=0.5)
    env = messages.Envelope("rig-n")
    good = [env.wrap("events/me", me_body(random.Random(i))) for i in range(3)]
    nul = {**env.wrap("events/me", me_body(random.Random(9))), "note": "a\u0000b"}
    c = raw_client(broker.port)
    try:
        for p in [*good, nul]:  # one batch: PostgreSQL refuses it, then one by one
            c.publish("mmme/v1/rig-n/events/me", messages.encode(p), qos=1).wait_for_publish(5)
        assert wait_rows(dsn, "quarantine", 1, 20) == 1
        assert wait_rows(dsn, "me_events", 3, 20) == 3
    finally:
        c.loop_stop()
        w.stop()
    n = w.worker.counters
    assert (n.received, n.inserted, n.duplicates, n.quarantined) == (4, 3, 0, 1)
