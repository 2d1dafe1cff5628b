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
    # no calls home: on a closed network each is refused, and some stall the page
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


#: Every picture in docs/, all made by `take` (a test holds the folder to this list).
PICTURES = (
    "swagger.png",
    "mlflow-model.png",
    "prefect-finetune-run.png",
    "prometheus-predicted-classes.png",
)


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
    """Predictions of each class, then five suggestions (with the stack's token), so that the
    store crosses a multiple of 5 and one fine-tune runs; the id of the flow run that ran it,
    once the API serves the new version."""
    token = settings.feedback_token_file.read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=settings.api_url, timeout=30, headers=headers) as api:
        for i in range(predictions):
            flower = dict(zip(FEATURES, EXAMPLES[CLASS_NAMES[i % 3]], strict=True))
            api.post("/predict", json=flower).raise_for_status()
        before = api.get("/model").json()["version"]
        tuned = int(sum(api.get("/feedback/stats").json()["finetunes"].values()))
        for i in range(5):
            name = CLASS_NAMES[i % 3]
            body = dict(zip(FEATURES, EXAMPLES[name], strict=True)) | {"class_name": name}
            api.post("/suggest", json=body).raise_for_status()
        deadline = time.monotonic() + 180
        while sum(api.get("/feedback/stats").json()["finetunes"].values()) <= tuned:
            if time.monotonic() > deadline:
                raise RuntimeError("no fine-tune finished within 180 s of five suggestions")
            time.sleep(1)
        deadline = time.monotonic() + 60
        while api.get("/model").json()["version"] == before and time.monotonic() < deadline:
            api.post("/predict", json=dict(zip(FEATURES, EXAMPLES["Iris-setosa"], strict=True)))
            time.sleep(1)
    prefect = PrefectRest(settings.prefect_url)
    try:
        found = prefect.request(
            "POST",
            "/task_runs/filter",
            json={
                "task_runs": {"name": {"like_": "fine_tune_at"}},
                "sort": "EXPECTED_START_TIME_DESC",
                "limit": 1,
            },
        ).json()
    finally:
        prefect.close()
    if not found:
        raise RuntimeError("Prefect has no fine_tune_at task run")
    return str(found[0]["flow_run_id"])


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
    assert tuple(shots) == PICTURES  # noqa: S101 (the list the docs are held to)
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
