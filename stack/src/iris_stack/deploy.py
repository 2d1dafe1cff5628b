"""The fine-tuning flow's local deployment: the process work pool and the `local` deployment of
prefect.yaml, made with the Prefect CLI as a user would, and the wait until a worker polls the
pool."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import yaml

from iris_stack.process import ServiceError, bin_path, run_checked
from iris_stack.services import prefect_env


def run_prefect(*args: str, env: Mapping[str, str], cwd: Path | None = None) -> str:
    """A `prefect` CLI command (this environment's); its output, or ServiceError with it."""
    command = [bin_path("prefect"), "--no-prompt", *args]
    return run_checked(command, {**os.environ, **env, "COLUMNS": "200"}, cwd)


#: The fine-tuning flow's Prefect automations (created once each, by name).
AUTOMATIONS = Path("finetune") / "prefect-automations.yaml"


def deploy_local(api_url: str, home: Path, pool: str, project: Path) -> None:
    """The process work pool `pool` (created or reset) and the `local` deployment of
    `project`/prefect.yaml in it: what the local worker runs; the flow's automations."""
    env = prefect_env(api_url, home)
    run_prefect("work-pool", "create", pool, "--type", "process", "--overwrite", env=env)
    run_prefect(
        "deploy", "--prefect-file", str(project / "prefect.yaml"), "--name", "local",
        "--pool", pool, env=env, cwd=project,
    )  # fmt: skip
    create_automations(api_url, home, project / AUTOMATIONS)


def create_automations(api_url: str, home: Path, path: Path) -> list[str]:
    """The automations of `path` that Prefect does not have yet (by name), created with the
    CLI; the names created. Prefect keeps automations by id, so creating one twice would make
    two."""
    wanted = yaml.safe_load(path.read_text())["automations"]
    request = urllib.request.Request(  # noqa: S310 (the stack's own Prefect)
        f"{api_url}/automations/filter", data=b"{}", method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as r:  # noqa: S310
        existing = {a["name"] for a in json.loads(r.read())}
    missing = [a for a in wanted if a["name"] not in existing]
    if missing:
        home.mkdir(parents=True, exist_ok=True)
        only = home / "automations-to-create.yaml"
        only.write_text(yaml.safe_dump({"automations": missing}, sort_keys=False))
        env = prefect_env(api_url, home)
        run_prefect("automation", "create", "--from-file", str(only), env=env)
    return [str(a["name"]) for a in missing]


def wait_pool_ready(api_url: str, pool: str, timeout_s: float) -> None:
    """Until Prefect says a worker polls `pool` (status READY)."""
    deadline = time.monotonic() + timeout_s
    status = "unknown"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{api_url}/work_pools/{pool}", timeout=2) as r:  # noqa: S310
                status = json.loads(r.read()).get("status") or "unknown"
        except (urllib.error.URLError, OSError, ValueError):
            status = "unreachable"
        if status == "READY":
            return
        time.sleep(0.25)
    raise ServiceError(
        f"work pool {pool!r} has no polling worker after {timeout_s:.0f} s: {status}"
    )
