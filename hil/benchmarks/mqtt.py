"""``mmme-hil bench mqtt``: what the durable outbox costs against plain paho.

A private Mosquitto, one counting subscriber, and N QoS 1 ``events/me`` messages of a
real payload's size sent twice: through the Publisher (every message committed to the
SQLite outbox before it may leave, deleted on PUBACK) and through a plain paho client
(same payloads, same in-flight window, waiting for every PUBACK). Each figure is
messages per second from the first publish until the broker acknowledged the last one
and the subscriber received all of them.

    mmme-hil bench mqtt [--n 5000] [--json]

The last line is one JSON object {"outbox_msgs_per_s": x, "plain_msgs_per_s": y, ...}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.mqtt import messages
from edge.mqtt.publisher import MqttSettings, Publisher, status_body
from edge.runtime import SWITCH_INTERVAL_S
from hil.broker import Broker

WINDOW = 64  # QoS 1 messages in flight, the same for both clients
BURST = 50  # events per publish_many call in the burst figure (one spotter window)


def event_body(i: int) -> dict[str, Any]:
    """An ``events/me`` body shaped like the spotter's (about 400 bytes wrapped)."""
    onset = 1_000_000_000 * i
    return {
        "kind": "micro", "regions": ["upper", "lower"], "confidence": 0.87,
        "interval": {"onset_ns": onset, "apex_ns": onset + 120_000_000,
                     "offset_ns": onset + 310_000_000},
        "aus": [{"au": "AU4", "intensity": 0.42}, {"au": "AU14", "intensity": 0.18}],
        "modalities": {"eeg": 0.61, "eda": 0.22, "ecg": 0.08},
        "session": "s01", "subject": "p007", "index": i,
    }


class Counter:
    """A bare subscriber: counts arrivals per topic, no parsing (so it is never the
    bottleneck of what is measured)."""

    def __init__(self, port: int, topic_filter: str) -> None:
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._filter = topic_filter
        c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                        client_id="bench-counter")
        c.on_connect = self._on_connect
        c.on_subscribe = lambda *_a: self._ready.set()
        c.on_message = self._on_message
        c.connect("127.0.0.1", port)
        c.loop_start()
        self._client = c
        if not self._ready.wait(10):
            raise TimeoutError("bench subscriber could not subscribe")

    def _on_connect(self, client: mqtt.Client, *_a: Any) -> None:
        client.subscribe(self._filter, qos=1)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.counts[msg.topic] = self.counts.get(msg.topic, 0) + 1

    def count(self, topic: str) -> int:
        with self._lock:
            return self.counts.get(topic, 0)

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def _wait(done: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def run_outbox(port: int, n: int, workdir: Path, counter: Counter, burst: int = 1) -> float:
    """Messages per second through Publisher + outbox; ``burst`` > 1 uses publish_many."""
    rig = f"bench-outbox-{burst}-{workdir.name}"
    pub = Publisher(MqttSettings(host="127.0.0.1", port=port, window=WINDOW,
                                 outbox=str(workdir / f"outbox-{burst}.sqlite")),
                    rig, status_body("bench", "none", "bench", ["eeg"]))
    pub.start()
    try:
        if not _wait(lambda: pub.connected, 10):
            raise RuntimeError(f"publisher did not connect: {pub.counters.last_error}")
        topic = messages.topic(rig, "events/me")
        t0_ns = time.monotonic_ns()
        for start in range(0, n, burst):
            bodies = [event_body(i) for i in range(start, min(start + burst, n))]
            if burst == 1:
                pub.publish("events/me", bodies[0])
            else:
                pub.publish_many("events/me", bodies)
        return _delivered_rate("outbox", n, t0_ns, lambda: pub.counters.acked, counter, topic)
    finally:
        pub.stop()


def _delivered_rate(what: str, n: int, t0_ns: int, acked: Callable[[], int],
                    counter: Counter, topic: str) -> float:
    """Messages per second from ``t0_ns`` until all ``n`` are acked and received (120 s
    at most, else RuntimeError)."""
    ok = _wait(lambda: acked() >= n and counter.count(topic) >= n, 120)
    elapsed_ns = time.monotonic_ns() - t0_ns
    if not ok:
        raise RuntimeError(f"{what} run incomplete: acked {acked()}, "
                           f"received {counter.count(topic)} of {n}")
    return n / (elapsed_ns / 1e9)


def run_plain(port: int, n: int, counter: Counter, rig: str = "bench-plain") -> float:
    """Messages per second through a bare paho client, QoS 1, all PUBACKs awaited."""
    env = messages.Envelope(rig)
    topic = messages.topic(rig, "events/me")
    acked = [0]
    connected = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, client_id=rig)
    c.max_inflight_messages_set(WINDOW)
    c.max_queued_messages_set(0)
    c.on_connect = lambda *_a: connected.set()

    def on_publish(*_a: Any) -> None:
        acked[0] += 1

    c.on_publish = on_publish
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        if not connected.wait(10):
            raise RuntimeError("plain client did not connect")
        t0_ns = time.monotonic_ns()
        for i in range(n):
            c.publish(topic, messages.encode(env.wrap("events/me", event_body(i))), qos=1)
        return _delivered_rate("plain", n, t0_ns, lambda: acked[0], counter, topic)
    finally:
        c.disconnect()
        c.loop_stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mmme-hil bench mqtt", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=5000, help="QoS 1 events per run")
    p.add_argument("--repeat", type=int, default=3, help="interleaved runs; medians reported")
    p.add_argument("--json", action="store_true", help="end with one JSON line")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    sys.setswitchinterval(SWITCH_INTERVAL_S)  # as in the rig process that hosts the Publisher
    size = len(messages.encode(messages.Envelope("bench-outbox-1").wrap("events/me",
                                                                       event_body(0))))
    runs: dict[str, list[float]] = {"plain": [], "outbox": [], "burst": []}
    with tempfile.TemporaryDirectory(prefix="mmme-bench-mqtt-") as tmp, Broker() as broker:
        counter = Counter(broker.port, "mmme/v1/+/events/me")
        try:
            # Interleaved so a load spike on a shared machine hits every variant alike.
            for k in range(args.repeat):
                work = Path(tmp) / str(k)
                runs["plain"].append(run_plain(broker.port, args.n, counter, f"plain{k}"))
                runs["outbox"].append(run_outbox(broker.port, args.n, work, counter))
                runs["burst"].append(run_outbox(broker.port, args.n, work, counter, BURST))
        finally:
            counter.stop()
    plain, outbox, burst = (statistics.median(runs[k]) for k in ("plain", "outbox", "burst"))
    result = {
        "outbox_msgs_per_s": round(outbox, 1),
        "plain_msgs_per_s": round(plain, 1),
        "outbox_burst_msgs_per_s": round(burst, 1),
        "plain_over_outbox": round(plain / outbox, 2),
        "plain_over_outbox_burst": round(plain / burst, 2),
        "burst": BURST,
        "n": args.n,
        "repeat": args.repeat,
        "payload_bytes": size,
    }
    print(f"{args.n} QoS 1 events of {size} bytes, median of {args.repeat}: "
          f"plain paho {plain:.0f} msg/s; Publisher+outbox one publish() per event "
          f"{outbox:.0f} msg/s (plain is x{plain / outbox:.2f}); publish_many bursts of "
          f"{BURST} {burst:.0f} msg/s (plain is x{plain / burst:.2f})")
    if args.json:
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
