"""Helpers the tests share: UCI-like data and a local server for its archive."""

from __future__ import annotations

import io
import shutil
import subprocess
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from sklearn.datasets import load_iris

from iris_core import CLASS_NAMES

# UCI's iris.data differs from Fisher's values (scikit-learn's copy) in samples 35 and 38.
UCI_ERRORS: dict[int, tuple[float, ...]] = {35: (4.9, 3.1, 1.5, 0.1), 38: (4.9, 3.1, 1.5, 0.1)}


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
    """Serves one zip at /static/public/53/iris.zip on 127.0.0.1; `payload` can be swapped."""

    payload = b""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/static/public/53/iris.zip"


class ArchiveHandler(BaseHTTPRequestHandler):
    server: Archive

    def do_GET(self) -> None:
        if self.path != "/static/public/53/iris.zip":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(self.server.payload)))
        self.end_headers()
        self.wfile.write(self.server.payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


def copy_pipeline(root: Path, dest: Path) -> Path:
    """The DVC pipeline of `root` (dvc.yaml, params.yaml, .dvc/config, the stages' sources) in
    a new git repository at `dest`, with no data and no cache."""
    dest.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(root / name, dest / name)
    shutil.copytree(
        root / ".dvc", dest / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache", "config.local")
    )
    shutil.copytree(
        root / "training" / "src",
        dest / "training" / "src",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest
