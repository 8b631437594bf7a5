"""``mmme-fleet``: the study server's side (ingest, bench) and the rig's offload."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from typing import Any


def _ingest(args: argparse.Namespace) -> int:
    from fleet.ingest import IngestSettings, IngestWorker

    dsn = args.dsn or os.environ.get("MMME_FLEET_DSN", "")
    if not dsn:
        print("mmme-fleet: give --dsn or MMME_FLEET_DSN (a password belongs in PGPASSFILE)",
              file=sys.stderr)
        return 2
    settings = IngestSettings(
        dsn=dsn, host=args.host, port=args.port, group=args.group, worker_id=args.worker_id,
        batch_max=args.batch_max, batch_wait_s=args.batch_wait_ms / 1000.0,
        retention_days=args.retention_days, tls=args.tls, ca_file=args.ca_file,
        cert_file=args.cert_file, key_file=args.key_file,
        credentials_file=args.credentials_file)
    worker = IngestWorker(settings)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop(retire=args.retire))

    def say_ready() -> None:
        if worker.ready.wait():
            print(f"ready {settings.client_id}", flush=True)

    threading.Thread(target=say_ready, daemon=True).start()
    counters = worker.run()
    if args.json:
        print(json.dumps(worker.summary()))
    else:
        print(f"mmme-fleet ingest {settings.client_id}: {counters}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from fleet.bench import run_bench

    result = run_bench(rigs=args.rigs, workers=args.workers, duration_s=args.duration,
                       kill=not args.no_kill, backlog=args.backlog,
                       verbose=not args.json)
    if args.json:
        print(json.dumps(result))
    return 0 if result["missing"] == 0 and result["duplicated"] == 0 else 1


def _offload(args: argparse.Namespace) -> int:
    from fleet.offload import Offloader, OffloadSettings

    settings = OffloadSettings(
        dest=args.dest, port=args.ssh_port, identity_file=args.identity_file,
        bwlimit_kbps=args.bwlimit_kbps, low_water_mb=args.low_water_mb,
        known_hosts=args.known_hosts)
    off = Offloader(settings, args.data_dir)
    state: dict[str, Any] = off.run(once=args.once, period_s=args.period_s)
    if args.json:
        print(json.dumps(state))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mmme-fleet")
    sub = p.add_subparsers(dest="cmd", required=True)

    ing = sub.add_parser("ingest", help="MQTT 5 shared subscription -> PostgreSQL")
    ing.add_argument("--dsn", default="", help="libpq connection string (or MMME_FLEET_DSN)")
    ing.add_argument("--host", default="localhost")
    ing.add_argument("--port", type=int, default=1883)
    ing.add_argument("--group", default="mmme-fleet", help="shared subscription group")
    ing.add_argument("--worker-id", default="w0",
                     help="fixed per worker: its broker session outlives a restart")
    ing.add_argument("--batch-max", type=int, default=500)
    ing.add_argument("--batch-wait-ms", type=float, default=5.0)
    ing.add_argument("--retention-days", type=int, default=365)
    ing.add_argument("--tls", action="store_true")
    ing.add_argument("--ca-file", default="")
    ing.add_argument("--cert-file", default="")
    ing.add_argument("--key-file", default="")
    ing.add_argument("--credentials-file", default="")
    ing.add_argument("--retire", action="store_true",
                     help="on SIGTERM, hand this worker's share to the group and end its "
                          "broker session (a worker id that will not come back)")
    ing.add_argument("--json", action="store_true")
    ing.set_defaults(func=_ingest)

    b = sub.add_parser("bench", help="N simulated rigs, a broker, K workers, one killed")
    b.add_argument("--rigs", type=int, default=10)
    b.add_argument("--workers", type=int, default=2)
    b.add_argument("--duration", type=float, default=60.0)
    b.add_argument("--no-kill", action="store_true")
    b.add_argument("--backlog", type=int, default=20_000,
                   help="results queued while the workers are down, then drained (0: skip)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=_bench)

    o = sub.add_parser("offload", help="ship finished MCAP segments home over SSH/rsync")
    o.add_argument("data_dir")
    o.add_argument("--dest", required=True, help="user@host:/path on the study server")
    o.add_argument("--ssh-port", type=int, default=22)
    o.add_argument("--identity-file", default="")
    o.add_argument("--known-hosts", default="")
    o.add_argument("--bwlimit-kbps", type=int, default=0, help="0: no limit")
    o.add_argument("--low-water-mb", type=float, default=2048.0,
                   help="free space under which verified segments are deleted")
    o.add_argument("--period-s", type=float, default=30.0)
    o.add_argument("--once", action="store_true")
    o.add_argument("--json", action="store_true")
    o.set_defaults(func=_offload)

    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
