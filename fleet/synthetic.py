"""Synthetic result bodies with the rig's shapes, for the bench and the tests.

They go through the real publisher (``edge.mqtt.publisher.Publisher``), which stamps
the envelope and commits QoS 1 kinds to its outbox, so what reaches the fleet is what a
rig sends. The rates are the rig's: vitals and health at 1 Hz, an expression about
every 8 s followed by its fused emotion, a stimulus marker about every 4 s.
"""

from __future__ import annotations

import random
from typing import Any

from sensors.blocks import monotonic_ns

RATES_HZ = {"vitals": 1.0, "health": 1.0, "events/me": 1 / 8, "events/emotion": 1 / 8,
            "markers": 1 / 4}


def me_body(rng: random.Random) -> dict[str, Any]:
    apex = monotonic_ns()
    return {"kind": rng.choice(["micro", "macro"]), "regions": ["upper", "lower"],
            "aus": ["AU4", "AU12"], "confidence": round(rng.random(), 3),
            "interval": {"onset_frame": 10, "apex_frame": 20, "offset_frame": 40,
                         "onset_ns": apex - 60_000_000, "apex_ns": apex,
                         "offset_ns": apex + 130_000_000},
            "visual_probs": {"negative": 0.2, "positive": 0.5, "surprise": 0.3}}


def emotion_body(me_msg_id: str, me: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    apex = me["interval"]["apex_ns"]
    probs = {"negative": 0.2, "positive": 0.6, "surprise": 0.2}
    return {"me_msg_id": me_msg_id, "interval": me["interval"],
            "window": {"t0_ns": apex, "t1_ns": apex + 4_000_000_000},
            "composite": probs, "predicted": "positive", "predicted_emotion": "happiness",
            "contributions": {"visual": 0.5, "eeg": 0.2, "peripheral": round(rng.random(), 3)},
            "model_version": "synthetic"}


def vitals_body(rng: random.Random) -> dict[str, Any]:
    return {"hr_bpm": round(60 + 20 * rng.random(), 1), "rr_bpm": 14.0,
            "eda_us": round(2 + rng.random(), 3), "skt_c": 33.1,
            "eeg_bands": {"alpha": 1.0, "beta": 0.5}, "valid": {"hr": True}}


def marker_body(code: int) -> dict[str, Any]:
    return {"code": code, "marker_t_ns": monotonic_ns()}


def health_body(rng: random.Random, backlog: int = 0) -> dict[str, Any]:
    return {"streams": {"eeg": {"rate_hz": 1000.0, "dropped": rng.randrange(3),
                                "sync_uncertainty_ms": round(0.1 + rng.random() / 10, 3),
                                "flowing": True},
                        "camera": {"rate_hz": 150.0, "dropped": 0,
                                   "sync_uncertainty_ms": 0.9, "flowing": True}},
            "cpu_percent": 85.0, "rss_mb": 370.0, "temperature_c": None,
            "disk_free_mb": 10_000.0, "outbox_backlog": backlog, "outbox_dropped": 0}
