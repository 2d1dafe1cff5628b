"""The repository as the tests and benchmarks use it: a copy of its DVC pipeline, and a
member's own environment as its image installs it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def _repository() -> Path:
    """The working tree this package runs from: `uv sync` installs workspace members
    editable, so the root (the folder with uv.lock) is above this file."""
    for folder in Path(__file__).resolve().parents:
        if (folder / "uv.lock").is_file() and (folder / "pyproject.toml").is_file():
            return folder
    raise RuntimeError(
        f"iris_testing at {__file__} is not inside the repository: install it editable "
        "(`make sync`)"
    )


ROOT = _repository()


def copy_pipeline(root: Path, dest: Path) -> Path:
    """The DVC pipeline of `root` (dvc.yaml, params.yaml, .dvc/config, the stages' sources), the
    Prefect deployments (prefect.yaml) and automations, and Prometheus' config and rules in a
    new git repository at `dest`, with no data and no cache."""
    dest.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", "prefect.yaml", "prometheus.yml"):
        shutil.copy(root / name, dest / name)
    shutil.copytree(
        root / ".dvc", dest / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache", "config.local")
    )
    shutil.copytree(root / "monitoring", dest / "monitoring")
    (dest / "finetune").mkdir()
    shutil.copy(root / "finetune" / "prefect-automations.yaml", dest / "finetune")
    for member in ("core", "training"):
        shutil.copytree(
            root / member / "src",
            dest / member / "src",
            symlinks=True,  # iris_core/params.yaml links to the copy's params.yaml
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def member_env(package: str, venv: Path, root: Path = ROOT) -> Path:
    """What a member's image installs: `uv sync --package NAME --no-dev` into `venv`, from the
    project at `root` (default this one); its bin/."""
    uv = os.environ.get("UV") or shutil.which("uv") or str(ROOT / "scripts" / "uv.sh")
    sync = subprocess.run(
        [uv, "sync", "--frozen", "--no-dev", "--package", package, "--no-editable"],
        cwd=root,
        env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_COMPILE_BYTECODE": "1"},
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if sync.returncode != 0:
        raise RuntimeError(f"uv sync --package {package} failed:\n{sync.stderr}")
    return venv / "bin"
