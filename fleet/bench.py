"""``mmme-fleet bench``: N simulated rigs -> one Mosquitto -> K ingest workers -> PostgreSQL.

Each rig is the real publisher with its real SQLite outbox, fed synthetic results at
the rig's rates (``fleet.synthetic.RATES_HZ``), 50 rigs to a process; the broker and
the database are a private Mosquitto and a private ``initdb`` cluster on loopback
ports; the workers are
``mmme-fleet ingest`` processes in one shared subscription group. Halfway through,
worker ``w0`` is SIGKILLed and restarted ``restart_after_s`` later.

Figures: the sustained ingest rate (rows committed per second over the steady phase),
the latency from a result's publication (its ``wall_time``) to its row's insert in the
committing transaction (``ingested_at``), p50 and p99 over every QoS 1 row of the steady
phase (the killed worker's share waits for its restart, and is in the p99), and the QoS 1
results missing from or doubled in the database. Then a capacity phase: the workers stop,
a backlog piles up in the broker, the workers start again and drain it as fast as they
can; that rate is what one broker plus one database carry on this machine.
"""

from __future__ import annotations

import heapq
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg

from edge.mqtt.publisher import MqttSettings, Publisher, status_body
from fleet import db
from fleet.cluster import Cluster
from fleet.synthetic import (
    RATES_HZ,
    emotion_body,
    health_body,
    marker_body,
    me_body,
    vitals_body,
)
from hil.broker import Broker

QOS1_TABLES = {"events/me": "me_events", "events/emotion": "emotion_events",
               "markers": "markers"}
EMOTION_AFTER_S = 4.0  # the physiological window after the apex


class Workers:
    """K ``mmme-fleet ingest`` processes; one can be killed and started again."""

    def __init__(self, dsn: str, port: int, k: int, group: str = "bench") -> None:
        self.dsn, self.port, self.group = dsn, port, group
        self.procs: dict[str, subprocess.Popen] = {}
        for i in range(k):
            self.start(f"w{i}")

    def start(self, worker_id: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        proc = subprocess.Popen(
            [sys.executable, "-m", "fleet.cli", "ingest", "--dsn", self.dsn,
             "--host", "127.0.0.1", "--port", str(self.port), "--group", self.group,
             "--worker-id", worker_id],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("ready"):
            raise RuntimeError(f"ingest worker {worker_id} did not start: {line!r}")
        self.procs[worker_id] = proc

    def kill(self, worker_id: str) -> None:
        self.procs[worker_id].send_signal(signal.SIGKILL)
        self.procs[worker_id].wait(10)

    def cpu_s(self) -> float:
        total = 0.0
        for p in self.procs.values():
            try:
                t = psutil.Process(p.pid).cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


class Rigs:
    """N publishers driven by one scheduler thread at the rig's message rates."""

    def __init__(self, n: int, port: int, workdir: Path, seed: int = 0, first: int = 0,
                 prefix: str = "rig") -> None:
        self.rng = random.Random(seed + first)
        self.pubs = [Publisher(MqttSettings(host="127.0.0.1", port=port,
                                            outbox=str(workdir / f"{prefix}{i:04d}.sqlite")),
                               f"{prefix}{i:04d}", status_body("bench", "synthetic", "0",
                                                                ["eeg"]))
                     for i in range(first, first + n)]
        self.sent: dict[str, list[str]] = {k: [] for k in (*QOS1_TABLES, "vitals", "health")}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rigs", daemon=True)

    def start(self, emit: bool = True) -> None:
        for p in self.pubs:
            p.start()
        deadline = time.monotonic() + 30
        while not all(p.connected for p in self.pubs) and time.monotonic() < deadline:
            time.sleep(0.05)
        if emit:
            self._thread.start()

    def _run(self) -> None:
        now = time.monotonic()
        heap: list[tuple[float, int, str, Any]] = []
        for i in range(len(self.pubs)):
            for kind, hz in RATES_HZ.items():
                if kind != "events/emotion":  # follows its expression
                    heapq.heappush(heap, (now + self.rng.random() / hz, i, kind, None))
        while not self._stop.is_set():
            t, i, kind, arg = heapq.heappop(heap)
            delay = t - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            pub, rng = self.pubs[i], self.rng
            if kind == "events/me":
                body = me_body(rng)
                mid = pub.publish(kind, body)
                heapq.heappush(heap, (t + EMOTION_AFTER_S, i, "events/emotion", (mid, body)))
            elif kind == "events/emotion":
                mid = pub.publish(kind, emotion_body(arg[0], arg[1], rng))
            elif kind == "markers":
                mid = pub.publish(kind, marker_body(101 + rng.randrange(48)))
            elif kind == "vitals":
                mid = pub.publish(kind, vitals_body(rng))
            else:
                mid = pub.publish(kind, health_body(rng, len(pub.outbox)))
            self.sent[kind].append(mid)
            if kind != "events/emotion":
                heapq.heappush(heap, (t + 1.0 / RATES_HZ[kind], i, kind, None))

    def stop_emitting(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def backlog(self) -> int:
        return sum(len(p.outbox) for p in self.pubs)

    def close(self) -> None:
        for p in self.pubs:
            p.stop(timeout_s=0.5)


RIGS_PER_PROCESS = 50  # one Python process hosts this many simulated rigs at most


def rig_group(first: int, n: int, port: int, workdir: str, duration_s: float, seed: int,
              out_path: str) -> None:
    """A child process: ``n`` rigs publish for ``duration_s``, drain their outboxes (up to
    2 min), and write what they sent to ``out_path`` (JSON)."""
    fleet = Rigs(n, port, Path(workdir), seed, first)
    fleet.start()
    time.sleep(duration_s)
    fleet.stop_emitting()
    deadline = time.monotonic() + 120
    while fleet.backlog() and time.monotonic() < deadline:
        time.sleep(0.2)
    report = {"sent": fleet.sent, "outbox_left": fleet.backlog(),
              "outbox_dropped": sum(p.outbox.dropped for p in fleet.pubs)}
    fleet.close()
    Path(out_path).write_text(json.dumps(report))


class RigProcesses:
    """The simulated rigs, ``RIGS_PER_PROCESS`` to a process (one process's GIL and
    threads would otherwise be the bench's limit, not the fleet's)."""

    def __init__(self, rigs: int, port: int, workdir: Path, duration_s: float,
                 seed: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.outs: list[Path] = []
        self.procs = []
        for first in range(0, rigs, RIGS_PER_PROCESS):
            out = workdir / f"group{first:04d}.json"
            self.outs.append(out)
            self.procs.append(ctx.Process(
                target=rig_group, args=(first, min(RIGS_PER_PROCESS, rigs - first), port,
                                        str(workdir), duration_s, seed, str(out))))
        for p in self.procs:
            p.start()

    def join(self) -> dict[str, Any]:
        for p in self.procs:
            p.join(600)
        sent: dict[str, list[str]] = {}
        left = dropped = 0
        for out in self.outs:
            if not out.exists():
                raise RuntimeError(f"a rig process wrote no report ({out.name})")
            r = json.loads(out.read_text())
            for k, ids in r["sent"].items():
                sent.setdefault(k, []).extend(ids)
            left += r["outbox_left"]
            dropped += r["outbox_dropped"]
        return {"sent": sent, "outbox_left": left, "outbox_dropped": dropped}

    def kill(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.kill()


def _wait_stored(dsn: str, expected: dict[str, set[str]], timeout_s: float) -> dict[str, set[str]]:
    """Poll until every expected msg_id is stored (or the timeout); returns what is."""
    deadline = time.monotonic() + timeout_s
    while True:
        stored = _stored_ids(dsn)
        if all(expected[k] <= stored[k] for k in expected) or time.monotonic() > deadline:
            return stored
        time.sleep(0.5)


def _stored_ids(dsn: str) -> dict[str, set[str]]:
    with psycopg.connect(dsn) as conn:
        return {kind: {r[0] for r in conn.execute(f"SELECT msg_id FROM {table}")}
                for kind, table in QOS1_TABLES.items()}


def _count_rows(dsn: str, tables: tuple[str, ...]) -> int:
    with psycopg.connect(dsn) as conn:
        return sum(int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
                   for t in tables)


def _doubles(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return sum(int(conn.execute(f"SELECT count(*) - count(DISTINCT msg_id) FROM {t}")
                       .fetchone()[0]) for t in (*QOS1_TABLES.values(), "vitals", "health"))


def _latency_and_rate(dsn: str, ids: list[str]) -> tuple[float, float, float, int]:
    """p50 and p99 (ms) of ingested_at - wall_time over the given QoS 1 rows, and the rows
    per second of every kind committed between the first and the last of them."""
    union = " UNION ALL ".join(
        f"SELECT msg_id, wall_time, ingested_at FROM {t}" for t in QOS1_TABLES.values())
    every = " UNION ALL ".join(
        f"SELECT ingested_at FROM {t}" for t in (*QOS1_TABLES.values(), "vitals", "health"))
    with psycopg.connect(dsn) as conn:
        p50, p99, t0, t1 = conn.execute(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lat),"
            " percentile_cont(0.99) WITHIN GROUP (ORDER BY lat), min(ingested_at),"
            " max(ingested_at) FROM (SELECT extract(epoch FROM ingested_at - wall_time) * 1000"
            f" AS lat, ingested_at FROM ({union}) u WHERE msg_id = ANY(%s)) x",
            (ids,)).fetchone()
        rows = int(conn.execute(f"SELECT count(*) FROM ({every}) e WHERE ingested_at"
                                " BETWEEN %s AND %s", (t0, t1)).fetchone()[0])
    span = max((t1 - t0).total_seconds(), 1e-9)
    return float(p50), float(p99), rows / span, rows


def run_bench(rigs: int = 10, workers: int = 2, duration_s: float = 60.0, kill: bool = True,
              restart_after_s: float = 2.0, backlog: int = 20_000, verbose: bool = True,
              seed: int = 0) -> dict[str, Any]:
    def say(text: str) -> None:
        if verbose:
            print(text, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="mmme-fleet-bench-"))
    with Cluster() as cluster, Broker() as broker:
        with psycopg.connect(cluster.dsn, autocommit=True) as conn:
            db.migrate(conn)
        pool = Workers(cluster.dsn, broker.port, workers)
        fleet = RigProcesses(rigs, broker.port, workdir, duration_s, seed)
        try:
            say(f"{rigs} rigs in {len(fleet.procs)} processes, {workers} workers, "
                f"{duration_s:.0f} s")
            t_start = time.monotonic()
            if kill:
                time.sleep(duration_s / 2)
                pool.kill("w0")
                say(f"w0 SIGKILLed at {time.monotonic() - t_start:.1f} s")
                time.sleep(restart_after_s)
                pool.start("w0")
                say(f"w0 restarted at {time.monotonic() - t_start:.1f} s")
            report = fleet.join()
            sent = report["sent"]
            expected = {k: set(sent[k]) for k in QOS1_TABLES}
            stored = _wait_stored(cluster.dsn, expected, 120)
            time.sleep(1.0)  # a late redelivery would show as a second row now
            missing = sum(len(expected[k] - stored[k]) for k in QOS1_TABLES)
            # Where in the run the missing ones were published (0: start, 1: end).
            where = sorted(j / max(len(sent[k]), 1) for k in QOS1_TABLES
                           for j, m in enumerate(sent[k]) if m not in stored[k])
            if where:
                say(f"missing published between {where[0]:.2f} and {where[-1]:.2f} of the run;"
                    f" still in the rigs' outboxes: {report['outbox_left']}")
            ids = [i for k in QOS1_TABLES for i in expected[k]]
            p50, p99, rate, rows = _latency_and_rate(cluster.dsn, ids)
            say(f"steady: {rows} rows, {rate:.1f} rows/s, latency p50 {p50:.1f} ms "
                f"p99 {p99:.1f} ms, missing {missing}")
            result: dict[str, Any] = {
                "rigs": rigs, "ingest_msgs_per_s": round(rate, 1),
                "latency_ms_p50": round(p50, 1), "latency_ms_p99": round(p99, 1),
                "missing": missing, "duplicated": 0,
                "workers": workers, "killed": "w0 (SIGKILL)" if kill else None,
                "duration_s": duration_s, "qos1_published": len(ids),
                "qos0_published": len(sent["vitals"]) + len(sent["health"]),
                "qos0_stored": _count_rows(cluster.dsn, ("vitals", "health")),
                "rigs_outbox_left": report["outbox_left"],
                "rigs_outbox_dropped": report["outbox_dropped"],
            }
            if backlog:
                assert broker.proc is not None
                result.update(_capacity(cluster, broker.proc.pid, pool, workdir, workers,
                                        backlog, say))
                missing += result["backlog_missing"]
            result["missing"] = missing
            result["duplicated"] = _doubles(cluster.dsn)
            return result
        finally:
            fleet.kill()
            pool.stop()


def _tree_cpu_s(cluster: Cluster) -> dict[int, float]:
    """CPU seconds per process of the PostgreSQL tree (backends come and go with workers)."""
    if cluster.proc is None:
        return {}
    root = psutil.Process(cluster.proc.pid)
    out = {}
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return out


def _cpu_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def _capacity(cluster: Cluster, broker_pid: int, pool: Workers, workdir: Path, workers: int,
              n: int, say: Any) -> dict[str, Any]:
    """Workers down, ``n`` QoS 1 results queued in the broker, workers up: drain rate."""
    pool.stop()
    pool.procs.clear()
    fleet = Rigs(10, pool.port, workdir, prefix="backlog")
    fleet.start(emit=False)
    try:
        return _drain(cluster, broker_pid, pool, fleet, workers, n, say)
    finally:
        fleet.close()


def _drain(cluster: Cluster, broker_pid: int, pool: Workers, fleet: Rigs, workers: int,
           n: int, say: Any) -> dict[str, Any]:
    rng = random.Random(1)
    ids: list[str] = []
    per_rig = max(n // len(fleet.pubs), 1)
    for pub in fleet.pubs:
        for start in range(0, per_rig, 250):
            ids += pub.publish_many("events/me", [me_body(rng) for _ in
                                                  range(min(250, per_rig - start))])
    deadline = time.monotonic() + 120
    while fleet.backlog() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # the last PUBACKs: the broker holds everything for the workers
    pg_cpu0 = _tree_cpu_s(cluster)
    broker_cpu0 = _cpu_s(broker_pid)
    t0 = time.monotonic()
    for i in range(workers):
        pool.start(f"w{i}")
    stored = _wait_stored(cluster.dsn, {"events/me": set(ids), "events/emotion": set(),
                                        "markers": set()}, 300)
    wall_s = time.monotonic() - t0  # includes starting the worker processes
    with psycopg.connect(cluster.dsn) as conn:
        first, last = conn.execute("SELECT min(ingested_at), max(ingested_at) FROM me_events"
                                   " WHERE msg_id = ANY(%s)", (ids,)).fetchone()
    drain_s = max((last - first).total_seconds(), 1e-9) if first else wall_s
    cpu_workers = pool.cpu_s()
    pg_cpu = sum(cpu - pg_cpu0.get(pid, 0.0) for pid, cpu in _tree_cpu_s(cluster).items())
    broker_cpu = _cpu_s(broker_pid) - broker_cpu0
    missing = len(set(ids) - stored["events/me"])
    rate = len(ids) / drain_s
    say(f"capacity: {len(ids)} queued results drained in {drain_s:.1f} s = {rate:.0f} msg/s "
        f"({wall_s:.1f} s with the workers' start) "
        f"(CPU s: workers {cpu_workers:.1f}, postgres {pg_cpu:.1f}, mosquitto {broker_cpu:.1f}),"
        f" missing {missing}")
    return {"backlog": len(ids), "capacity_msgs_per_s": round(rate, 1),
            "capacity_worker_cpu_ms_per_msg": round(1000 * cpu_workers / len(ids), 3),
            "capacity_postgres_cpu_ms_per_msg": round(1000 * pg_cpu / len(ids), 3),
            "capacity_broker_cpu_ms_per_msg": round(1000 * broker_cpu / len(ids), 3),
            "backlog_missing": missing}
