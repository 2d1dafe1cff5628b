"""`iris-stack`: the embedded default. One machine, no cluster, the same system.

`up` starts what is missing (a lean MLflow server and a Prefect server on 127.0.0.1, state under
one folder), runs the DVC pipeline, deploys the fine-tuning flow to a local process work pool and
starts its worker, starts the prediction API and prints where everything is; the services stay
in the background until `down`. Running `up` twice is safe: what answers already is reused, and
`dvc repro` skips what is up to date.

The databases are SQLite files under the state folder, or with IRIS_DATABASE=postgres one local
PostgreSQL cluster there that `up` starts first and `down` stops last (`iris_stack.databases`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from iris_core import EXAMPLES, FEATURES
from iris_core.feedback import STORE_URL
from iris_core.params import ParamsError, RegistryParams, load_params
from iris_core.registry import AliasedVersion, RegistryError, version_by_alias
from iris_stack.databases import (
    ROLES,
    Databases,
    create_databases,
    feedback_token,
    local_cluster,
    postgres_databases,
    role_passwords,
    sqlite_databases,
)
from iris_stack.deploy import deploy_local, wait_pool_ready
from iris_stack.process import Service, ServiceError, answers, bin_path, stop_group
from iris_stack.prometheus import prometheus_config
from iris_stack.services import (
    API_READY,
    MLFLOW_HEALTH,
    PREFECT_HEALTH,
    PROMETHEUS_READY,
    WORKER_HEALTH,
    api_server,
    mlflow_server,
    prefect_server,
    prefect_worker,
    prometheus_server,
    ready_url,
)
from iris_stack.settings import StackSettings

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


def start(settings: StackSettings, service: Service) -> str:
    """Start `service` detached and record its pid, unless it answers already."""
    if answers(service.health_url):
        return f"{service.name}: already answering at {service.health_url}"
    pid = service.start()
    _pidfile(settings, service.name).write_text(f"{pid}\n")
    return f"{service.name}: started (pid {pid}, log {service.log_path})"


def wait(settings: StackSettings, service: Service, url: str | None = None) -> None:
    """Until the service answers `url` (default its health URL); one `start` launched is
    stopped again if it does not (one found running is left alone)."""
    if service.process is None:
        service.wait_healthy(settings.start_timeout_s, url=url)
        return
    try:
        service.wait_healthy(settings.start_timeout_s, url=url)
    except ServiceError:
        service.stop()
        _pidfile(settings, service.name).unlink(missing_ok=True)
        raise


def registry_params(settings: StackSettings) -> RegistryParams:
    """The shared names (models, alias, experiment, threshold) from the project's params.yaml."""
    try:
        return load_params(settings.params).registry
    except ParamsError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1) from e


def registry_env(reg: RegistryParams) -> dict[str, str]:
    """The shared names as the services' settings read them: the API serves what training
    registers, the fine-tune starts from and registers the same models."""
    return {
        "IRIS_API_MODEL_NAME": reg.onnx_model_name,
        "IRIS_API_MODEL_ALIAS": reg.alias,
        "IRIS_FINETUNE_EXPERIMENT": reg.experiment,
        "IRIS_FINETUNE_ONNX_MODEL_NAME": reg.onnx_model_name,
        "IRIS_FINETUNE_SKLEARN_MODEL_NAME": reg.sklearn_model_name,
        "IRIS_FINETUNE_ALIAS": reg.alias,
        "IRIS_FINETUNE_ACCURACY_ABOVE": str(reg.accuracy_above),
    }


def champions(settings: StackSettings, reg: RegistryParams) -> list[AliasedVersion | None]:
    """The versions of both registered models that carry the alias."""
    names = (reg.onnx_model_name, reg.sklearn_model_name)
    try:
        return [version_by_alias(settings.mlflow_url, name, reg.alias) for name in names]
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
    """Start MLflow and Prefect (unless they answer), run `dvc repro`, deploy the fine-tuning
    flow and start its worker, start the API; print addresses and versions."""
    settings = load_settings()
    reg = registry_params(settings)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    try:
        token = feedback_token(settings.feedback_token_file)
        databases = (
            _start_postgres(settings)
            if settings.database == "postgres"
            else sqlite_databases(settings)
        )
        mlflow = mlflow_server(
            settings.state_dir / "mlflow", settings.mlflow_port, settings.host, databases.mlflow
        )
        prefect = prefect_server(
            settings.state_dir / "prefect", settings.prefect_port, settings.host, databases.prefect
        )
        for service in (mlflow, prefect):  # both start together: each takes 10-15 s
            typer.echo(start(settings, service), err=True)
        for service in (mlflow, prefect):
            wait(settings, service)
    except ServiceError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1) from e

    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.mlflow_url, "DVC_NO_ANALYTICS": "1"}
    _dvc("repro", env=env)
    versions = champions(settings, reg)
    if not all(versions):
        # The pipeline is up to date but this registry has no version with the alias (a new
        # MLflow state folder, say): train again so the registry and the pipeline agree.
        typer.echo(
            f"the registry has no version with alias {reg.alias!r} yet: retraining", err=True
        )
        _dvc("repro", "--force", "--single-item", "train", env=env)
        versions = champions(settings, reg)
    try:
        _start_worker(settings, registry_env(reg) | worker_env(databases))
        _start_api(settings, registry_env(reg) | api_env(settings, databases, token))
        prometheus = _start_prometheus(settings)
    except ServiceError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1) from e
    _print_summary(settings, versions, prometheus)


#: Requests the API sends Prefect at a time when Prefect runs on PostgreSQL, which takes
#: concurrent writes (on SQLite it answers all but one 503, so the API's default is 1); past a
#: few, the Prefect server's CPU is the limit (docs/benchmarks.md, docs/local-stack.md).
POSTGRES_PREFECT_CONCURRENCY = 4


def worker_env(databases: Databases) -> dict[str, str]:
    """The feedback store, for the flow runs the worker starts."""
    return {STORE_URL: databases.feedback}


def api_env(settings: StackSettings, databases: Databases, token: str) -> dict[str, str]:
    """Prefect's address, the feedback store, the token /suggest requires; with PostgreSQL
    more requests to Prefect at a time (unless IRIS_API_PREFECT_CONCURRENCY is set)."""
    env = {
        "IRIS_API_PREFECT_API_URL": settings.prefect_url,
        STORE_URL: databases.feedback,
        "IRIS_API_FEEDBACK_TOKEN": token,
    }
    if settings.database == "postgres" and "IRIS_API_PREFECT_CONCURRENCY" not in os.environ:
        env["IRIS_API_PREFECT_CONCURRENCY"] = str(POSTGRES_PREFECT_CONCURRENCY)
    return env


def _start_postgres(settings: StackSettings) -> Databases:
    """The stack's PostgreSQL cluster running (created the first time), with a role and a
    database each for MLflow, Prefect and the feedback store; their URLs."""
    cluster = local_cluster(settings)
    if cluster.init():
        typer.echo(f"postgres: created a cluster in {cluster.folder}", err=True)
    service = cluster.service()
    where = f"{cluster.host}:{cluster.port}"
    pid = cluster.running_pid()
    if pid is not None:
        typer.echo(f"postgres: already answering at {where} (pid {pid})", err=True)
    elif cluster.ready():
        raise ServiceError(
            f"another PostgreSQL server answers at {where}: set IRIS_POSTGRES_PORT to a free "
            f"port for the stack's cluster ({cluster.folder})"
        )
    else:
        pid = service.start()
        _pidfile(settings, service.name).write_text(f"{pid}\n")
        typer.echo(f"postgres: started (pid {pid}, log {service.log_path})", err=True)
    wait(settings, service)
    passwords = role_passwords(settings.postgres_credentials, cluster.host, cluster.port)
    create_databases(cluster, passwords)
    return postgres_databases(cluster, passwords)


def _start_prometheus(settings: StackSettings) -> bool:
    """Prometheus with prometheus.yml (the API at its port), if the binary is on PATH."""
    if shutil.which("prometheus") is None:
        typer.echo(
            "prometheus: not on PATH, not started (Debian: apt-get install prometheus)", err=True
        )
        return False
    state = settings.state_dir / "prometheus"
    config = prometheus_config(
        Path("prometheus.yml"), f"{settings.host}:{settings.api_port}", state / "prometheus.yml"
    )
    service = prometheus_server(config, state, settings.prometheus_port, settings.host)
    typer.echo(start(settings, service), err=True)
    wait(settings, service)
    return True


def _start_worker(settings: StackSettings, names: dict[str, str]) -> None:
    """The local deployment of the fine-tuning flow, and a process worker that runs it."""
    home = settings.state_dir / "prefect"
    deploy_local(settings.prefect_url, home, settings.work_pool, Path.cwd())
    worker = prefect_worker(
        settings.work_pool,
        settings.prefect_url,
        home,
        settings.mlflow_url,
        settings.worker_health_port,
        settings.state_dir / "worker.log",
        env=names,
        host=settings.host,
    )
    typer.echo(start(settings, worker), err=True)
    wait(settings, worker)
    wait_pool_ready(settings.prefect_url, settings.work_pool, settings.start_timeout_s)


def _start_api(settings: StackSettings, names: dict[str, str]) -> None:
    api = api_server(
        settings.api_port,
        settings.mlflow_url,
        settings.state_dir / "api.log",
        settings.host,
        env=names,
    )
    typer.echo(start(settings, api), err=True)
    wait(settings, api, url=ready_url(api))


def _print_summary(
    settings: StackSettings, versions: list[AliasedVersion | None], prometheus: bool
) -> None:
    rows = summary_rows(settings, versions, prometheus)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key:<{width}}  {value}")


def summary_rows(
    settings: StackSettings, versions: list[AliasedVersion | None], prometheus: bool
) -> list[tuple[str, str]]:
    """What `up` prints: addresses, versions, where the data and the secrets are (never a
    secret itself)."""
    rows = [
        ("MLflow UI", settings.mlflow_url),
        ("Prefect UI", settings.prefect_url.removesuffix("/api")),
        ("API (Swagger)", f"{settings.api_url}/docs"),
    ]
    if prometheus:
        rows.append(("Prometheus", settings.prometheus_url))
    accuracy = ""
    for v in versions:
        if v is None:
            continue
        accuracy = v.tags.get("test_accuracy", "?")
        rows.append((v.name, f"version {v.version} @{v.alias} (test accuracy {accuracy})"))
    rows.append(("Test accuracy", accuracy))
    if settings.database == "postgres":
        where = f"{settings.host}:{settings.postgres_port}"
        pgpass = settings.postgres_credentials
        psql = f"psql -h {settings.host} -p {settings.postgres_port} -U mlflow mlflow"
        rows += [
            ("Databases", f"PostgreSQL {where}: {', '.join(ROLES)} (in {settings.postgres_dir})"),
            ("DB passwords", f"{pgpass} (PGPASSFILE={pgpass} {psql})"),
            ("Feedback DB", f"PostgreSQL {where}/feedback"),
        ]
    else:
        rows.append(("Feedback DB", str(settings.feedback_db)))
    token = settings.feedback_token_file
    example = dict(zip(FEATURES, EXAMPLES["Iris-setosa"], strict=True))
    body = json.dumps(example | {"class_name": "Iris-setosa"}, separators=(",", ":"))
    curl = f"curl -H \"Authorization: Bearer $(cat {token})\" --json '{body}'"
    rows += [
        ("Suggest token", f"{token} (POST /suggest sends it as a bearer token):"),
        ("", f"{curl} {settings.api_url}/suggest"),
        ("Stop with", "make down"),
    ]
    return rows


#: `down` stops in this order: Prometheus before what it scrapes, the worker before the Prefect
#: server it reports to, the API before the servers it calls, PostgreSQL after everything
#: that uses it; SIGTERMs each needs (a Prefect worker wants a second one; PostgreSQL gets its
#: fast shutdown instead: on SIGTERM it would wait for every session to end).
STOP_ORDER = {"prometheus": 1, "worker": 2, "api": 1, "prefect": 1, "mlflow": 1, "postgres": 0}


@app.command()
def down() -> None:
    """Stop the services `up` started (not those it found running)."""
    settings = load_settings()
    stopped = 0
    order = list(STOP_ORDER)
    pidfiles = sorted(
        settings.state_dir.glob("*.pid"),
        key=lambda f: (order.index(f.stem) if f.stem in order else len(order), f.stem),
    )
    for pidfile in pidfiles:
        name = pidfile.stem
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if name == "postgres":
            pid = _stop_postgres(settings)
        elif not (pid and stop_group(pid, signals=STOP_ORDER.get(name, 1))):
            pid = 0  # nothing ran
        if pid:
            typer.echo(f"{name}: stopped (pid {pid})")
            stopped += 1
        pidfile.unlink(missing_ok=True)
    if not stopped:
        typer.echo("nothing to stop")


def _stop_postgres(settings: StackSettings) -> int:
    """The stack's cluster stopped with a fast shutdown; its pid, or 0 if it was not running."""
    try:
        cluster = local_cluster(settings)
        pid = cluster.running_pid()
        return pid if pid is not None and cluster.stop() else 0
    except ServiceError as e:
        typer.echo(f"postgres: {e}", err=True)
        return 0


def _postgres_ready(settings: StackSettings) -> bool:
    try:
        return local_cluster(settings).ready()
    except (ServiceError, OSError, subprocess.TimeoutExpired):
        return False


@app.command()
def status(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the exit code.")] = False,
) -> None:
    """Say which services answer; exit 1 if one does not."""
    settings = load_settings()
    worker = f"http://{settings.host}:{settings.worker_health_port}"
    checks = {
        "mlflow": (settings.mlflow_url, f"{settings.mlflow_url}{MLFLOW_HEALTH}"),
        "prefect": (settings.prefect_url, f"{settings.prefect_url}{PREFECT_HEALTH}"),
        "worker": (settings.work_pool, f"{worker}{WORKER_HEALTH}"),
        "api": (settings.api_url, f"{settings.api_url}{API_READY}"),
    }
    if shutil.which("prometheus"):  # `up` starts it only then
        ready = f"{settings.prometheus_url}{PROMETHEUS_READY}"
        checks["prometheus"] = (settings.prometheus_url, ready)
    probes: dict[str, tuple[str, Callable[[], bool]]] = {}
    if settings.database == "postgres":  # PostgreSQL does not speak HTTP: pg_isready
        where = f"postgresql://{settings.host}:{settings.postgres_port}"
        probes["postgres"] = (where, partial(_postgres_ready, settings))
    probes |= {name: (url, partial(answers, health)) for name, (url, health) in checks.items()}
    ok = True
    for name, (url, probe) in probes.items():
        up = probe()
        ok &= up
        if not quiet:
            typer.echo(f"{name:<7} {url}  {'up' if up else 'down'}")
    raise typer.Exit(0 if ok else 1)
