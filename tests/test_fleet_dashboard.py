"""The dashboard shows a rig's recordings-home state from its health (headless Chromium,
a real Mosquitto with a WebSockets listener), as `mmme-fleet offload` reports it."""

from __future__ import annotations

import random
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from dashboard_driver import Browser, ensure_browser
from paho.mqtt.enums import CallbackAPIVersion

from edge.dashboard import page_url, serve
from edge.mqtt import messages
from edge.mqtt.publisher import status_body
from fleet.synthetic import health_body
from hil.broker import Broker, free_port


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    reason = ensure_browser()
    if reason:
        pytest.skip(reason)
    b = Browser()
    try:
        yield b
    finally:
        b.close()


def test_the_rig_card_shows_what_is_not_yet_home(browser: Browser) -> None:
    server, site = serve(0)
    env = messages.Envelope("off-rig")
    offload = {"queued": 2, "sending": "sub01.seg001.mcap", "verified": 5,
               "bytes_left": 3 * 2**30}
    with Broker(ws_port=free_port()) as b:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c.connect("127.0.0.1", b.port)
        c.loop_start()
        try:
            status = env.wrap("status", {**status_body("t", "m", "c", ["eeg"]),
                                         "state": "online"})
            c.publish("mmme/v1/off-rig/status", messages.encode(status), qos=1,
                      retain=True).wait_for_publish(5)
            browser.open(page_url(site, f"ws://127.0.0.1:{b.ws_port}"))
            browser.wait(lambda: browser.js("return mmmeDashboard.conn().state") == "connected",
                         15, "dashboard connected")
            card = '.card[data-rig="off-rig"]'

            def send(state: dict[str, object]) -> None:
                h = env.wrap("health", {**health_body(random.Random(0)), "offload": state})
                c.publish("mmme/v1/off-rig/health", messages.encode(h)).wait_for_publish(5)

            send(offload)
            browser.wait(lambda: "home: 2 queued, 3.00 GB left (sending sub01.seg001.mcap)"
                         in browser.text(card), 15, "offload state on the card")
            send({**offload, "queued": 0, "sending": None, "bytes_left": 0, "verified": 7})
            browser.wait(lambda: "home: all 7 verified" in browser.text(card), 15,
                         "all home")
            assert "silent" not in browser.text(card)
            send({**offload, "age_s": 900.0})  # the offloader stopped writing 15 min ago
            browser.wait(lambda: "offloader silent 15 min" in browser.text(card), 15,
                         "a dead offloader shows")
        finally:
            c.loop_stop()
            c.disconnect()
            server.shutdown()
            server.server_close()
