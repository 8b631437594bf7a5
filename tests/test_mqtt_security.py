"""MQTT security against a real Mosquitto: TLS with CA and hostname verification, client
certificates, passwords from a file, and the example ACL that fences each rig into its
own subtree. Certificates come from a throwaway CA made with the openssl command."""

from __future__ import annotations

import getpass
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.mqtt.publisher import MqttSettings, Publisher, status_body
from hil.broker import Broker, free_port, mosquitto_binary

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
REPO = Path(__file__).resolve().parents[1]
ACL_EXAMPLE = REPO / "systemd" / "mosquitto-acl.example"
CONF_EXAMPLE = REPO / "systemd" / "mosquitto-rig.conf.example"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
# Started as root, Mosquitto drops to the `mosquitto` user, which cannot read the
# certificates in pytest's private tmp dirs: keep it as whoever runs the tests
# (hil.broker.Broker does this itself; the example config run by hand needs it).
AS_ME = f"user {getpass.getuser()}\n"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@dataclass(frozen=True)
class Pki:
    dir: Path

    def __getattr__(self, name: str) -> str:  # pki.ca_crt -> "<dir>/ca.crt"
        stem, _, ext = name.rpartition("_")
        return str(self.dir / f"{stem}.{ext}")


def _ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
             "-subj", f"/CN={name}", cwd=d)


def _leaf(d: Path, name: str, ca: str, san: str, usage: str) -> None:
    (d / f"{name}.ext").write_text(f"subjectAltName={san}\nextendedKeyUsage={usage}\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
             "-extfile", f"{name}.ext", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """ca signs server (SAN localhost + 127.0.0.1), elsewhere (SAN another host) and
    client; stranger is a CA that signed nothing of ours."""
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "ca")
    _ca(d, "stranger")
    _leaf(d, "server", "ca", "DNS:localhost,IP:127.0.0.1", "serverAuth")
    _leaf(d, "elsewhere", "ca", "DNS:broker.elsewhere.example", "serverAuth")
    _leaf(d, "client", "ca", "DNS:rig-t", "clientAuth")
    return Pki(d)


def _tls_listener(pki: Pki, port: int, server: str = "server",
                  require_cert: bool = False) -> str:
    return "\n".join([
        f"listener {port} 127.0.0.1",
        f"cafile {pki.ca_crt}",
        f"certfile {pki.dir / (server + '.crt')}",
        f"keyfile {pki.dir / (server + '.key')}",
        f"require_certificate {'true' if require_cert else 'false'}",
    ])


def _publisher(tmp: Path, port: int, rig: str, **tls: Any) -> Publisher:
    s = MqttSettings(host=tls.pop("host", "127.0.0.1"), port=port, keepalive_s=5,
                     outbox=str(tmp / f"{rig}.sqlite"), reconnect_max_s=0.5, **tls)
    pub = Publisher(s, rig, status_body("test", "none", "cafe", ["eeg"]),
                    on_command=lambda cmd, args: {"did": cmd})
    pub.start()
    return pub


def _eventually(cond: Any, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return bool(cond())


def _stays_disconnected(pub: Publisher, attempts: int = 2) -> None:
    """The publisher tried (and failed) at least ``attempts`` times and never got in."""
    assert _eventually(lambda: pub.counters.last_error != ""), "no attempt was made"
    time.sleep(0.5 * attempts)  # a couple of reconnect cycles at reconnect_max_s=0.5
    assert not pub.connected and pub.counters.connects == 0


@pytest.fixture(scope="module")
def tls_broker(pki: Pki) -> Iterator[tuple[Broker, int]]:
    port = free_port()
    with Broker(extra_conf=_tls_listener(pki, port)) as b:
        yield b, port


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_tls_with_the_right_ca_connects_and_delivers(
    tls_broker: tuple[Broker, int], pki: Pki, tmp_path: Path, host: str
) -> None:
    _, port = tls_broker
    pub = _publisher(tmp_path, port, "rig-t", host=host, tls=True, ca_file=pki.ca_crt)
    try:
        assert _eventually(lambda: pub.connected), pub.counters.last_error
        pub.publish("events/me", {"kind": "micro", "regions": ["upper"], "confidence": 0.5,
                                  "interval": {"onset_ns": 1, "apex_ns": 2, "offset_ns": 3}})
        assert _eventually(lambda: pub.counters.acked >= 1 and len(pub.outbox) == 0)
    finally:
        pub.stop()


def test_tls_with_the_wrong_ca_never_connects_and_says_why(
    tls_broker: tuple[Broker, int], pki: Pki, tmp_path: Path
) -> None:
    _, port = tls_broker
    pub = _publisher(tmp_path, port, "rig-t", tls=True, ca_file=pki.stranger_crt)
    try:
        _stays_disconnected(pub)
        assert "certificate verify failed" in pub.counters.last_error
    finally:
        pub.stop()


def test_tls_refuses_a_broker_whose_certificate_names_another_host(
    pki: Pki, tmp_path: Path
) -> None:
    port = free_port()
    with Broker(extra_conf=_tls_listener(pki, port, server="elsewhere")):
        pub = _publisher(tmp_path, port, "rig-t", tls=True, ca_file=pki.ca_crt)
        try:
            _stays_disconnected(pub)
            assert "mismatch" in pub.counters.last_error  # "IP address mismatch"
        finally:
            pub.stop()


def test_client_certificate_required_and_supplied(pki: Pki, tmp_path: Path) -> None:
    port = free_port()
    with Broker(extra_conf=_tls_listener(pki, port, require_cert=True)):
        anonymous = _publisher(tmp_path, port, "rig-nocert", tls=True, ca_file=pki.ca_crt)
        try:
            _stays_disconnected(anonymous)
        finally:
            anonymous.stop()
        pub = _publisher(tmp_path, port, "rig-t", tls=True, ca_file=pki.ca_crt,
                         cert_file=pki.client_crt, key_file=pki.client_key)
        try:
            assert _eventually(lambda: pub.connected), pub.counters.last_error
        finally:
            pub.stop()


# -- passwords and the ACL ------------------------------------------------------------
USERS = {"rig-a": "pw-a", "rig-b": "pw-b", "dashboard": "pw-dash"}


def _password_file(d: Path) -> Path:
    path = d / "passwd"
    for i, (user, pw) in enumerate(USERS.items()):
        # -b takes the password as an argument: fine for a test, never for a rig
        flags = ["-c", "-b"] if i == 0 else ["-b"]
        subprocess.run([MOSQUITTO_PASSWD, *flags, str(path), user, pw], check=True,
                       capture_output=True)
    return path


def _credentials(d: Path, user: str, pw: str | None = None) -> str:
    path = d / f"{user}.cred"
    path.write_text(f"{user}\n{USERS[user] if pw is None else pw}\n")
    path.chmod(0o600)
    return str(path)


class Client:
    """A bare authenticated paho client recording what it receives and its PUBACKs."""

    def __init__(self, port: int, user: str, subscribe: list[str]) -> None:
        self.got: list[tuple[str, dict[str, Any]]] = []
        self.pubacks: dict[int, Any] = {}
        self._lock = threading.Lock()
        ready = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                        client_id=f"test-{user}-{free_port()}")
        c.username_pw_set(user, USERS[user])
        c.on_connect = lambda cl, *_a: cl.subscribe([(t, 1) for t in subscribe])
        c.on_subscribe = lambda *_a: ready.set()
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.c = c
        assert ready.wait(10), f"{user} could not subscribe"

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.got.append((msg.topic, json.loads(msg.payload)))

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        self.pubacks[mid] = reason

    def publish(self, topic: str, doc: dict[str, Any]) -> int:
        return self.c.publish(topic, json.dumps(doc), qos=1).mid

    def seen(self, pred: Any) -> list[dict[str, Any]]:
        with self._lock:
            return [doc for topic, doc in self.got if pred(topic, doc)]

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    if not Path(MOSQUITTO_PASSWD).exists():
        pytest.skip("needs mosquitto_passwd")
    d = tmp_path_factory.mktemp("acl")
    conf = f"password_file {_password_file(d)}\nacl_file {ACL_EXAMPLE}\n"
    with Broker(extra_conf=conf, allow_anonymous=False) as b:
        yield b


def test_password_from_a_file_is_required(acl_broker: Broker, tmp_path: Path) -> None:
    wrong = _publisher(tmp_path, acl_broker.port, "rig-a",
                       credentials_file=_credentials(tmp_path, "rig-a", "guess"))
    try:
        _stays_disconnected(wrong)
        assert "refused" in wrong.counters.last_error
    finally:
        wrong.stop()
    right = _publisher(tmp_path, acl_broker.port, "rig-a",
                       credentials_file=_credentials(tmp_path, "rig-a"))
    try:
        assert _eventually(lambda: right.connected), right.counters.last_error
    finally:
        right.stop()


def test_example_acl_fences_each_rig_into_its_own_subtree(
    acl_broker: Broker, tmp_path: Path
) -> None:
    port = acl_broker.port
    dash = Client(port, "dashboard", ["mmme/v1/#"])
    rig_b = _publisher(tmp_path, port, "rig-b", credentials_file=_credentials(tmp_path, "rig-b"))
    # rig A, authenticated as itself, tries to eavesdrop on B's commands...
    rig_a = Client(port, "rig-a", ["mmme/v1/rig-b/cmd", "mmme/v1/rig-a/cmd"])
    try:
        assert _eventually(lambda: rig_b.connected), rig_b.counters.last_error
        # B's online status follows its cmd SUBSCRIBE on the same connection: once the
        # dashboard has it, a command to B cannot overtake B's subscription.
        assert _eventually(lambda: dash.seen(lambda t, d: t == "mmme/v1/rig-b/status"))
        # ...to forge an event as B and to command B; then a legitimate event of its own.
        forged = rig_a.publish("mmme/v1/rig-b/events/me", {"forged": True})
        rig_a.publish("mmme/v1/rig-b/cmd", {"cmd_id": "from-a", "cmd": "stop_recording"})
        rig_a.publish("mmme/v1/rig-a/events/me", {"own": True})
        # The dashboard commands B; B acknowledges; the dashboard commands A, A hears it.
        dash.publish("mmme/v1/rig-b/cmd", {"cmd_id": "from-dash", "cmd": "start_recording"})
        dash.publish("mmme/v1/rig-a/cmd", {"cmd_id": "for-a", "cmd": "start_recording"})

        def acked(cmd_id: str) -> Any:
            return lambda t, d: t == "mmme/v1/rig-b/ack" and d.get("cmd_id") == cmd_id

        assert _eventually(lambda: dash.seen(lambda t, d: d.get("own")))
        assert _eventually(lambda: dash.seen(acked("from-dash"))), "B never got its command"
        assert _eventually(lambda: rig_a.seen(lambda t, d: d.get("cmd_id") == "for-a"))
        assert _eventually(lambda: forged in rig_a.pubacks)
        time.sleep(0.5)  # grace for anything that should not arrive at all
        assert not dash.seen(lambda t, d: d.get("forged")), "A published into B's subtree"
        assert not dash.seen(acked("from-a")), "A commanded B"
        assert not rig_a.seen(lambda t, d: t.startswith("mmme/v1/rig-b/")), "A read B's cmd"
        assert rig_a.pubacks[forged].is_failure  # MQTT 5 says "Not authorized"
    finally:
        rig_a.stop()
        rig_b.stop()
        dash.stop()


# -- the shipped broker config ---------------------------------------------------------
def test_example_broker_config_serves_tls_and_websockets(pki: Pki, tmp_path: Path) -> None:
    """The example config, with its paths and ports swapped for test ones, starts and
    takes a rig over TLS with a client certificate and a dashboard over WebSockets."""
    if not Path(MOSQUITTO_PASSWD).exists():
        pytest.skip("needs mosquitto_passwd")
    plain, tls, ws = free_port(), free_port(), free_port()
    text = CONF_EXAMPLE.read_text()
    for old, new in {
        "/etc/mosquitto/mmme.passwd": str(_password_file(tmp_path)),
        "/etc/mosquitto/mmme.acl": str(ACL_EXAMPLE),
        "/etc/mosquitto/certs/mmme-ca.crt": pki.ca_crt,
        "/etc/mosquitto/certs/broker.crt": pki.server_crt,
        "/etc/mosquitto/certs/broker.key": pki.server_key,
        "/var/lib/mosquitto/": f"{tmp_path}/",
        "listener 1883 127.0.0.1": f"listener {plain} 127.0.0.1",
        "listener 8883": f"listener {tls} 127.0.0.1",
        "listener 9001": f"listener {ws} 127.0.0.1",
    }.items():
        assert old in text, old
        text = text.replace(old, new)
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(text + f"log_dest file {tmp_path}/mosquitto.log\n" + AS_ME)
    proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rig = dash = None
    try:
        rig = _publisher(tmp_path, tls, "rig-a", tls=True, ca_file=pki.ca_crt,
                         cert_file=pki.client_crt, key_file=pki.client_key,
                         credentials_file=_credentials(tmp_path, "rig-a"))
        got = threading.Event()
        dash = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                           transport="websockets", client_id="ws-dash")
        dash.username_pw_set("dashboard", USERS["dashboard"])
        dash.tls_set(ca_certs=pki.ca_crt)
        dash.on_connect = lambda c, *_a: c.subscribe("mmme/v1/rig-a/status", qos=1)
        dash.on_message = lambda *_a: got.set()
        assert _eventually(lambda: proc.poll() is None and _listening(ws)), _log(tmp_path)
        dash.connect("127.0.0.1", ws)
        dash.loop_start()
        assert _eventually(lambda: rig.connected), rig.counters.last_error + _log(tmp_path)
        assert got.wait(15), "the websocket dashboard never saw the rig's retained status"
    finally:
        if dash is not None:
            dash.disconnect()
            dash.loop_stop()
        if rig is not None:
            rig.stop()
        proc.terminate()
        proc.wait(10)


def _listening(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _log(d: Path) -> str:
    log = d / "mosquitto.log"
    return " | broker log: " + (log.read_text()[-800:] if log.exists() else "(none)")


def test_ack_of_a_forged_publish_is_counted_not_resent(acl_broker: Broker,
                                                       tmp_path: Path) -> None:
    """A rig configured with another rig's id: the broker refuses its publishes; the
    publisher counts the refusal and says so instead of looping on the row forever."""
    pub = _publisher(tmp_path, acl_broker.port, "rig-b",
                     credentials_file=_credentials(tmp_path, "rig-a"))
    try:
        assert _eventually(lambda: pub.connected), pub.counters.last_error
        pub.publish("markers", {"code": 7, "source": "test"})
        assert _eventually(lambda: pub.counters.extra.get("publish_refused", 0) >= 1)
        assert "refused" in pub.counters.last_error
        assert _eventually(lambda: len(pub.outbox) == 0)
    finally:
        pub.stop()
