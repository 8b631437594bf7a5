"""A stand-in rig process for the MQTT delivery tests: the real Publisher and outbox.

argv: port outbox rig_id keepalive_s. Reads commands on stdin: ``emit START N`` publishes
expression events START..START+N-1 (printing ``produced i`` once each is committed), then
``ok``; ``quit`` (or EOF) shuts down cleanly.
"""

from __future__ import annotations

import sys

from edge.mqtt.publisher import MqttSettings, Publisher, status_body


def main() -> None:
    port, outbox, rig_id, keepalive = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    pub = Publisher(
        MqttSettings(host="127.0.0.1", port=port, outbox=outbox, keepalive_s=keepalive),
        rig_id, status_body("test", "none", "cafe", ["eeg"]),
    )
    pub.start()
    print("ok", flush=True)
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["emit"]:
            start, n = int(words[1]), int(words[2])
            for i in range(start, start + n):
                pub.publish("events/me", {
                    "kind": "micro", "regions": ["upper"], "confidence": 0.9,
                    "interval": {"onset_ns": i, "apex_ns": i + 1, "offset_ns": i + 2},
                    "index": i,
                })
                print(f"produced {i}", flush=True)
            print("ok", flush=True)
        elif words[:1] == ["quit"]:
            break
    pub.stop()


if __name__ == "__main__":
    main()
