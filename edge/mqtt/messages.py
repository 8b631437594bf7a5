"""Topics and versioned JSON payloads under ``mmme/v1/<rig_id>/``.

Every payload carries an envelope: ``schema`` (e.g. ``mmme/v1/events/me``), ``v``,
``msg_id`` (unique: ``<rig_id>.<boot_id>.<seq>``; subscribers deduplicate on it),
``rig_id``, ``seq``, ``t_ns`` (rig CLOCK_MONOTONIC) and ``wall_time`` (UTC ISO 8601).
The JSON Schema of each kind is in ``edge/mqtt/schemas/``.
"""

from __future__ import annotations

import itertools
import json
import secrets
import threading
from datetime import datetime, timezone
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from sensors.blocks import monotonic_ns

PREFIX = "mmme/v1"
KINDS = ("status", "events/me", "events/emotion", "vitals", "markers", "health", "ack", "cmd")
QOS = {"status": 1, "events/me": 1, "events/emotion": 1, "markers": 1, "ack": 1,
       "vitals": 0, "health": 0}


def topic(rig_id: str, kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown message kind {kind!r}")
    return f"{PREFIX}/{rig_id}/{kind}"


@cache
def schema_for(kind: str) -> dict[str, Any]:
    name = kind.replace("/", "_") + ".schema.json"
    text = (resources.files("edge.mqtt") / "schemas" / name).read_text()
    return json.loads(text)


@cache
def validator_for(kind: str) -> jsonschema.protocols.Validator:
    schema = schema_for(kind)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def validate(kind: str, payload: dict[str, Any]) -> list[str]:
    """Every schema violation as a short line (empty list: valid)."""
    errors = validator_for(kind).iter_errors(payload)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors]


class Envelope:
    """Stamps payloads with the envelope; thread-safe sequence."""

    def __init__(self, rig_id: str, boot_id: str | None = None) -> None:
        self.rig_id = rig_id
        self.boot_id = boot_id or secrets.token_hex(4)
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def wrap(self, kind: str, body: dict[str, Any], t_ns: int | None = None) -> dict[str, Any]:
        with self._lock:
            seq = next(self._seq)
        return {
            "schema": f"{PREFIX}/{kind}",
            "v": 1,
            "msg_id": f"{self.rig_id}.{self.boot_id}.{seq}",
            "rig_id": self.rig_id,
            "seq": seq,
            "t_ns": monotonic_ns() if t_ns is None else int(t_ns),
            "wall_time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            **body,
        }


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
