"""A real OpenSSH server on a free loopback port with throwaway keys, for the offload tests.

Its own host key, authorized_keys and config under a temp dir; it accepts only the
throwaway client key, for the user running the tests (root in CI: key only).
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from hil.broker import free_port


def sshd_binary() -> str:
    for cand in (shutil.which("sshd"), "/usr/sbin/sshd"):
        if cand and Path(cand).exists():
            return str(Path(cand).resolve())  # sshd must be started by absolute path
    raise RuntimeError("sshd is not installed (apt-get install openssh-server)")


@dataclass
class Sshd:
    port: int = field(default_factory=free_port)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mmme-sshd-")))
    proc: subprocess.Popen | None = None

    @property
    def user(self) -> str:
        return getpass.getuser()

    @property
    def client_key(self) -> Path:
        return self.workdir / "client_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.workdir / "known_hosts"

    def _keygen(self, path: Path) -> None:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mmme-test",
                        "-f", str(path)], check=True)

    def start(self, timeout_s: float = 10.0) -> Sshd:
        w = self.workdir
        self._keygen(w / "host_ed25519")
        self._keygen(self.client_key)
        (w / "authorized_keys").write_text(
            Path(str(self.client_key) + ".pub").read_text())
        host_pub = (w / "host_ed25519.pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        (w / "sshd_config").write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1",
            f"HostKey {w}/host_ed25519", f"PidFile {w}/sshd.pid",
            f"AuthorizedKeysFile {w}/authorized_keys",
            "PubkeyAuthentication yes", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            "PermitRootLogin prohibit-password", f"AllowUsers {self.user}",
            "LogLevel ERROR", ""]))
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege separation dir
        self.proc = subprocess.Popen([sshd_binary(), "-D", "-e", "-f", str(w / "sshd_config")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"sshd exited: {err}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd did not listen on {self.port}")

    def cleanup(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Sshd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
