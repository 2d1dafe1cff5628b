"""`iris-stack`: the embedded default. One machine, no cluster, the same system.

`up` starts what is missing (a lean MLflow server on 127.0.0.1, state under one folder), runs
the DVC pipeline, starts the prediction API and prints where everything is; the services stay in the background until
`down`. Running `up` twice is safe: what answers already is reused, and `dvc repro` skips what is
up to date.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from iris_core.registry import AliasedVersion, RegistryError, version_by_alias
from iris_stack.services import (
    Service,
    ServiceError,
    answers,
    api_server,
    bin_path,
    mlflow_server,
    ready_url,
    stop_group,
)
from iris_stack.settings import StackSettings
from iris_training.params import ParamsError, load_params

app = typer.Typer(
    add_completion=False, pretty_exceptions_show_locals=False, help=__doc__, no_args_is_help=True
)


def load_settings() -> StackSettings:
    """The settings from the environment; a bad value ends the command naming its variable."""
    try:
        return StackSettings()
    except ValidationError as e:
        for err in e.errors():
            name = "IRIS_" + str(err["loc"][0]).upper()
            typer.echo(f"{name}={err.get('input')!r}: {err['msg']}", err=True)
        raise typer.Exit(2) from e


def _pidfile(settings: StackSettings, name: str) -> Path:
    return settings.state_dir / f"{name}.pid"


def ensure_running(settings: StackSettings, service: Service) -> str:
    """Reuse a service that answers already; else start it detached and record its pid."""
    if answers(service.health_url):
        return f"{service.name}: already answering at {service.health_url}"
    pid = service.start()
    _pidfile(settings, service.name).write_text(f"{pid}\n")
    try:
        service.wait_healthy(settings.start_timeout_s)
    except ServiceError:
        service.stop()
        _pidfile(settings, service.name).unlink(missing_ok=True)
        raise
    return f"{service.name}: started (pid {pid}, log {service.log_path})"


def champions(settings: StackSettings) -> list[AliasedVersion | None]:
    """The versions of both registered models (names from params.yaml) that carry the alias."""
    try:
        train = load_params(settings.params).train
    except ParamsError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1) from e
    names = (train.onnx_model_name, train.sklearn_model_name)
    try:
        return [version_by_alias(settings.mlflow_url, name, train.alias) for name in names]
    except RegistryError as e:
        typer.echo(f"cannot read the model registry: {e}", err=True)
        raise typer.Exit(1) from e


def _dvc(*args: str, env: dict[str, str]) -> None:
    cmd = [bin_path("dvc"), *args]
    typer.echo(f"$ {' '.join(['dvc', *args])}", err=True)
    if subprocess.run(cmd, env=env, check=False).returncode != 0:
        typer.echo(
            f"`dvc {' '.join(args)}` failed (see above); services keep running, "
            "`make down` stops them",
            err=True,
        )
        raise typer.Exit(1)


@app.command()
def up() -> None:
    """Start MLflow (unless it answers), run `dvc repro`, print addresses and versions."""
    settings = load_settings()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    try:
        typer.echo(
            ensure_running(
                settings,
                mlflow_server(settings.state_dir / "mlflow", settings.mlflow_port, settings.host),
            ),
            err=True,
        )
    except ServiceError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1) from e

    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.mlflow_url, "DVC_NO_ANALYTICS": "1"}
    _dvc("repro", env=env)
    versions = champions(settings)
    if not all(versions):
        # The pipeline is up to date but this registry has no champion (a new MLflow state
        # folder, say): train again so the registry and the pipeline agree.
        typer.echo("the registry has no champion yet: retraining", err=True)
        _dvc("repro", "--force", "--single-item", "train", env=env)
        versions = champions(settings)
    _start_api(settings)
    _print_summary(settings, versions)


def _start_api(settings: StackSettings) -> None:
    api = api_server(
        settings.api_port,
        settings.mlflow_url,
        settings.state_dir / "api.log",
        settings.host,
    )
    try:
        typer.echo(ensure_running(settings, api), err=True)
        api.wait_healthy(settings.start_timeout_s, url=ready_url(api))
    except ServiceError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1) from e


def _print_summary(settings: StackSettings, versions: list[AliasedVersion | None]) -> None:
    rows = [("MLflow UI", settings.mlflow_url), ("API (Swagger)", f"{settings.api_url}/docs")]
    accuracy = ""
    for v in versions:
        if v is None:
            continue
        accuracy = v.tags.get("test_accuracy", "?")
        rows.append((v.name, f"version {v.version} @{v.alias} (test accuracy {accuracy})"))
    rows += [("Test accuracy", accuracy), ("Stop with", "make down")]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key:<{width}}  {value}")


@app.command()
def down() -> None:
    """Stop the services `up` started (not those it found running)."""
    settings = load_settings()
    stopped = 0
    for pidfile in sorted(settings.state_dir.glob("*.pid")):
        name = pidfile.stem
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid and stop_group(pid):  # False when nothing runs under that pid
            typer.echo(f"{name}: stopped (pid {pid})")
            stopped += 1
        pidfile.unlink(missing_ok=True)
    if not stopped:
        typer.echo("nothing to stop")


@app.command()
def status(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the exit code.")] = False,
) -> None:
    """Say which services answer; exit 1 if one does not."""
    settings = load_settings()
    checks = {
        "mlflow": (settings.mlflow_url, f"{settings.mlflow_url}/health"),
        "api": (settings.api_url, f"{settings.api_url}/v2/health/ready"),
    }
    ok = True
    for name, (url, health) in checks.items():
        up = answers(health)
        ok &= up
        if not quiet:
            typer.echo(f"{name:<7} {url}  {'up' if up else 'down'}")
    raise typer.Exit(0 if ok else 1)
