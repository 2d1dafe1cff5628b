"""`iris-api`: serve the app with uvicorn (one worker; scale with processes or pods)."""

from __future__ import annotations

import os
import sys
from typing import Any

from pydantic import ValidationError

from iris_api.settings import ApiSettings, describe


def logging_config(level: str) -> dict[str, Any]:
    """One format for our loggers and uvicorn's."""
    handler = {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {"stderr": handler},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            name: {"handlers": [], "propagate": True, "level": level.upper()}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "iris_api")
        }
        # One line per registry request every poll interval is noise.
        | {"httpx": {"level": "WARNING"}},
    }


def main() -> None:
    try:
        settings = ApiSettings()
    except ValidationError as e:
        sys.exit(f"iris-api: bad setting\n{describe(e)}")
    # onnxruntime writes usage data under ~/.cache unless told not to (read-only root filesystem).
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import uvicorn  # noqa: PLC0415 (after the environment is set)

    uvicorn.run(
        "iris_api.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        access_log=settings.access_log,
        # Who the client is (the /suggest rate limit keys on it): the peer, or what a trusted
        # proxy forwarded. Its own setting: turning the access log on must not change it.
        proxy_headers=settings.proxy_headers,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        log_config=logging_config(settings.log_level),
        server_header=False,
    )


if __name__ == "__main__":
    main()
