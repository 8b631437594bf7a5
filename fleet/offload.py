"""Recordings home: finished MCAP segments from the rig to the study server.

Over SSH with rsync, the tools field teams already have: ``--partial`` with a partial
dir, so a cut link resumes from what arrived (rsync's delta transfer uses the partial
file as its basis); ``--bwlimit`` so the upload does not starve the rig's MQTT; a
``--timeout`` so a dead link fails instead of hanging.

A segment is finished when its file ends with MCAP's closing magic (the writer puts it
there last) or, for a recording cut by a crash or power loss, when it has not changed
for ``stale_s``; the file the recorder is writing is never either. For each finished
segment the rig writes ``<segment>.sha256`` (``sha256sum`` format) beside it. After the
upload the server computes the checksum of what it holds (``ssh host sha256sum``); only
a match writes ``<segment>.verified``. A verified segment is deleted on the rig only
while free disk is under the low-water mark, oldest first, and only if it is unchanged
since it was verified. The ``.verified`` file stays as the tombstone that says where
the data went.

State (``queued``, ``sending``, ``verified``, ``bytes_left``) is what goes on ``health``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MCAP_MAGIC = b"\x89MCAP0\r\n"
PARTIAL_DIR = ".rsync-partial"
STATE_FILE = ".offload-state.json"  # what the rig's health reads
STATE_EVERY_S = 10.0  # the state file is rewritten at least this often while sending
PROGRESS_RE = re.compile(rb"^\s*([\d,]+)\s+\d+%")
LITERAL_RE = re.compile(r"Literal data: ([\d,]+) bytes")


@dataclass(frozen=True)
class OffloadSettings:
    dest: str  # "user@host:/srv/mmme/rig-01" on the study server
    port: int = 22
    identity_file: str = ""
    known_hosts: str = ""  # the server's host key; empty: ssh's own known_hosts
    bwlimit_kbps: int = 0  # 0: no limit
    low_water_mb: float = 2048.0  # under this much free disk, verified segments go
    stale_s: float = 3600.0  # an unfinished segment untouched this long: a crashed one
    timeout_s: int = 60  # rsync --timeout and ssh ConnectTimeout

    @property
    def host(self) -> str:
        return self.dest.partition(":")[0]

    @property
    def remote_root(self) -> str:
        return self.dest.partition(":")[2].rstrip("/") or "."


@dataclass
class OffloadState:
    queued: int = 0  # finished segments not yet verified at the server
    sending: str | None = None  # the segment rsync is on
    verified: int = 0  # segments the server confirmed (on the rig or deleted)
    bytes_left: int = 0  # of the queued segments, still to send
    deleted: int = 0
    failures: int = 0
    last_error: str = ""
    last_literal_bytes: int = -1  # rsync's "Literal data" of the last upload


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def ends_with_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(-len(MCAP_MAGIC), os.SEEK_END)
            return f.read() == MCAP_MAGIC
    except OSError:
        return False


def sidecar(seg: Path, suffix: str) -> Path:
    return seg.with_name(seg.name + suffix)


class Offloader:
    """Scans ``data_dir`` for finished segments and ships them one at a time."""

    def __init__(self, settings: OffloadSettings, data_dir: str | Path,
                 in_progress: Callable[[], set[Path]] = set) -> None:
        self.settings = settings
        self.data_dir = Path(data_dir)
        self.in_progress = in_progress
        self.state = OffloadState()
        self.sending_pid: int | None = None  # rsync's pid while it runs
        self._lock = threading.Lock()

    # -- the rig's side ------------------------------------------------------------------------
    def finished(self, now_s: float | None = None) -> list[Path]:
        """Finished segments, oldest first; never one being written."""
        now_s = time.time() if now_s is None else now_s
        busy = {p.resolve() for p in self.in_progress()}
        out = []
        for seg in sorted(self.data_dir.rglob("*.mcap"), key=lambda p: (p.stat().st_mtime, p)):
            if seg.resolve() in busy or PARTIAL_DIR in seg.parts:
                continue
            if ends_with_magic(seg) or now_s - seg.stat().st_mtime > self.settings.stale_s:
                out.append(seg)
        return out

    def checksum(self, seg: Path) -> str:
        """The segment's sha256, written once beside it (``sha256sum -c`` reads it)."""
        side = sidecar(seg, ".sha256")
        if side.exists():
            return side.read_text().split()[0]
        digest = sha256_file(seg)
        tmp = sidecar(seg, ".sha256.tmp")
        tmp.write_text(f"{digest}  {seg.name}\n")
        tmp.replace(side)
        return digest

    def queue(self) -> list[Path]:
        return [s for s in self.finished() if not sidecar(s, ".verified").exists()]

    # -- over SSH --------------------------------------------------------------------------
    def _ssh_argv(self) -> list[str]:
        s = self.settings
        argv = ["ssh", "-p", str(s.port), "-o", "BatchMode=yes",
                "-o", f"ConnectTimeout={s.timeout_s}", "-o", "ServerAliveInterval=15"]
        if s.identity_file:
            argv += ["-i", s.identity_file, "-o", "IdentitiesOnly=yes"]
        if s.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={s.known_hosts}",
                     "-o", "StrictHostKeyChecking=yes"]
        return argv

    def remote_path(self, seg: Path) -> str:
        return f"{self.settings.remote_root}/{seg.relative_to(self.data_dir).as_posix()}"

    def send(self, seg: Path) -> bool:
        """rsync the segment and its checksum file; True when rsync says it is done."""
        s = self.settings
        remote_dir = self.remote_path(seg).rpartition("/")[0]
        argv = ["rsync", "--partial", f"--partial-dir={PARTIAL_DIR}", "--mkpath",
                f"--timeout={s.timeout_s}", "--info=progress2", "--stats", "--times",
                "-e", shlex.join(self._ssh_argv())]
        if s.bwlimit_kbps > 0:
            argv.append(f"--bwlimit={s.bwlimit_kbps}")
        argv += [str(seg), str(sidecar(seg, ".sha256")), f"{s.host}:{remote_dir}/"]
        size = seg.stat().st_size
        with self._lock:
            self.state.sending = seg.name
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)  # one group: rsync and its ssh
        self.sending_pid = proc.pid
        out = self._follow(proc, size)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        rc = proc.wait()
        self.sending_pid = None
        with self._lock:
            self.state.sending = None
            m = LITERAL_RE.search(out)
            if m:
                self.state.last_literal_bytes = int(m.group(1).replace(",", ""))
            if rc != 0:
                self.state.failures += 1
                self.state.last_error = f"rsync exit {rc}: {err.strip()[-300:]}"
        return rc == 0

    def _follow(self, proc: subprocess.Popen, size: int) -> str:
        """Read rsync's progress (``\\r``-separated) into bytes_left; returns the rest."""
        assert proc.stdout is not None
        left_before = self.state.bytes_left
        next_write = time.monotonic() + STATE_EVERY_S
        text = bytearray()
        pending = b""
        while chunk := proc.stdout.read1(4096):  # type: ignore[attr-defined]
            text += chunk
            pending += chunk
            *lines, pending = re.split(rb"[\r\n]", pending)
            for line in lines:
                m = PROGRESS_RE.match(line)
                if m:
                    done = min(int(m.group(1).replace(b",", b"")), size)
                    with self._lock:
                        self.state.bytes_left = max(left_before - done, 0)
            if time.monotonic() >= next_write:  # a 2 GiB segment takes a while at 2 MB/s
                self.write_state()
                next_write = time.monotonic() + STATE_EVERY_S
        return text.decode(errors="replace")

    def remote_sha256(self, seg: Path) -> str | None:
        """What the server computes over what it holds; None if it cannot say."""
        cmd = f"sha256sum -- {shlex.quote(self.remote_path(seg))}"
        res = subprocess.run([*self._ssh_argv(), self.settings.host, cmd],
                             capture_output=True, text=True, timeout=3600)
        if res.returncode != 0:
            with self._lock:
                self.state.last_error = f"remote sha256sum: {res.stderr.strip()[-300:]}"
            return None
        return res.stdout.split()[0] if res.stdout.split() else None

    def verify(self, seg: Path) -> bool:
        mine = self.checksum(seg)
        theirs = self.remote_sha256(seg)
        if theirs != mine:
            with self._lock:
                self.state.failures += 1
                if theirs is not None:
                    self.state.last_error = (f"{seg.name}: server has sha256 {theirs}, "
                                             f"rig {mine}")
            return False
        st = seg.stat()
        record = {"sha256": mine, "dest": f"{self.settings.host}:{self.remote_path(seg)}",
                  "size": st.st_size, "mtime_ns": st.st_mtime_ns, "verified_at": time.time()}
        tmp = sidecar(seg, ".verified.tmp")
        tmp.write_text(json.dumps(record) + "\n")
        tmp.replace(sidecar(seg, ".verified"))
        return True

    # -- the disk ----------------------------------------------------------------------------
    def free_mb(self) -> float:
        return shutil.disk_usage(self.data_dir).free / 2**20

    def reclaim(self, free_mb: Callable[[], float] | None = None) -> list[Path]:
        """Under the low-water mark, delete verified segments (oldest first) until above."""
        free_mb = free_mb or self.free_mb
        busy = {p.resolve() for p in self.in_progress()}
        deleted = []
        for seg in self.finished():
            if free_mb() >= self.settings.low_water_mb:
                break
            mark = sidecar(seg, ".verified")
            if seg.resolve() in busy or not mark.exists():
                continue
            record = json.loads(mark.read_text())
            st = seg.stat()
            if (st.st_size, st.st_mtime_ns) != (record["size"], record["mtime_ns"]):
                mark.unlink()  # changed since the server confirmed it: send it again
                continue
            seg.unlink()
            sidecar(seg, ".sha256").unlink(missing_ok=True)
            deleted.append(seg)
            with self._lock:
                self.state.deleted += 1
            log.info("offload: deleted %s (verified at %s)", seg.name, record["dest"])
        return deleted

    # -- the loop ----------------------------------------------------------------------------
    def refresh(self) -> list[Path]:
        queued = self.queue()
        verified = sum(1 for _ in self.data_dir.rglob("*.mcap.verified"))
        with self._lock:
            self.state.queued = len(queued)
            self.state.verified = verified
            self.state.bytes_left = sum(s.stat().st_size for s in queued)
        return queued

    def step(self) -> bool:
        """Ship the oldest queued segment; then reclaim disk. True if one was verified."""
        queued = self.refresh()
        ok = False
        if queued:
            seg = queued[0]
            self.checksum(seg)
            ok = self.send(seg) and self.verify(seg)
            if ok:
                log.info("offload: %s verified at the server", seg.name)
            self.refresh()
        self.reclaim()
        self.write_state()
        return ok

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return asdict(self.state)

    def write_state(self) -> None:
        """Atomically, for the rig's health message, stamped so a dead offloader shows."""
        path = self.data_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**self.snapshot(), "written_wall_s": time.time()}))
        tmp.replace(path)

    def run(self, once: bool = False, period_s: float = 30.0,
            stop: threading.Event | None = None) -> dict[str, Any]:
        stop = stop or threading.Event()
        while not stop.is_set():
            progressed = self.step()
            if once and not (progressed and self.state.queued):
                break
            if not progressed:
                stop.wait(period_s)
        return self.snapshot()


def read_state(data_dir: str | Path, now_wall_s: float | None = None
               ) -> dict[str, Any] | None:
    """The offloader's last state (for ``health``) with ``age_s``, how long ago it was
    written (the offloader writes it at least every ``STATE_EVERY_S`` while it runs);
    None when no offloader ever ran here."""
    try:
        state = dict(json.loads((Path(data_dir) / STATE_FILE).read_text()))
    except (OSError, ValueError):
        return None
    written = state.pop("written_wall_s", None)
    if isinstance(written, (int, float)):
        now = time.time() if now_wall_s is None else now_wall_s
        state["age_s"] = round(max(now - written, 0.0), 1)
    return state
