"""Simulated rigs for the dashboard's tests and demos.

Each rig is its own child process running the real :class:`edge.mqtt.publisher.Publisher`
(with its own outbox in a temp dir), so killing the process with SIGKILL makes the
broker publish the rig's will (retained ``status`` offline, "connection lost").
A rig publishes status (retained), ``health`` and ``vitals`` every second, and from time
to time a stimulus ``markers`` code, a spotted expression (``events/me``) and, about
two seconds later, the fused ``events/emotion``. Its ``start_recording``,
``stop_recording``, ``set_session`` and ``insert_marker`` commands are the rig's own
(:class:`edge.controls.Controls`, recordings real MCAP files with the markers only), through
the Publisher's command handler (acks on ``ack``, recording state in the retained status).

    python -m hil.dashboard_rigs demo [--rigs 3]           # broker + dashboard + rigs
    python -m hil.dashboard_rigs rigs --port 1883 --rigs 3 # rigs on an existing broker

From Python (tests)::

    with SimRig(broker.port, "rig-01", keepalive_s=2) as rig:
        rig.inject_me(kind="micro", regions=["upper"], aus=["AU4"], confidence=0.8)
        rig.inject_malformed("vitals", "not-json")
        rig.kill()  # SIGKILL: the broker sends the will

The child reads one command a line on stdin (``me``/``emotion``/``marker``/``sink`` with a JSON
object of fields, ``quit``) and answers ``ok <msg_id>`` or ``err <reason>``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

STREAMS = {"eeg": 1000.0, "hub": 1000.0, "camera": 150.0, "markers": 0.0}
BANDS = ("delta", "theta", "alpha", "beta", "gamma")
CLASSES = ("negative", "positive", "surprise")
EMOTIONS = {"negative": ("disgust", "sadness", "fear", "anger"), "positive": ("happiness",),
            "surprise": ("surprise",)}
AUS = {"upper": ("AU1", "AU2", "AU4", "AU7"), "mid": ("AU6", "AU9"),
       "lower": ("AU10", "AU12", "AU14", "AU15", "AU17")}

MALFORMED = {
    # Not JSON at all (cut short).
    "not-json": lambda rig, kind: b'{"schema":"mmme/v1/' + kind.encode() + b'","hr_bpm":72,',
    # Not UTF-8.
    "not-utf8": lambda rig, kind: b"\xff\xfe\x00garbage\x80",
    # Valid JSON, but violates the schema (a string where a number goes, fields missing).
    "schema": lambda rig, kind: json.dumps({
        "schema": f"mmme/v1/{kind}", "v": 1, "msg_id": f"{rig}.bad.{random.randrange(10**9)}",
        "rig_id": rig, "seq": -1, "t_ns": 0, "wall_time": "now", "hr_bpm": "fast",
        "kind": "gigantic", "state": "sleepy", "code": 999}).encode(),
}


# ------------------------------------------------------------------------- child process
class _Sim:
    """The rig's physiology and event schedule (deterministic per seed)."""

    def __init__(self, rig_id: str, seed: int) -> None:
        self.rng = random.Random(seed)
        self.rig_id = rig_id
        self.hr0 = self.rng.uniform(62, 82)
        self.rr0 = self.rng.uniform(12, 17)
        self.eda0 = self.rng.uniform(1.5, 6.0)
        self.skt0 = self.rng.uniform(32.5, 34.5)
        self.arousal = 0.0  # decays; bumped by events (SCR, HR up)
        self.dropped = dict.fromkeys(STREAMS, 0)
        self.sinks: dict[str, dict[str, Any]] = {}  # failing runtime sinks, as health says

    def vitals(self, t: float) -> dict[str, Any]:
        r = self.rng
        self.arousal *= 0.85
        a = self.arousal
        hr = self.hr0 + 3 * math.sin(t / 9.0) + 6 * a + r.gauss(0, 0.8)
        rr = self.rr0 + 1.2 * math.sin(t / 23.0) + r.gauss(0, 0.3)
        eda = self.eda0 + 0.4 * math.sin(t / 41.0) + 1.5 * a + r.gauss(0, 0.03)
        skt = self.skt0 + 0.15 * math.sin(t / 97.0) - 0.1 * a + r.gauss(0, 0.01)
        alpha = 14 * (1 + 0.3 * math.sin(t / 13.0)) * (1 - 0.5 * a)
        bands = {"delta": 22 + r.gauss(0, 2), "theta": 9 + r.gauss(0, 1), "alpha": alpha,
                 "beta": 5 + 3 * a + r.gauss(0, 0.5), "gamma": 1.2 + r.gauss(0, 0.2)}
        return {
            "hr_bpm": round(hr, 1), "rr_bpm": round(rr, 1), "eda_us": round(eda, 3),
            "skt_c": round(skt, 2),
            "eeg_bands": {k: round(max(v, 0.05), 2) for k, v in bands.items()},
            "valid": {"hr_bpm": True, "rr_bpm": True, "eda_us": True, "skt_c": True},
        }

    def health(self, recording: bool, backlog: int) -> dict[str, Any]:
        r = self.rng
        streams = {}
        for name, fs in STREAMS.items():
            if r.random() < 0.05:
                self.dropped[name] += r.randrange(1, 4)
            if name == "markers":
                streams[name] = {"rate_hz": 0.1, "dropped": 0, "sync_uncertainty_ms": None,
                                 "flowing": True}
                continue
            streams[name] = {"rate_hz": round(fs * (1 + r.gauss(0, 2e-4)), 1 if fs < 500 else 0),
                             "dropped": self.dropped[name],
                             "sync_uncertainty_ms": round(abs(r.gauss(0.15, 0.05)), 3),
                             "flowing": True}
        return {"streams": streams, "cpu_percent": round(r.uniform(18, 42), 1),
                "rss_mb": round(r.uniform(180, 220), 1),
                "temperature_c": round(r.uniform(48, 61), 1),
                "disk_free_mb": round(r.uniform(20000, 21000)), "outbox_backlog": backlog,
                "outbox_dropped": 0, "recorder": "recording" if recording else "idle",
                **({"sinks": self.sinks} if self.sinks else {})}

    def sink_failed(self, name: str, error: str) -> None:
        f = self.sinks.setdefault(name, {"failures": 0, "resets": 0, "last_error": None})
        f["failures"] += 1
        f["last_error"] = error

    def me(self, t_ns: int, **over: Any) -> dict[str, Any]:
        r = self.rng
        kind = over.pop("kind", "micro" if r.random() < 0.7 else "macro")
        regions = over.pop("regions", sorted(r.sample(list(AUS), r.randint(1, 2)),
                                             key=list(AUS).index))
        aus = over.pop("aus", sorted({r.choice(AUS[g]) for g in regions}, key=lambda a: int(a[2:])))
        dur_ms = r.uniform(180, 480) if kind == "micro" else r.uniform(600, 2000)
        onset = t_ns - int(dur_ms * 1e6) - 200_000_000
        probs = [r.random() for _ in CLASSES]
        s = sum(probs)
        body = {"kind": kind, "regions": regions, "aus": aus,
                "interval": {"onset_ns": onset, "apex_ns": onset + int(dur_ms * 0.4e6),
                             "offset_ns": onset + int(dur_ms * 1e6)},
                "confidence": round(r.uniform(0.55, 0.97), 2),
                "visual_probs": {c: round(p / s, 3) for c, p in zip(CLASSES, probs, strict=True)}}
        body.update(over)
        self.arousal += 1.0
        return body

    def emotion(self, me_msg_id: str, me_body: dict[str, Any], t_ns: int,
                **over: Any) -> dict[str, Any]:
        r = self.rng
        probs = [r.random() ** 2 for _ in CLASSES]
        s = sum(probs)
        composite = {c: round(p / s, 3) for c, p in zip(CLASSES, probs, strict=True)}
        predicted = max(composite, key=composite.__getitem__)
        emo_names = [e for c in CLASSES for e in EMOTIONS[c]]
        raw = {e: r.random() for e in emo_names}
        raw_s = sum(raw.values())
        emotions = {e: round(v / raw_s, 3) for e, v in raw.items()}
        iv = me_body.get("interval", {"onset_ns": t_ns, "apex_ns": t_ns, "offset_ns": t_ns})
        body = {"me_msg_id": me_msg_id, "interval": iv,
                "window": {"t0_ns": iv["onset_ns"] - 1_000_000_000, "t1_ns": t_ns},
                "composite": composite, "emotions": emotions, "predicted": predicted,
                "predicted_emotion": max((e for e in EMOTIONS[predicted]), key=emotions.get),
                "contributions": {"visual": round(r.uniform(0.3, 0.6), 2),
                                  "eeg": round(r.uniform(0.1, 0.4), 2),
                                  "peripheral": round(r.uniform(0.1, 0.3), 2)},
                "model_version": "fusion-int8-sim"}
        body.update(over)
        return body


def child_main(argv: list[str]) -> int:
    """One rig (the child process); see :class:`SimRig` for the arguments."""
    from edge.controls import Controls
    from edge.mqtt.publisher import MqttSettings, Publisher, status_body
    from sensors.blocks import monotonic_ns

    p = argparse.ArgumentParser(prog="hil.dashboard_rigs child")
    p.add_argument("port", type=int)
    p.add_argument("rig_id")
    p.add_argument("outdir", type=Path)
    p.add_argument("--keepalive", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--auto", type=int, default=1, help="1: markers and expressions by itself")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--credentials", default="", help="file: user:password")
    a = p.parse_args(argv)
    port, rig_id, outdir, keepalive, seed, auto, host = (a.port, a.rig_id, a.outdir, a.keepalive,
                                                         a.seed, a.auto == 1, a.host)
    sim = _Sim(rig_id, seed)
    lock = threading.Lock()
    cfg_hash = hashlib.sha256(f"sim:{rig_id}".encode()).hexdigest()[:12]
    status = {**status_body("0.1.0+sim", "fusion-int8-sim-2", cfg_hash, list(STREAMS)),
              "session": ""}
    pub_box: list[Publisher] = []
    # The rig's own commands (edge.controls), carried out on this loop's thread: markers go
    # to the publisher, recordings are real (markers-only) MCAP files in ``outdir``.
    controls = Controls([_MarkerOutlet(pub_box)], _markers_recording(outdir, rig_id),
                        on_state=lambda **kw: pub_box[0].update_status(**kw))

    def on_command(cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        return controls.handle(cmd, args)

    pub = Publisher(
        MqttSettings(host=host, port=port, outbox=str(outdir / f"{rig_id}.sqlite"),
                     keepalive_s=keepalive, reconnect_max_s=1.0,
                     credentials_file=a.credentials),
        rig_id, status, on_command=on_command)
    pub_box.append(pub)
    pub.start()
    deadline = time.monotonic() + 15
    while not pub.connected and time.monotonic() < deadline:
        time.sleep(0.02)
    print("ready" if pub.connected else "err not connected", flush=True)

    pending_emotions: list[tuple[float, str, dict[str, Any]]] = []
    stop = threading.Event()
    say_lock = threading.Lock()

    def say(line: str) -> None:
        with say_lock:
            print(line, flush=True)

    def publish_me(**over: Any) -> str:
        t_ns = monotonic_ns()
        body = sim.me(t_ns, **over)
        msg_id = pub.publish("events/me", body)
        with lock:
            pending_emotions.append((time.monotonic() + 2.0, msg_id, body))
        return msg_id

    def read_stdin() -> None:
        for line in sys.stdin:
            word, _, rest = line.strip().partition(" ")
            try:
                fields = json.loads(rest) if rest else {}
                if word == "quit":
                    break
                if word == "me":
                    say(f"ok {publish_me(**fields)}")
                elif word == "emotion":
                    me_id = fields.pop("me_msg_id", f"{rig_id}.manual.0")
                    body = sim.emotion(me_id, {}, monotonic_ns(), **fields)
                    say(f"ok {pub.publish('events/emotion', body)}")
                elif word == "sink":
                    sim.sink_failed(str(fields["name"]), str(fields["error"]))
                    say("ok sink")
                elif word == "marker":
                    body = {"code": int(fields.get("code", 1)), "marker_t_ns": monotonic_ns()}
                    say(f"ok {pub.publish('markers', body)}")
                else:
                    say(f"err unknown command {word!r}")
            except Exception as exc:  # a bad line must not kill the rig
                say(f"err {type(exc).__name__}: {exc}")
        stop.set()

    threading.Thread(target=read_stdin, name="stdin", daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent says quit
    t0 = time.monotonic()
    next_tick = t0
    next_event = t0 + sim.rng.uniform(3, 8)
    while not stop.is_set():
        now = time.monotonic()
        if now >= next_tick:
            next_tick += 1.0
            if next_tick < now:  # fell behind (suspended): don't burst
                next_tick = now + 1.0
            pub.publish("vitals", sim.vitals(now - t0))
            rec = controls.recording is not None
            pub.publish("health", sim.health(rec, len(pub.outbox)))
        if auto and now >= next_event:
            next_event = now + sim.rng.uniform(6, 14)
            pub.publish("markers", {"code": sim.rng.randrange(1, 60),
                                    "marker_t_ns": monotonic_ns()})
            if sim.rng.random() < 0.8:
                publish_me()
        with lock:
            due = [p for p in pending_emotions if p[0] <= now]
            pending_emotions[:] = [p for p in pending_emotions if p[0] > now]
        for _, me_id, me_body in due:
            pub.publish("events/emotion", sim.emotion(me_id, me_body, monotonic_ns()))
        controls.apply_pending()
        stop.wait(0.05)
    if controls.recording is not None:
        controls.handle_now("stop_recording")
    pub.stop()
    return 0


class _MarkerOutlet:
    """The controls' only sink here: a software marker goes out on ``markers``."""

    def __init__(self, pub_box: list[Any]) -> None:
        self._pub = pub_box

    def on_block(self, block: Any) -> None:
        pass

    def on_frame(self, frame: Any) -> None:
        pass

    def on_marker(self, marker: Any) -> None:
        self._pub[0].publish("markers", {"code": marker.code, "marker_t_ns": marker.t_ns},
                             marker.t_ns)


def _markers_recording(outdir: Path, rig_id: str) -> Any:
    """``open_recording`` for :class:`edge.controls.Controls`: a real recorder, no streams."""
    from edge.recording.recorder import Recorder
    from edge.recording.sink import RecordingSink, recording_path

    def open_recording(session: str | None = None, subject: str | None = None) -> Any:
        path = recording_path(outdir, rig_id, session, subject)
        return RecordingSink(Recorder(path, []), record_frames=False)

    return open_recording


# ------------------------------------------------------------------------- parent side
class SimRig:
    """One simulated rig as a child process (the real Publisher inside)."""

    def __init__(self, port: int, rig_id: str, workdir: Path | None = None,
                 keepalive_s: int = 5, seed: int | None = None, auto_events: bool = True,
                 host: str = "127.0.0.1", credentials_file: str | Path = "") -> None:
        self.port, self.rig_id, self.host = port, rig_id, host
        self.credentials_file = str(credentials_file or "")
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"mmme-{rig_id}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.keepalive_s = keepalive_s
        self.seed = (seed if seed is not None
                     else int(hashlib.sha256(rig_id.encode()).hexdigest()[:6], 16))
        self.auto_events = auto_events
        self.proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str] = queue.Queue()
        self._cmd_lock = threading.Lock()

    def start(self, wait: bool = True) -> SimRig:
        root = Path(__file__).resolve().parent.parent
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hil.dashboard_rigs", "child", str(self.port), self.rig_id,
             str(self.workdir), f"--keepalive={self.keepalive_s}", f"--seed={self.seed}",
             f"--auto={1 if self.auto_events else 0}", f"--host={self.host}",
             f"--credentials={self.credentials_file}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root)
        threading.Thread(target=self._pump, name=f"{self.rig_id}-out", daemon=True).start()
        if wait:
            self.wait_ready()
        return self

    def _pump(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            self._lines.put(line.strip())

    def _reply(self, timeout_s: float) -> str:
        try:
            return self._lines.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"{self.rig_id}: no answer within {timeout_s} s") from None

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        line = self._reply(timeout_s)
        if line != "ready":
            raise RuntimeError(f"{self.rig_id} did not start: {line}")

    def _ask(self, word: str, fields: dict[str, Any] | None = None, timeout_s: float = 10.0) -> str:
        if not self.alive:
            raise RuntimeError(f"{self.rig_id} is not running")
        assert self.proc and self.proc.stdin
        with self._cmd_lock:
            self.proc.stdin.write(f"{word} {json.dumps(fields or {})}\n")
            self.proc.stdin.flush()
            line = self._reply(timeout_s)
        if not line.startswith("ok "):
            raise RuntimeError(f"{self.rig_id}: {line}")
        return line[3:]

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def inject_me(self, **fields: Any) -> str:
        """Publish a spotted expression now (fields override the simulated ones); msg_id.
        Its fused emotion follows about 2 s later."""
        return self._ask("me", fields)

    def inject_emotion(self, **fields: Any) -> str:
        return self._ask("emotion", fields)

    def marker(self, code: int) -> str:
        return self._ask("marker", {"code": code})

    def fail_sink(self, name: str, error: str) -> None:
        """From now on ``health`` says runtime sink ``name`` failed (once more), with ``error``."""
        self._ask("sink", {"name": name, "error": error})

    def inject_malformed(self, kind: str, mode: str = "not-json",
                         payload: bytes | None = None) -> bytes:
        """Publish an unreadable payload on this rig's ``kind`` topic (a separate plain MQTT
        client: the Publisher only ever sends valid payloads). Modes: not-json, not-utf8,
        schema; or exactly ``payload`` (e.g. a replayed message). Returns the bytes sent."""
        import paho.mqtt.publish as mqtt_publish

        from edge.mqtt.publisher import read_credentials

        data = payload if payload is not None else MALFORMED[mode](self.rig_id, kind)
        auth = None
        if self.credentials_file:
            user, pw = read_credentials(self.credentials_file)
            auth = {"username": user, "password": pw}
        mqtt_publish.single(f"mmme/v1/{self.rig_id}/{kind}", data, qos=1,
                            hostname=self.host, port=self.port, auth=auth,
                            client_id=f"mmme-inject-{self.rig_id}-{random.randrange(10**6)}")
        return data

    def kill(self) -> None:
        """SIGKILL: no clean disconnect, so the broker publishes the will."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Clean shutdown: the rig publishes its offline status itself."""
        if self.proc and self.proc.poll() is None:
            assert self.proc.stdin
            with contextlib.suppress(OSError):
                self.proc.stdin.write("quit {}\n")
                self.proc.stdin.flush()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def close(self) -> None:
        self.kill()
        if self.proc and self.proc.stdin:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> SimRig:
        return self if self.proc else self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_fleet(port: int, rig_ids: list[str], workdir: Path | None = None, keepalive_s: int = 5,
                auto_events: bool = True, host: str = "127.0.0.1",
                credentials_file: str | Path = "") -> list[SimRig]:
    """Start several rigs at once (in parallel), waiting until all are connected."""
    rigs = [SimRig(port, r, (workdir / r) if workdir else None, keepalive_s,
                   auto_events=auto_events, host=host, credentials_file=credentials_file)
            for r in rig_ids]
    try:
        for r in rigs:
            r.start(wait=False)
        for r in rigs:
            r.wait_ready(60)
    except BaseException:
        for r in rigs:
            r.close()
        raise
    return rigs


# ------------------------------------------------------------------------- demo CLI
def _run_until(rigs: list[SimRig], duration_s: float) -> None:
    try:
        t_end = time.monotonic() + duration_s if duration_s > 0 else math.inf
        while time.monotonic() < t_end and any(r.alive for r in rigs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for r in rigs:
            r.stop()
            r.close()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["child"]:
        return child_main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m hil.dashboard_rigs",
                                description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="mode", required=True)
    demo = sub.add_parser("demo", help="private broker with WebSockets + dashboard + rigs")
    demo.add_argument("--rigs", type=int, default=3)
    demo.add_argument("--http-port", type=int, default=0)
    demo.add_argument("--duration", type=float, default=0.0, help="seconds (0: until Ctrl-C)")
    rigs = sub.add_parser("rigs", help="rigs publishing to an existing broker")
    rigs.add_argument("--host", default="127.0.0.1")
    rigs.add_argument("--port", type=int, default=1883)
    rigs.add_argument("--rigs", type=int, default=3)
    rigs.add_argument("--keepalive", type=int, default=5)
    rigs.add_argument("--credentials", default="", help="file with user:password")
    rigs.add_argument("--duration", type=float, default=0.0)
    args = p.parse_args(argv)
    ids = [f"sim-{i + 1:02d}" for i in range(args.rigs)]
    if args.mode == "rigs":
        fleet = start_fleet(args.port, ids, keepalive_s=args.keepalive, host=args.host,
                            credentials_file=args.credentials)
        print(f"{len(fleet)} rigs publishing to {args.host}:{args.port}; Ctrl-C stops them",
              flush=True)
        _run_until(fleet, args.duration)
        return 0

    from edge.dashboard import page_url, serve
    from hil.broker import Broker, free_port

    broker = Broker(ws_port=free_port()).start()
    server, url = serve(args.http_port)
    try:
        fleet = start_fleet(broker.port, ids)
        print(f"broker mqtt://127.0.0.1:{broker.port} ws://127.0.0.1:{broker.ws_port}", flush=True)
        print(f"dashboard: {page_url(url, f'ws://127.0.0.1:{broker.ws_port}')}", flush=True)
        _run_until(fleet, args.duration)
    finally:
        server.shutdown()
        server.server_close()
        broker.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
