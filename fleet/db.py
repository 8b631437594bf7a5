"""The study database: migrations, daily partitions, retention, and rows from payloads.

Migrations are the numbered SQL files in ``fleet/migrations/`` (``0001_tables.sql`` ...),
applied in order on start under an advisory lock (several workers may start at once),
each recorded in ``schema_migrations``. Each kind's table is range-partitioned by day
on ``wall_time``; partitions are made ahead and on demand, and those wholly older than
the retention are dropped. PostgreSQL's declarative partitioning does this natively;
TimescaleDB would do the same with hypertables, the tables here translate one to one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from importlib import resources
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

MIGRATION_LOCK = 0x6D6D6D65  # 'mmme': one migrator at a time
PARTITION_LOCK = 0x6D6D7061  # one partition creator at a time
PARTITIONED = ("me_events", "emotion_events", "vitals", "markers", "health", "status")
PART_RE = re.compile(r"^(?P<table>[a-z_]+)_p(?P<day>\d{8})$")


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every shipped migration, in version order."""
    out = []
    for entry in resources.files("fleet").joinpath("migrations").iterdir():
        m = re.match(r"^(\d{4})_(\w+)\.sql$", entry.name)
        if m:
            out.append((int(m.group(1)), m.group(2), entry.read_text()))
    return sorted(out)


def migrate(conn: psycopg.Connection) -> list[int]:
    """Apply the migrations not yet applied; returns their versions."""
    applied: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                     " version integer PRIMARY KEY, name text NOT NULL,"
                     " applied_at timestamptz NOT NULL DEFAULT now())")
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        for version, name, sql in migrations():
            if version in done:
                continue
            conn.execute(sql)  # type: ignore[arg-type]  # several statements, no parameters
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                         (version, name))
            applied.append(version)
    return applied


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def ensure_partitions(conn: psycopg.Connection, days: set[date],
                      known: set[tuple[str, date]]) -> None:
    """Create each table's partition for each day (idempotent, race-free across workers)."""
    missing = [(t, d) for t in PARTITIONED for d in sorted(days) if (t, d) not in known]
    if not missing:
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
        for table, day in missing:
            lo = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
            hi = lo + timedelta(days=1)
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {partition_name(table, day)} PARTITION OF {table}"
                f" FOR VALUES FROM ('{lo.isoformat()}') TO ('{hi.isoformat()}')")
    known.update(missing)


def drop_expired(conn: psycopg.Connection, retention_days: int,
                 today: date | None = None) -> list[str]:
    """Drop every partition whose whole day is older than the retention; names dropped."""
    cutoff = (today or datetime.now(timezone.utc).date()) - timedelta(days=retention_days)
    dropped = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = ANY(%s)",
            (list(PARTITIONED),)).fetchall()
        for (name,) in rows:
            m = PART_RE.match(name)
            if m and datetime.strptime(m["day"], "%Y%m%d").date() < cutoff:
                conn.execute(f"DROP TABLE {name}")
                dropped.append(name)
    return sorted(dropped)


# -- payload -> row ------------------------------------------------------------------------
COMMON = ("msg_id", "rig_id", "seq", "t_ns", "wall_time")


def _interval(p: dict[str, Any]) -> dict[str, Any]:
    return p.get("interval") or {}


def _json(v: Any) -> Jsonb | None:
    return None if v is None else Jsonb(v)


@dataclass(frozen=True)
class TableSpec:
    table: str
    columns: tuple[str, ...]  # after COMMON, before payload
    values: Callable[[dict[str, Any]], tuple[Any, ...]]

    def sql(self) -> str:
        cols = (*COMMON, *self.columns, "payload")
        marks = ", ".join(["%s"] * (len(cols) - 1) + ["%s::jsonb"])
        return (f"INSERT INTO {self.table} ({', '.join(cols)}) VALUES ({marks})"
                " ON CONFLICT DO NOTHING")


TABLES: dict[str, TableSpec] = {
    "events/me": TableSpec(
        "me_events",
        ("kind", "onset_ns", "apex_ns", "offset_ns", "onset_frame", "apex_frame",
         "offset_frame", "regions", "aus", "confidence", "visual_probs"),
        lambda p: (p["kind"], *(_interval(p).get(k) for k in (
            "onset_ns", "apex_ns", "offset_ns", "onset_frame", "apex_frame", "offset_frame")),
            p.get("regions"), p.get("aus"), p.get("confidence"), _json(p.get("visual_probs")))),
    "events/emotion": TableSpec(
        "emotion_events",
        ("me_msg_id", "apex_ns", "window_t0_ns", "window_t1_ns", "predicted",
         "predicted_emotion", "composite", "emotions", "contrib_visual", "contrib_eeg",
         "contrib_peripheral", "model_version"),
        lambda p: (p["me_msg_id"], _interval(p).get("apex_ns"), p["window"]["t0_ns"],
                   p["window"]["t1_ns"], p["predicted"], p.get("predicted_emotion"),
                   _json(p.get("composite")), _json(p.get("emotions")),
                   *(p["contributions"].get(k) for k in ("visual", "eeg", "peripheral")),
                   p.get("model_version"))),
    "vitals": TableSpec(
        "vitals", ("hr_bpm", "rr_bpm", "eda_us", "skt_c", "eeg_bands"),
        lambda p: (p["hr_bpm"], p["rr_bpm"], p["eda_us"], p["skt_c"],
                   _json(p.get("eeg_bands")))),
    "markers": TableSpec("markers", ("code", "marker_t_ns"),
                         lambda p: (p["code"], p["marker_t_ns"])),
    "health": TableSpec(
        "health",
        ("cpu_percent", "rss_mb", "temperature_c", "disk_free_mb", "outbox_backlog",
         "outbox_dropped", "recorder", "streams", "offload"),
        lambda p: (p["cpu_percent"], p.get("rss_mb"), p.get("temperature_c"),
                   p.get("disk_free_mb"), p.get("outbox_backlog"), p.get("outbox_dropped"),
                   p.get("recorder"), _json(p.get("streams")), _json(p.get("offload")))),
    "status": TableSpec(
        "status",
        ("state", "reason", "software_version", "model_version", "config_hash", "recording",
         "session", "subject"),
        lambda p: (p["state"], p.get("reason"), p.get("software_version"),
                   p.get("model_version"), p.get("config_hash"), p.get("recording"),
                   p.get("session"), p.get("subject"))),
}


def parse_wall_time(text: str) -> datetime:
    """The envelope's ISO 8601 time; it must say it is UTC (or carry an offset)."""
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))  # 3.10 has no 'Z'
    if when.tzinfo is None:
        raise ValueError(f"wall_time {text!r} has no UTC offset")
    return when


def row_for(kind: str, payload: dict[str, Any], raw: str) -> tuple[Any, ...]:
    spec = TABLES[kind]
    common = (payload["msg_id"], payload["rig_id"], payload["seq"], payload["t_ns"],
              parse_wall_time(payload["wall_time"]))
    return (*common, *spec.values(payload), raw)


def digest(topic: str, raw: bytes) -> str:
    return hashlib.sha256(topic.encode() + b"\0" + raw).hexdigest()


QUARANTINE_SQL = ("INSERT INTO quarantine (digest, topic, raw, reason) VALUES (%s, %s, %s, %s)"
                  " ON CONFLICT (digest) DO NOTHING")
