"""UCI-like Iris data and a local HTTP server for its archive (what the fetch stage downloads)."""

from __future__ import annotations

import contextlib
import io
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sklearn.datasets import load_iris

from iris_core import CLASS_NAMES

# UCI's iris.data differs from Fisher's values (scikit-learn's copy) in samples 35 and 38.
UCI_ERRORS: dict[int, tuple[float, ...]] = {35: (4.9, 3.1, 1.5, 0.1), 38: (4.9, 3.1, 1.5, 0.1)}

#: Where the UCI repository serves the archive (the path, on our own server).
ARCHIVE_PATH = "/static/public/53/iris.zip"


def uci_lines(errors: dict[int, tuple[float, ...]] | None = None, n: int = 150) -> list[str]:
    """Iris rows as UCI writes them (with its two errors by default)."""
    if errors is None:
        errors = UCI_ERRORS
    iris = load_iris()
    lines = []
    for i, (x, t) in enumerate(zip(iris.data, iris.target, strict=True), start=1):
        values = errors.get(i, tuple(x))
        lines.append(",".join([*(f"{v:.1f}" for v in values), CLASS_NAMES[int(t)]]))
    return lines[:n]


def make_zip(lines: list[str], member: str = "iris.data") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(member, "\n".join(lines) + "\n\n")  # UCI's file ends with blank lines
        zf.writestr("iris.names", "1. Title: Iris Plants Database\n")
    return buffer.getvalue()


class Archive(ThreadingHTTPServer):
    """Serves one zip at ARCHIVE_PATH on 127.0.0.1; `payload` can be swapped."""

    payload = b""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{ARCHIVE_PATH}"


class ArchiveHandler(BaseHTTPRequestHandler):
    server: Archive

    def do_GET(self) -> None:
        if self.path != ARCHIVE_PATH:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(self.server.payload)))
        self.end_headers()
        self.wfile.write(self.server.payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def archive_server(payload: bytes) -> Iterator[Archive]:
    """An Archive serving `payload` from a thread of this process, on a free port."""
    server = Archive(("127.0.0.1", 0), ArchiveHandler)
    server.payload = payload
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
