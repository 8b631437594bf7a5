"""The study's fleet: N simulated rigs, one Mosquitto, K ingest workers, PostgreSQL.

``mmme-hil bench fleet`` is ``mmme-fleet bench`` (``fleet/bench.py``), listed here so
``mmme-hil bench all`` runs it with the others.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from fleet.cli import main as fleet_main

    return fleet_main(["bench", *(sys.argv[1:] if argv is None else argv)])
