"""Helpers the tests share: UCI-like data, a local server for its archive, a real API process."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_iris

from iris_core import CLASS_NAMES
from iris_finetune.flow import FLOW_NAME
from iris_finetune.store import FeedbackStore
from iris_stack.services import PrefectRest, api_server, free_port, running
from iris_training.params import TrainParams
from iris_training.train import Outcome

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
    """The DVC pipeline of `root` (dvc.yaml, params.yaml, .dvc/config, the stages' sources) and
    the Prefect deployments (prefect.yaml) and Prometheus' config and rules in a new git repository at `dest`, with no data and
    no cache."""
    dest.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", "prefect.yaml", "prometheus.yml"):
        shutil.copy(root / name, dest / name)
    shutil.copytree(
        root / ".dvc", dest / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache", "config.local")
    )
    shutil.copytree(root / "monitoring", dest / "monitoring")
    shutil.copytree(
        root / "training" / "src",
        dest / "training" / "src",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def small_params(**overrides: object) -> TrainParams:
    """A small grid, with experiment and registry names of its own so tests never collide."""
    tag = uuid.uuid4().hex[:8]
    values: dict[str, object] = {
        "hidden_layers": [2, 3],
        "epochs": [300, 600],
        "experiment": f"test-{tag}",
        "onnx_model_name": f"IrisModel-{tag}",
        "sklearn_model_name": f"IrisDev-{tag}",
    }
    return TrainParams.model_validate(values | overrides)


@dataclass(frozen=True)
class Registered:
    params: TrainParams
    outcome: Outcome
    tracking_uri: str

    @property
    def model_name(self) -> str:
        return self.params.onnx_model_name


ROOT = Path(__file__).resolve().parents[1]


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


#: The work pool of the tests' Prefect server (the stack's is `iris-local`).
WORK_POOL = "iris-test"


@dataclass(frozen=True)
class FeedbackCase:
    """One test's fine-tuning set-up: deployment, feedback store and registered model names."""

    prefect: PrefectRest
    deployment: str  # flow/deployment, for IRIS_API_FEEDBACK_DEPLOYMENT
    deployment_id: str
    store: FeedbackStore
    sklearn_model: str
    onnx_model: str
    experiment: str
    client: MlflowClient
    env: dict[str, str]

    @classmethod
    def create(
        cls, prefect: PrefectRest, registered: Registered, folder: Path, **settings: str
    ) -> FeedbackCase:
        tag = uuid.uuid4().hex[:8]
        client = MlflowClient(registered.tracking_uri)
        names = {}
        for kind, source in (
            ("sklearn", registered.params.sklearn_model_name),
            ("onnx", registered.params.onnx_model_name),
        ):
            name = f"{source}-{tag}"
            version = registered.outcome.versions[source]
            copy = client.copy_model_version(f"models:/{source}/{version}", name)
            client.set_registered_model_alias(name, "champion", copy.version)
            names[kind] = name
        store = FeedbackStore(folder / "feedback.db")
        env = {
            "IRIS_FINETUNE_FEEDBACK_DB": str(store.path),
            "IRIS_FINETUNE_SKLEARN_MODEL_NAME": names["sklearn"],
            "IRIS_FINETUNE_ONNX_MODEL_NAME": names["onnx"],
            "IRIS_FINETUNE_EXPERIMENT": f"finetune-{tag}",
            **settings,
        }
        deployment_id = prefect.clone_deployment(f"{FLOW_NAME}/local", f"test-{tag}", env)
        return cls(
            prefect,
            f"{FLOW_NAME}/test-{tag}",
            deployment_id,
            store,
            names["sklearn"],
            names["onnx"],
            env["IRIS_FINETUNE_EXPERIMENT"],
            client,
            env,
        )

    @property
    def tracking_uri(self) -> str:
        return str(self.client.tracking_uri)

    def versions(self, name: str) -> list[ModelVersion]:
        """The versions of registered model `name`, oldest first."""
        found = self.client.search_model_versions(f"name = '{name}'")
        return sorted(found, key=lambda v: int(v.version))
