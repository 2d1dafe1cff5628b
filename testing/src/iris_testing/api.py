"""A real `iris-api` process (uvicorn) on a free port."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from iris_stack.process import running
from iris_stack.services import api_server
from iris_testing.ports import free_port


@contextlib.contextmanager
def api_process(
    folder: Path,
    tracking_uri: str,
    model_name: str,
    bin_dir: Path | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """A real `iris-api` (uvicorn) on a free port, from `bin_dir` (default: this environment);
    yields its base URL. HOME, the working directory and TMPDIR are empty folders under
    `folder`, so a test can see what the process wrote."""
    for name in ("home", "cwd", "tmp"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    port = free_port()
    service = api_server(
        port,
        tracking_uri,
        folder / "api.log",
        env={
            "IRIS_API_MODEL_NAME": model_name,
            "HOME": str(folder / "home"),
            "TMPDIR": str(folder / "tmp"),
            **(env or {}),
        },
        bin_dir=bin_dir,
        cwd=folder / "cwd",
    )
    with running(service, timeout_s=60):
        yield f"http://127.0.0.1:{port}"
