"""The live dashboard in a real headless Chromium, against a real Mosquitto with a
WebSockets listener and simulated rigs (child processes running the real Publisher).

Needs Debian's chromium + chromium-driver and Selenium: dashboard/install-test-deps.sh
installs them (the fixture runs it when something is missing). Screenshots go to
artifacts/dashboard/ (fleet.png, rig.png, error.png); with MMME_UPDATE_SCREENSHOTS=1
they are also copied to docs/screenshots/ for the README.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dashboard_driver import Browser, ensure_browser

from edge.dashboard import page_url, serve
from edge.mqtt import messages
from hil.broker import Broker, free_port
from hil.dashboard_rigs import SimRig, start_fleet

ROOT = Path(__file__).resolve().parent.parent
ART = ROOT / "artifacts" / "dashboard"
DOCS = ROOT / "docs" / "screenshots"
KEEPALIVE_S = 2


def _shot(browser: Browser, name: str) -> Path:
    path = browser.screenshot(ART / name)
    if os.environ.get("MMME_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, DOCS / name)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    reason = ensure_browser()
    if reason:
        pytest.skip(reason)
    ART.mkdir(parents=True, exist_ok=True)
    b = Browser(log_dir=ART)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module")
def ws_broker() -> Iterator[Broker]:
    with Broker(ws_port=free_port()) as b:
        yield b


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server, url = serve(0)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def rigs(ws_broker: Broker, tmp_path: Path) -> Iterator[Callable[..., list[SimRig]]]:
    started: list[SimRig] = []

    def start(*ids: str, auto_events: bool = False) -> list[SimRig]:
        new = start_fleet(ws_broker.port, list(ids), tmp_path, KEEPALIVE_S, auto_events)
        started.extend(new)
        return new

    yield start
    for r in started:
        r.close()


def _open(browser: Browser, site: str, broker: Broker, **params: str) -> None:
    browser.open(page_url(site, f"ws://127.0.0.1:{broker.ws_port}", **params))
    browser.wait(lambda: browser.js("return mmmeDashboard.conn().state") == "connected",
                 15, "dashboard connected to the broker")


def _points(browser: Browser, canvas: str) -> int:
    return int(browser.attr(f"#{canvas}", "data-points") or 0)


def _config_hash(rig_id: str) -> str:  # what hil.dashboard_rigs announces
    return hashlib.sha256(f"sim:{rig_id}".encode()).hexdigest()[:12]


def test_static_server_serves_page_vendor_and_schemas(site: str) -> None:
    import urllib.error
    import urllib.request

    for path in ("", "app.js", "vendor/mqtt.min.js", "vendor/ajv2020.min.js",
                 "schemas/events_me.schema.json"):
        with urllib.request.urlopen(site + path, timeout=5) as res:
            assert res.status == 200, path
    with urllib.request.urlopen(site + "schemas/vitals.schema.json", timeout=5) as res:
        assert json.loads(res.read())["$id"] == "mmme/v1/vitals.schema.json"
    for path in ("../pyproject.toml", "install-test-deps.sh", "schemas/../../edge/cli.py"):
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(site + path, timeout=5)


def test_fleet_shows_rig_online_then_offline_after_sigkill(
        browser: Browser, site: str, ws_broker: Broker, rigs: Callable[..., list[SimRig]]) -> None:
    (rig,) = rigs("rig-kill")
    _open(browser, site, ws_broker)
    card = '.card[data-rig="rig-kill"]'
    browser.wait(lambda: browser.attr(card, "data-state") == "online", 15, "rig-kill online")
    browser.wait(lambda: "1000 Hz" in browser.text(f'{card} tr[data-stream="eeg"]'), 10,
                 "per-stream health of rig-kill")
    text = browser.text(card)
    for expected in ("0.1.0+sim", "fusion-int8-sim-2", _config_hash("rig-kill"), "camera",
                     "150 fps", "markers"):
        assert expected in text, (expected, text)

    rig.kill()  # SIGKILL: no DISCONNECT, the broker publishes the will after 1.5 keepalives
    t_kill = time.monotonic()
    browser.wait(lambda: browser.attr(card, "data-state") == "offline",
                 1.5 * KEEPALIVE_S + 6, "rig-kill offline after SIGKILL")
    elapsed = time.monotonic() - t_kill
    assert "connection lost" in browser.text(card)
    assert elapsed < 1.5 * KEEPALIVE_S + 3, elapsed

    # The broker URL is remembered: the bare page (same origin) has it, and does not connect.
    ws = f"ws://127.0.0.1:{ws_broker.ws_port}"
    assert browser.js("return localStorage.getItem('mmme-dashboard.url')") == ws
    browser.open(site)
    assert browser.js("return document.getElementById('conn-url').value") == ws
    assert browser.js("return mmmeDashboard.conn().state") == "disconnected"


def test_rig_view_plots_vitals_and_lists_expressions(
        browser: Browser, site: str, ws_broker: Broker, rigs: Callable[..., list[SimRig]]) -> None:
    (rig,) = rigs("rig-view")
    _open(browser, site, ws_broker, rig="rig-view", window="60")
    browser.wait(lambda: browser.attr("#rig-state", "data-state") == "online", 15, "rig view")
    for canvas in ("plot-hr", "plot-rr", "plot-eda", "plot-skt", "plot-eeg"):
        browser.wait(lambda c=canvas: _points(browser, c) >= 3, 15, f"{canvas} has 3 points")

    micro = rig.inject_me(kind="micro", regions=["upper", "lower"], aus=["AU4", "AU12"],
                          confidence=0.87)
    macro = rig.inject_me(kind="macro", regions=["mid"], aus=["AU9"], confidence=0.66)
    rig.marker(42)
    li = f'#rig-events li[data-msg-id="{micro}"]'
    browser.wait(lambda: browser.css(li), 10, "the micro-expression in the list")
    text = browser.text(li)
    for expected in ("micro-expression", "upper, lower", "AU4 AU12", "0.87"):
        assert expected in text, (expected, text)
    browser.wait(lambda: "macro-expression" in browser.text(
        f'#rig-events li[data-msg-id="{macro}"]'), 10, "the macro expression in the list")
    browser.wait(lambda: browser.css('#rig-events li[data-type="marker"][data-code="42"]'), 10,
                 "marker 42 in the list")
    # Each expression's fused emotion follows about 2 s later, with its probabilities.
    browser.wait(lambda: len(browser.css('#rig-events li[data-type="emotion"]')) >= 2, 10,
                 "two fused emotions")
    emo = browser.text('#rig-events li[data-type="emotion"]')
    assert "emotion:" in emo and any(c in emo for c in ("negative", "positive", "surprise"))
    assert _points(browser, "plot-timeline") >= 3  # marker + 2 expressions (+ emotions)
    assert browser.js("return mmmeDashboard.rig('rig-view').vitals") >= 3

    # The same message twice (a replay after a lost PUBACK): shown once.
    dup_before = browser.stats()["duplicates"]
    env = messages.Envelope("rig-view", boot_id="replay")
    body = messages.encode(env.wrap("events/me", {
        "kind": "micro", "regions": ["mid"], "aus": ["AU9"], "confidence": 0.5,
        "interval": {"onset_ns": 1, "apex_ns": 2, "offset_ns": 3}}))
    rig.inject_malformed("events/me", payload=body)
    rig.inject_malformed("events/me", payload=body)
    browser.wait(lambda: browser.stats()["duplicates"] > dup_before, 10, "the duplicate seen")
    replay = '#rig-events li[data-msg-id="rig-view.replay.0"]'
    browser.wait(lambda: len(browser.css(replay)) == 1, 5, "the replayed expression, once")
    time.sleep(0.3)
    assert len(browser.css(replay)) == 1

    # A runtime stage that keeps failing shows in the health line, with its last error.
    rig.fail_sink("processing", "RuntimeError: boom")
    browser.wait(lambda: "processing failed 1× (RuntimeError: boom)" in browser.text(
        "#rig-health"), 10, "the failing sink in the health line")


def test_start_and_stop_recording_show_their_acks(
        browser: Browser, site: str, ws_broker: Broker, rigs: Callable[..., list[SimRig]]) -> None:
    rigs("rig-rec", auto_events=True)
    _open(browser, site, ws_broker, rig="rig-rec", window="60")
    browser.wait(lambda: browser.attr("#rig-state", "data-state") == "online", 15, "rig view")
    browser.wait(lambda: _points(browser, "plot-hr") >= 2, 10, "vitals plotted")
    assert browser.attr("#rig-rec", "data-on") == "0"

    def ack_of(cmd: str, state: str) -> str:
        sel = f'#rig-cmds li[data-mine="1"][data-state="{state}"]'
        items = [e for e in browser.css(sel) if cmd in e.text]
        return items[0].get_attribute("data-cmd-id") if items else ""

    browser.click("#btn-start")
    cmd_id = browser.wait(lambda: ack_of("start_recording", "ok"), 10, "start_recording ack")
    assert cmd_id.startswith("dash-")
    browser.wait(lambda: browser.attr("#rig-rec", "data-on") == "1", 10, "recording shown")
    assert "ack ok" in browser.text(f'#rig-cmds li[data-cmd-id="{cmd_id}"]')

    browser.click("#btn-stop")
    stop_id = browser.wait(lambda: ack_of("stop_recording", "ok"), 10, "stop_recording ack")
    assert stop_id != cmd_id
    browser.wait(lambda: browser.attr("#rig-rec", "data-on") == "0", 10, "not recording shown")
    # A refused command shows the rig's error ack (the button is disabled, so send directly).
    bad = browser.js("return mmmeDashboard.sendCommand('rig-rec', 'stop_recording', {})")
    browser.wait(lambda: browser.attr(f'#rig-cmds li[data-cmd-id="{bad}"]', "data-state")
                 == "error", 10, "error ack of a refused command")
    assert "not recording" in browser.text(f'#rig-cmds li[data-cmd-id="{bad}"]')


def test_malformed_payloads_show_a_message_and_nothing_else_breaks(
        browser: Browser, site: str, ws_broker: Broker, rigs: Callable[..., list[SimRig]]) -> None:
    (rig,) = rigs("rig-bad")
    _open(browser, site, ws_broker, rig="rig-bad", window="60")
    browser.wait(lambda: _points(browser, "plot-hr") >= 2, 15, "vitals plotted")
    assert browser.css("#errors")[0].is_displayed() is False

    rig.inject_malformed("vitals", "not-json")
    rig.inject_malformed("events/me", "schema")
    rig.inject_malformed("health", "not-utf8")
    rig.inject_malformed("status", "schema")
    browser.wait(lambda: len(browser.css("#errors-list li")) >= 4, 10, "four error messages")
    assert browser.css("#errors")[0].is_displayed()

    def reason(topic: str) -> str:
        found = [e.text for e in browser.css("#errors-list li")
                 if e.get_attribute("data-topic") == topic]
        return found[0] if found else ""

    assert "not JSON" in reason("mmme/v1/rig-bad/vitals")
    me = reason("mmme/v1/rig-bad/events/me")
    assert "events_me.schema.json" in me and "rig-bad" in me, me
    assert "not UTF-8" in reason("mmme/v1/rig-bad/health")
    assert "status.schema.json" in reason("mmme/v1/rig-bad/status")
    _shot(browser, "error.png")

    # Everything else keeps working: still online, vitals still plotted, events still listed.
    assert browser.attr("#rig-state", "data-state") == "online"
    n = browser.js("return mmmeDashboard.rig('rig-bad').vitals")
    browser.wait(lambda: browser.js("return mmmeDashboard.rig('rig-bad').vitals") >= n + 2, 10,
                 "vitals keep coming after the bad payloads")
    ok = rig.inject_me(kind="micro", regions=["mid"], aus=["AU6"], confidence=0.7)
    browser.wait(lambda: browser.css(f'#rig-events li[data-msg-id="{ok}"]'), 10,
                 "an expression after the bad payloads")
    assert browser.js("return mmmeDashboard.conn().state") == "connected"
    assert browser.stats()["unreadable"] >= 4
    assert not [m for m in browser.console() if "Uncaught" in m]


def test_ten_rigs_all_shown_and_updates_stay_cheap(
        browser: Browser, site: str, ws_broker: Broker, rigs: Callable[..., list[SimRig]]) -> None:
    ids = [f"fleet-{i:02d}" for i in range(1, 11)]
    fleet = rigs(*ids, auto_events=True)
    _open(browser, site, ws_broker, window="60")

    def online() -> list[str]:
        return [i for i in ids
                if browser.attr(f'.card[data-rig="{i}"]', "data-state") == "online"]

    browser.wait(lambda: len(online()) == 10, 20, "all ten rigs online")
    browser.js("mmmeDashboard.resetStats()")
    t_end = time.monotonic() + 10
    k = 0
    while time.monotonic() < t_end:  # extra expressions on top of the 1 Hz vitals/health
        fleet[k % 10].inject_me()
        k += 1
        time.sleep(0.2)
    fleet_stats = browser.stats()
    _shot(browser, "fleet.png")
    # The rig view of one of them, while all ten keep publishing.
    t0 = time.monotonic()
    browser.css('.card[data-rig="fleet-05"]')[0].click()
    browser.wait(lambda: browser.attr("#rig-state", "data-state") == "online"
                 and _points(browser, "plot-hr") >= 5, 5, "fleet-05 rig view")
    open_s = time.monotonic() - t0
    browser.js("mmmeDashboard.resetStats()")
    time.sleep(6)
    rig_stats = browser.stats()
    # Recording under load, for the rig view's screenshot (some history by now).
    browser.click("#btn-start")
    browser.wait(lambda: browser.css('#rig-cmds li[data-mine="1"][data-state="ok"]'), 10,
                 "start_recording ack under load")
    browser.wait(lambda: browser.attr("#rig-rec", "data-on") == "1", 10, "recording shown")
    _shot(browser, "rig.png")

    report = {"fleet_view": fleet_stats, "rig_view": rig_stats, "open_rig_view_s": open_s}
    (ART / "perf.json").write_text(json.dumps(report, indent=2))
    print(f"\n10 rigs, fleet view: {fleet_stats['applied']} messages in "
          f"{fleet_stats['seconds']:.1f} s, update {fleet_stats['avgUpdateMs']:.2f} ms avg "
          f"(max {fleet_stats['updateMsMax']:.1f}), frame {fleet_stats['avgFrameMs']:.2f} ms avg; "
          f"rig view: update {rig_stats['avgUpdateMs']:.2f} ms avg, "
          f"frame {rig_stats['avgFrameMs']:.2f} ms avg; opened in {open_s:.2f} s")
    assert fleet_stats["applied"] >= 10 * 2 * 8  # vitals + health from each rig, ~10 s
    assert fleet_stats["unreadable"] == 0
    for s in (fleet_stats, rig_stats):
        assert s["frames"] > 0 and s["updates"] > 0
        assert s["avgUpdateMs"] < 100, s
    assert open_s < 5


def test_exported_copy_works_on_a_plain_static_server(
        browser: Browser, ws_broker: Broker, rigs: Callable[..., list[SimRig]],
        tmp_path: Path) -> None:
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from edge.dashboard import main

    out = tmp_path / "site"
    assert main(["--export", str(out)]) == 0
    assert (out / "schemas" / "events_emotion.schema.json").is_file()
    assert (out / "vendor" / "LICENSE.mqtt.md").is_file()
    rigs("rig-static")
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *_a: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(out)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _open(browser, f"http://127.0.0.1:{server.server_address[1]}/", ws_broker)
        browser.wait(lambda: browser.attr('.card[data-rig="rig-static"]', "data-state")
                     == "online", 15, "rig-static online via the exported copy")
        assert browser.stats()["unreadable"] == 0
    finally:
        server.shutdown()
        server.server_close()


def test_wss_with_username_and_password(browser: Browser, site: str, tmp_path: Path) -> None:
    """TLS WebSockets listener with a password file: the form's username/password are used,
    and a wrong password shows an error instead of a silent empty fleet."""
    import subprocess

    for tool in ("openssl", "mosquitto_passwd"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    # Mosquitto started as root drops to the mosquitto user: its files must be readable by
    # it (pytest's tmp_path is not), so they live in a world-readable temp dir.
    wd = Path(tempfile.mkdtemp(prefix="mmme-tls-"))
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(wd / "key.pem"), "-out", str(wd / "cert.pem")],
                       check=True, capture_output=True)
        passwd = wd / "passwd"
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "dash", "s3cret"], check=True,
                       capture_output=True)
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), "rig", "rigpw"], check=True,
                       capture_output=True)
        (wd / "rig.cred").write_text("rig:rigpw\n")
        for f in wd.iterdir():
            f.chmod(0o644)
        wd.chmod(0o755)
        wss_port = free_port()
        conf = (f"password_file {passwd}\nlistener {wss_port} 127.0.0.1\nprotocol websockets\n"
                f"certfile {wd / 'cert.pem'}\nkeyfile {wd / 'key.pem'}\n")
        with Broker(allow_anonymous=False, extra_conf=conf) as b:
            (rig,) = start_fleet(b.port, ["rig-tls"], tmp_path, KEEPALIVE_S, False,
                                 credentials_file=wd / "rig.cred")
            try:
                url = f"wss://127.0.0.1:{wss_port}"
                browser.open(page_url(site, url, username="dash", password="wrong"))
                browser.wait(lambda: browser.js("return mmmeDashboard.conn().state") == "error", 15,
                             "a refused login shows an error")
                time.sleep(2.5)  # no retry loop: it stays refused, with the reason on the page
                assert browser.attr("#conn-state", "data-state") == "error"
                assert "refused" in browser.text("#conn-state").lower()
                assert "rig-tls" not in browser.js("return mmmeDashboard.rigIds()")
                browser.open(page_url(site, url, username="dash", password="s3cret"))
                browser.wait(lambda: browser.attr('.card[data-rig="rig-tls"]', "data-state")
                             == "online", 15, "rig-tls online over wss with a password")
                # The password is not remembered; the user name is.
                user = browser.js("return localStorage.getItem('mmme-dashboard.username')")
                assert user == "dash"
                assert "s3cret" not in json.dumps(browser.js("return {...localStorage}"))
            finally:
                rig.close()
    finally:
        shutil.rmtree(wd, ignore_errors=True)
