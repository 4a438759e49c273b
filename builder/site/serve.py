"""Preview server: the rendered site on loopback, gzip-compressed as GitHub Pages serves it."""

from __future__ import annotations

import gzip
import mimetypes
import posixpath
import urllib.parse
from dataclasses import dataclass
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass(frozen=True)
class ServeConfig:
    port: int = 8000          # 0: any free port
    host: str = "127.0.0.1"   # loopback: the preview is not published


COMPRESSIBLE = (".html", ".js", ".css", ".json", ".csv", ".svg", ".txt")
mimetypes.add_type("text/javascript", ".js")


@lru_cache(maxsize=4096)
def _gzipped(path: str, mtime: float) -> bytes:
    return gzip.compress(Path(path).read_bytes(), compresslevel=6, mtime=0)


def make_handler(root: Path):
    root = root.resolve()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # quiet: the preview prints its URL once
            pass

        def do_HEAD(self):  # what link checkers and `curl -I` send: the GET headers, no body
            self.do_GET(head=True)

        def do_GET(self, head=False):
            self.head = head
            rel = posixpath.normpath(urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)).lstrip("/")
            path = (root / rel).resolve()
            if root not in path.parents and path != root:
                return self._send(404, b"not found", "text/plain")
            if path.is_dir():
                if not self.path.split("?")[0].endswith("/"):
                    self.send_response(301)
                    self.send_header("Location", self.path.split("?")[0] + "/")
                    self.send_header("Content-Length", "0")
                    return self.end_headers()
                path = path / "index.html"
            if not path.is_file():
                return self._send(404, b"not found", "text/plain")
            ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if path.suffix in COMPRESSIBLE and "gzip" in self.headers.get("Accept-Encoding", ""):
                return self._send(200, _gzipped(str(path), path.stat().st_mtime), ctype, gz=True)
            return self._send(200, path.read_bytes(), ctype)

        def _send(self, code, body, ctype, gz=False):
            self.send_response(code)
            self.send_header("Content-Type", ctype + ("; charset=utf-8" if ctype.startswith("text/") else ""))
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "max-age=600")  # what GitHub Pages sends
            if gz:
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Vary", "Accept-Encoding")
            self.end_headers()
            if not getattr(self, "head", False):
                self.wfile.write(body)

    return Handler


def make_server(root: Path, port: int = ServeConfig.port, host: str = ServeConfig.host) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(Path(root)))
    server.daemon_threads = True
    return server


def served_atlases(root: Path) -> list[str]:
    """The rendered atlases under root (folders with an index.html)."""
    return sorted(p.name for p in Path(root).iterdir() if (p / "index.html").is_file())
