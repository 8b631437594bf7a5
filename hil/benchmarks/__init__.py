"""The benchmarks: each prints figures, ends with one JSON line under ``--json``.

``REGISTRY`` is the one list of them: ``mmme-hil bench NAME`` runs
``hil.benchmarks.NAME.main(args)``, and ``mmme-hil bench all`` runs each with the
arguments given here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bench:
    name: str
    all_args: tuple[str, ...]  # the arguments `bench all` runs it with
    summary: str

    @property
    def module(self) -> str:
        return f"{__name__}.{self.name}"


REGISTRY: dict[str, Bench] = {b.name: b for b in (
    Bench("sync", ("--minutes", "10", "--drift-ppm", "100", "--jitter-ms", "2", "--json"),
          "alignment error under drift and jitter"),
    Bench("features", ("--json",), "streaming features' real-time factor against NeuroKit2"),
    Bench("spotting", ("--events", "200", "--json"), "MEGC F1 and per-frame cost"),
    Bench("recorder", ("--seconds", "20"), "recorder speed against the rig's data rate"),
    Bench("camera_stores", ("--json",), "storage rate of the raw, lossless and face stores"),
    Bench("lossless_coders", ("--json",),
          "every lossless coder on whole 640x480 frames: ratio, GB/h, CPU at 200 fps"),
    Bench("model", ("--json",), "int8 latency and LOSO metrics"),
    Bench("mqtt", ("--json",), "outbox against plain paho"),
    Bench("rig", ("--json",), "whole rig: CPU, memory, highest camera rate, latency"),
    # the host's own floor for the EEG reader, beside the rig's loss
    Bench("wakeup", ("--json",), "the host's wake floor for a 1 kHz reader"),
    Bench("real", ("--json",), "features on real recordings against offline references"),
    Bench("fleet", ("--rigs", "50", "--json"),
          "50 rigs -> Mosquitto -> 2 ingest workers (one SIGKILLed) -> PostgreSQL"),
)}
