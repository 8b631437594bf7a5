"""``mmme-edge dashboard``: serve the live fleet dashboard (a static page) over HTTP.

    mmme-edge dashboard [--port 8080] [--bind 127.0.0.1] [--broker ws://HOST:9001]
    mmme-edge dashboard --export DIR

The page itself (``dashboard/`` in the repository) talks to the broker directly over
MQTT-over-WebSockets; this server only hands out its files, and the message schemas
from ``edge/mqtt/schemas`` under ``/schemas/``, so the page always validates against
the schemas of the code it ships with. ``--export DIR`` writes the same tree (page,
vendored libraries, ``schemas/``) into ``DIR`` for any static web server.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
import urllib.parse
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

DEFAULT_PORT = 8080
# The repository's dashboard/ folder (next to edge/). A non-editable install has no copy
# of it: pass --root, or serve an --export'ed tree with any static web server.
DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"
# What --export copies (and the only files the server hands out besides /schemas/).
PAGE_FILES = ("index.html", "app.js", "plot.js", "style.css")
VENDOR_DIR = "vendor"


def schemas_dir() -> Path:
    return Path(str(resources.files("edge.mqtt") / "schemas"))


def _allowed(rel: str) -> bool:
    rel = rel.lstrip("/")
    return rel in PAGE_FILES or (rel.startswith(VENDOR_DIR + "/") and ".." not in rel)


class _Handler(SimpleHTTPRequestHandler):
    """The page's files, ``/schemas/*.schema.json`` from the package; nothing else."""

    root: Path = DASHBOARD_DIR
    schemas: Path = schemas_dir()
    quiet: bool = True

    def translate_path(self, path: str) -> str:
        rel = urllib.parse.unquote(urllib.parse.urlsplit(path).path)
        if rel in ("", "/"):
            rel = "/index.html"
        if rel.startswith("/schemas/"):
            name = rel[len("/schemas/"):]
            if "/" in name or not name.endswith(".schema.json"):
                return ""
            return str(self.schemas / name)
        if not _allowed(rel):
            return ""
        return str(self.root / rel.lstrip("/"))

    def send_head(self) -> Any:
        target = self.translate_path(self.path)
        if not target or not Path(target).is_file():
            self.send_error(404, "not found")
            return None
        return super().send_head()

    def end_headers(self) -> None:
        # The page is small and changes with the code: always revalidate.
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        if not self.quiet:
            super().log_message(format, *args)


_Handler.extensions_map = {**SimpleHTTPRequestHandler.extensions_map,
                           ".js": "text/javascript", ".json": "application/json",
                           ".md": "text/plain; charset=utf-8", ".txt": "text/plain; charset=utf-8"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A browser that navigates away mid-download resets the connection: not an error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def serve(port: int = DEFAULT_PORT, bind: str = "127.0.0.1", root: Path | None = None,
          quiet: bool = True) -> tuple[ThreadingHTTPServer, str]:
    """Start serving in a daemon thread; returns the server (call ``shutdown()``) and its URL.

    ``port=0`` takes a free port.
    """
    root = Path(root or DASHBOARD_DIR)
    if not (root / "index.html").is_file():
        raise FileNotFoundError(f"no dashboard page in {root} (pass --root, or --export "
                                "from a source checkout)")
    handler = type("DashboardHandler", (_Handler,), {"root": root, "quiet": quiet})
    server = _Server((bind, port), partial(handler))
    threading.Thread(target=server.serve_forever, name="dashboard-http", daemon=True).start()
    host = server.server_address[0]
    shown = f"[{host}]" if ":" in str(host) else str(host)
    return server, f"http://{shown}:{server.server_address[1]}/"


def export(dest: Path, root: Path | None = None) -> list[Path]:
    """Copy the page, its vendored libraries and the schemas into ``dest`` (static hosting)."""
    root = Path(root or DASHBOARD_DIR)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name in PAGE_FILES:
        shutil.copy2(root / name, dest / name)
        written.append(dest / name)
    shutil.copytree(root / VENDOR_DIR, dest / VENDOR_DIR, dirs_exist_ok=True)
    written.append(dest / VENDOR_DIR)
    (dest / "schemas").mkdir(exist_ok=True)
    for f in sorted(schemas_dir().glob("*.schema.json")):
        shutil.copy2(f, dest / "schemas" / f.name)
        written.append(dest / "schemas" / f.name)
    return written


def page_url(base: str, broker: str = "", **params: str) -> str:
    """The dashboard's address with the broker filled in (``?url=ws://...&connect=1``)."""
    query = {k: v for k, v in {"url": broker, **params}.items() if v}
    if broker:
        query.setdefault("connect", "1")
    return base + ("?" + urllib.parse.urlencode(query) if query else "")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmme-edge dashboard",
                                description="Serve the live fleet dashboard over HTTP.")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="HTTP port (0: any free)")
    p.add_argument("--bind", default="127.0.0.1",
                   help="address to listen on (default loopback; 0.0.0.0 for the LAN)")
    p.add_argument("--broker", default="",
                   help="MQTT-over-WebSockets URL to prefill, e.g. ws://localhost:9001")
    p.add_argument("--root", type=Path, help="the dashboard folder (default: the repository's)")
    p.add_argument("--export", type=Path, metavar="DIR",
                   help="copy page, libraries and schemas into DIR for a static server, exit")
    p.add_argument("--verbose", action="store_true", help="log every HTTP request")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        if args.export:
            export(args.export, args.root)
            print(f"dashboard exported to {args.export} (serve it with any static web server)")
            return 0
        server, url = serve(args.port, args.bind, args.root, quiet=not args.verbose)
    except (OSError, FileNotFoundError) as exc:
        print(f"mmme-edge dashboard: {exc}", file=sys.stderr)
        return 1
    print(f"dashboard: {page_url(url, args.broker)}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
