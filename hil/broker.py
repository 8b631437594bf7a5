"""A real Mosquitto broker on a free loopback port, for tests and benches.

The suite never depends on the machine's own broker: each :class:`Broker` writes its
own config into a temp dir, listens on 127.0.0.1 only, and can be stopped and started
again on the same port (broker outages) with persistence kept in its own directory.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if not found:
        raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
    return found


@dataclass
class Broker:
    """One private broker. ``extra_conf`` adds listener lines (TLS, websockets, ACL)."""

    port: int = field(default_factory=free_port)
    ws_port: int | None = None
    extra_conf: str = ""
    allow_anonymous: bool = True
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mmme-broker-")))
    proc: subprocess.Popen | None = None

    @property
    def conf_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    def _write_conf(self) -> None:
        lines = [
            # Run as whoever started us: as root, Mosquitto would otherwise drop to the
            # mosquitto user, which cannot write our private dir (log, persistence).
            f"user {getpass.getuser()}",
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            "persistence true",
            f"persistence_location {self.workdir}/",
            "autosave_interval 1",
            f"log_dest file {self.workdir}/mosquitto.log",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 100000",
        ]
        if self.ws_port:
            lines += [f"listener {self.ws_port} 127.0.0.1", "protocol websockets"]
        self.conf_path.write_text("\n".join(lines) + "\n" + self.extra_conf + "\n")

    def start(self, timeout_s: float = 10.0) -> Broker:
        self._write_conf()
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.conf_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                log = (self.workdir / "mosquitto.log")
                raise RuntimeError(
                    f"mosquitto exited: {err.strip()} {log.read_text() if log.exists() else ''}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout_s} s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
