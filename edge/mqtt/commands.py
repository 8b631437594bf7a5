"""Commands on ``mmme/v1/<rig_id>/cmd``: validated, dispatched, always answered.

Anything that is not a valid command (oversize, not UTF-8, not JSON, wrong types,
unknown command) gets an error ack on ``ack``; the handler's own exceptions become
error acks too. Nothing here raises into the MQTT loop.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from edge.mqtt import messages

MAX_COMMAND_BYTES = 4096


class CommandError(Exception):
    """Raised by a command handler to refuse a well-formed command (e.g. wrong state)."""


Handler = Callable[[str, dict[str, Any]], dict[str, Any]]


class CommandHandler:
    def __init__(self, handler: Handler | None) -> None:
        self._handler = handler

    def handle(self, raw: bytes) -> dict[str, Any]:
        """Turn one raw payload into an ack body (never raises)."""
        if len(raw) > MAX_COMMAND_BYTES:
            return _nak(None, None, f"payload of {len(raw)} bytes exceeds {MAX_COMMAND_BYTES}")
        try:
            doc = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            return _nak(None, None, "payload is not UTF-8")
        except json.JSONDecodeError as exc:
            return _nak(None, None, f"payload is not JSON: {exc.msg} at {exc.pos}")
        except RecursionError:  # e.g. 4000 nested '[' fits in the size limit
            return _nak(None, None, "payload is nested too deeply")
        cmd_id = doc.get("cmd_id") if isinstance(doc, dict) else None
        cmd = doc.get("cmd") if isinstance(doc, dict) else None
        cmd_id = cmd_id if isinstance(cmd_id, str) else None
        cmd = cmd if isinstance(cmd, str) else None
        errors = messages.validate("cmd", doc)
        if errors:
            return _nak(cmd_id, cmd, "invalid command: " + "; ".join(errors[:3]))
        if self._handler is None:
            return _nak(cmd_id, cmd, "this rig accepts no commands")
        try:
            result = self._handler(doc["cmd"], doc.get("args", {}))
        except CommandError as exc:
            return _nak(cmd_id, cmd, str(exc))
        except Exception as exc:  # a handler bug must not take the service down
            return _nak(cmd_id, cmd, f"internal error: {type(exc).__name__}: {exc}")
        result = result or {}
        if not isinstance(result, dict) or not _encodable(result):
            # the ack must still encode, or the publisher's thread would die on it
            return _nak(cmd_id, cmd, f"internal error: handler returned {type(result).__name__}"
                        " that is not a JSON object")
        return {"cmd_id": cmd_id, "cmd": cmd, "ok": True, "result": result}


def _encodable(result: dict[str, Any]) -> bool:
    try:
        messages.encode(result)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def _nak(cmd_id: str | None, cmd: str | None, error: str) -> dict[str, Any]:
    return {"cmd_id": cmd_id, "cmd": cmd, "ok": False, "error": error[:300]}
