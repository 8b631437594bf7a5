"""A private PostgreSQL cluster on a free loopback port, for tests and the bench.

Like ``hil.broker``: the suite never depends on a server of the machine. ``initdb``
makes a cluster under a temporary directory; ``postgres`` listens on 127.0.0.1 only
(the Unix socket goes into the cluster's own directory). PostgreSQL refuses to run as
root, so as root the cluster belongs to, and runs as, an unprivileged account
(``postgres`` from Debian's package, else ``nobody``) through ``runuser``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from hil.broker import free_port

SEARCH = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin", "/usr/local/bin", "/usr/bin")


def pg_bin(name: str) -> str:
    """Path of a PostgreSQL server program (``initdb``, ``postgres``), newest version first."""
    env_dir = os.environ.get("MMME_PG_BIN")
    dirs = [env_dir] if env_dir else []
    for pattern in SEARCH:
        found = glob.glob(pattern)
        # /usr/lib/postgresql/15/bin before 13: sort by the version number in the path
        dirs += sorted(found, key=lambda d: [int(p) for p in d.split("/") if p.isdigit()],
                       reverse=True)
    for d in dirs:
        path = Path(d) / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    which = shutil.which(name)
    if which:
        return which
    raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")


def _service_user() -> str | None:
    """None when we may run postgres ourselves; else the account to run it as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and no unprivileged account (postgres, nobody)")


@dataclass
class Cluster:
    """One throwaway cluster; ``dsn`` is what psycopg connects with (trust auth, loopback)."""

    port: int = field(default_factory=free_port)
    user: str = "mmme"
    dbname: str = "mmme"
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mmme-pg-")))
    proc: subprocess.Popen | None = None

    @property
    def datadir(self) -> Path:
        return self.workdir / "data"

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={self.dbname}"

    def _as_owner(self, argv: list[str]) -> list[str]:
        owner = _service_user()
        return argv if owner is None else ["runuser", "-u", owner, "--", *argv]

    def _init(self) -> None:
        owner = _service_user()
        if owner is not None:
            ent = pwd.getpwnam(owner)
            os.chown(self.workdir, ent.pw_uid, ent.pw_gid)
            self.workdir.chmod(0o700)
        subprocess.run(
            self._as_owner([pg_bin("initdb"), "-D", str(self.datadir), "-U", self.user,
                            "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync"]),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self, timeout_s: float = 30.0) -> Cluster:
        if not (self.datadir / "PG_VERSION").exists():
            self._init()
        log = self.workdir / "postgres.log"
        self.proc = subprocess.Popen(
            self._as_owner([pg_bin("postgres"), "-D", str(self.datadir),
                            "-c", "listen_addresses=127.0.0.1", "-c", f"port={self.port}",
                            "-c", f"unix_socket_directories={self.workdir}",
                            "-c", "max_connections=200", "-c", "fsync=on",
                            "-c", "logging_collector=off", "-c", "log_min_messages=warning"]),
            stdout=subprocess.DEVNULL, stderr=open(log, "ab"),  # noqa: SIM115 (child owns it)
            start_new_session=True)
        deadline = time.monotonic() + timeout_s
        import psycopg

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {log.read_text()[-2000:]}")
            try:
                with psycopg.connect(self.dsn.replace(f"dbname={self.dbname}",
                                                      "dbname=postgres"),
                                     connect_timeout=2, autocommit=True) as conn:
                    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                          (self.dbname,)).fetchone()
                    if not exists:
                        conn.execute(f'CREATE DATABASE "{self.dbname}"')
                return self
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise RuntimeError(f"postgres did not accept connections on {self.port} "
                           f"within {timeout_s} s")

    def stop(self, sig: int = signal.SIGINT) -> None:
        """SIGINT: PostgreSQL's fast shutdown (SIGKILL for a crash)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def cleanup(self) -> None:
        # Immediate shutdown (SIGQUIT): the data is thrown away, so no shutdown checkpoint.
        self.stop(signal.SIGQUIT)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
