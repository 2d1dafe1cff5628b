"""`iris-screenshots` (`make screenshots`): with the local stack up (`make up`), send a little
traffic (predictions and five suggestions, so one fine-tune runs) and save headless-Chromium
screenshots of Swagger, the MLflow model page, the Prefect flow run that fine-tuned and a
Prometheus graph of `predicted_class_name_total` into docs/. The README shows them.

A developer tool, not part of the stack: it waits for flow runs with the tests' Prefect REST
helper, and reads the stack's settings (IRIS_*) as `iris-stack` does.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import httpx
import typer

from iris_core import CLASS_NAMES, EXAMPLES, FEATURES
from iris_core.params import load_params
from iris_stack.cli import load_settings
from iris_stack.settings import StackSettings
from iris_testing.prefect_rest import PrefectRest

#: Chromium flags for a server without a display (root needs --no-sandbox).
CHROMIUM = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--window-size=1400,900",
    "--virtual-time-budget=20000",  # let the single-page apps fetch and draw
]


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    raise typer.BadParameter("no Chromium on PATH (Debian: apt-get install chromium)")


def shoot(chromium: str, url: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [chromium, *CHROMIUM, f"--screenshot={path.resolve()}", url],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0 or not path.exists():
        raise RuntimeError(f"chromium could not capture {url}: {result.stderr[-500:]}")
    typer.echo(f"{path}  <- {url}")


def traffic(settings: StackSettings, predictions: int) -> str:
    """Predictions of each class, then suggestions until a fine-tune has run; the id of the
    flow run that fine-tuned."""
    with httpx.Client(base_url=settings.api_url, timeout=30) as api:
        for i in range(predictions):
            flower = dict(zip(FEATURES, EXAMPLES[CLASS_NAMES[i % 3]], strict=True))
            api.post("/predict", json=flower).raise_for_status()
        before = api.get("/model").json()["version"]
        runs = []
        for i in range(5):
            name = CLASS_NAMES[i % 3]
            body = dict(zip(FEATURES, EXAMPLES[name], strict=True)) | {"class_name": name}
            answer = api.post("/suggest", json=body)
            answer.raise_for_status()
            runs.append(answer.json()["flow_run_id"])
        prefect = PrefectRest(settings.prefect_url)
        try:
            states = {r["state_type"] for r in prefect.wait_final(len(runs), 180, ids=runs)}
            if states != {"COMPLETED"}:
                raise RuntimeError(f"the suggestions' flow runs did not complete: {states}")
            tuned = [
                str(task["flow_run_id"])
                for task in prefect.request(
                    "POST",
                    "/task_runs/filter",
                    json={
                        "flow_runs": {"id": {"any_": runs}},
                        "task_runs": {"name": {"like_": "fine_tune_at"}},
                    },
                ).json()
            ]
        finally:
            prefect.close()
        deadline = time.monotonic() + 60
        while api.get("/model").json()["version"] == before and time.monotonic() < deadline:
            api.post("/predict", json=dict(zip(FEATURES, EXAMPLES["Iris-setosa"], strict=True)))
            time.sleep(1)
    if not tuned:
        typer.echo("no fine-tune among these runs (the store was not at a multiple of 5)", err=True)
        return str(runs[-1])
    return tuned[0]


def scraped(settings: StackSettings, at_least: int, timeout_s: float = 60) -> None:
    """Until Prometheus has scraped at least `at_least` predictions (so the graph shows them)."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=settings.prometheus_url, timeout=10) as prometheus:
        while time.monotonic() < deadline:
            answer = prometheus.get(
                "/api/v1/query", params={"query": "sum(predicted_class_name_total)"}
            ).json()
            result = answer.get("data", {}).get("result", [])
            if result and float(result[0]["value"][1]) >= at_least:
                return
            time.sleep(0.5)
    raise RuntimeError(f"Prometheus at {settings.prometheus_url} did not scrape the predictions")


def take(settings: StackSettings, out: Path, predictions: int = 60) -> None:
    chromium = browser()
    model = load_params(settings.params).registry.onnx_model_name
    run_id = traffic(settings, predictions)
    scraped(settings, predictions)
    prefect_ui = settings.prefect_url.removesuffix("/api")
    expr = quote("sum by (class_name) (predicted_class_name_total)")
    shots = {
        "swagger.png": f"{settings.api_url}/docs",
        "mlflow-model.png": f"{settings.mlflow_url}/#/models/{model}",
        "prefect-finetune-run.png": f"{prefect_ui}/runs/flow-run/{run_id}",
        "prometheus-predicted-classes.png": (
            f"{settings.prometheus_url}/graph?g0.expr={expr}&g0.tab=0&g0.range_input=3m"
        ),
    }
    for name, url in shots.items():
        shoot(chromium, url, out / name)


app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)


@app.command()
def main(
    out: Annotated[Path, typer.Option(help="Folder for the PNG files.")] = Path("docs"),
) -> None:
    """With the stack up: a little traffic (one fine-tune), then headless-Chromium screenshots
    of Swagger, the MLflow model page, the Prefect fine-tune run and a Prometheus graph."""
    settings = load_settings()
    try:
        take(settings, out)
    except (httpx.HTTPError, RuntimeError, TimeoutError, ValueError) as e:
        typer.echo(f"screenshots: {e} (is the stack up? `make up`, `make status`)", err=True)
        raise typer.Exit(1) from e
