"""Training against a real MLflow server: runs, registry versions, tags, alias, ONNX parity."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import mlflow
import mlflow.sklearn
import numpy as np
import onnxruntime as ort
import pytest
import yaml
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_iris

from iris_core import CLASS_NAMES
from iris_core.params import RegistryParams, TrainParams, promotes
from iris_core.registry import version_by_alias
from iris_testing.ports import free_port
from iris_testing.project import member_env
from iris_testing.training import own_registry, small_params
from iris_training.dataset import load_dataset
from iris_training.search import search, select_best
from iris_training.train import Outcome, train

pytestmark = pytest.mark.integration  # a real MLflow server, iris-train processes

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def trained(
    data_dir: Path, mlflow_url: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[RegistryParams, Outcome, Path]:
    out = tmp_path_factory.mktemp("train-out")
    reg = own_registry()
    outcome = train(
        small_params(),
        reg,
        data_dir,
        out / "metrics.json",
        out / "plots" / "confusion.csv",
        mlflow_url,
        n_jobs=2,
    )
    mlflow.set_tracking_uri(mlflow_url)
    return reg, outcome, out


def onnx_session(uri: str) -> ort.InferenceSession:
    folder = Path(mlflow.artifacts.download_artifacts(uri))
    return ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])


def test_grid_search_is_seeded(data_dir: Path) -> None:
    p = small_params()
    data = load_dataset(data_dir)
    first, second = (select_best(list(search(p, data, n_jobs=2))) for _ in range(2))
    assert first.point == second.point
    assert first.val_log_loss == second.val_log_loss
    np.testing.assert_array_equal(
        first.model.predict_proba(data.x_test), second.model.predict_proba(data.x_test)
    )


def test_round_trip_registers_both_models_with_tags_and_alias(
    trained: tuple[RegistryParams, Outcome, Path], mlflow_url: str
) -> None:
    p, outcome, _ = trained
    client = MlflowClient(mlflow_url)
    assert outcome.champion
    for name in (p.onnx_model_name, p.sklearn_model_name):
        version = client.get_model_version_by_alias(name, "champion")
        assert version.version == outcome.versions[name] == "1"
        assert version.tags == {
            "test_accuracy": f"{outcome.test_accuracy:.4f}",
            "epochs": str(outcome.best.point.epochs),
            "hidden_layers": str(outcome.best.point.hidden_layers),
        }


def test_runs_hold_the_search_and_the_best_model(
    trained: tuple[RegistryParams, Outcome, Path], mlflow_url: str, data_dir: Path
) -> None:
    p, outcome, _ = trained
    client = MlflowClient(mlflow_url)
    experiment = client.get_experiment_by_name(p.experiment)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1
    assert len(children) == 4  # 2 x 2 grid
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert set(child.data.params) >= {"hidden_layers", "epochs", "neurons"}
        assert set(child.data.metrics) >= {"val_log_loss", "val_accuracy", "fit_time_s"}
    best = min(children, key=lambda r: r.data.metrics["val_log_loss"])
    assert best.data.tags["best"] == "true"
    assert best.data.metrics["test_accuracy"] == pytest.approx(outcome.test_accuracy)
    md5 = hashlib.md5((data_dir / "train.csv").read_bytes(), usedforsecurity=False).hexdigest()
    assert best.data.tags["dvc.md5.train.csv"] == md5
    artifacts = {a.path for a in client.list_artifacts(best.info.run_id)}
    assert {"confusion_matrix.png", "confusion_matrix.json"} <= artifacts


def test_champion_onnx_loads_in_onnxruntime_and_scores_above_90_percent(
    trained: tuple[RegistryParams, Outcome, Path], data_dir: Path
) -> None:
    p, _, _ = trained
    session = onnx_session(f"models:/{p.onnx_model_name}@champion")
    data = load_dataset(data_dir)
    label, proba = session.run(None, {"input": data.x_test.astype(np.float32)})
    assert proba.shape == (30, 3)
    assert float((label == data.y_test).mean()) > 0.9
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["class_names"]) == list(CLASS_NAMES)


def test_onnx_matches_scikit_learn_on_all_150_samples(
    trained: tuple[RegistryParams, Outcome, Path],
) -> None:
    p, _, _ = trained
    sk_model = mlflow.sklearn.load_model(f"models:/{p.sklearn_model_name}@champion")
    session = onnx_session(f"models:/{p.onnx_model_name}@champion")
    x = load_iris().data
    label, proba = session.run(None, {"input": x.astype(np.float32)})
    np.testing.assert_array_equal(label, sk_model.predict(x))
    np.testing.assert_allclose(proba, sk_model.predict_proba(x), atol=1e-5, rtol=0)


def test_metrics_and_plots_files_for_dvc(trained: tuple[RegistryParams, Outcome, Path]) -> None:
    _, outcome, out = trained
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] == pytest.approx(outcome.test_accuracy, abs=1e-6)
    rows = (out / "plots" / "confusion.csv").read_text().splitlines()
    assert rows[0] == "actual,predicted"
    assert len(rows) == 31
    assert {r.split(",")[0] for r in rows[1:]} == set(CLASS_NAMES)


def _params_file(tmp_path: Path, p: TrainParams, reg: RegistryParams) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"] = p.model_dump()
    params["registry"] = reg.model_dump()
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _iris_train(
    tmp_path: Path, params: Path, data_dir: Path, tracking_uri: str, bin_dir: Path = BIN
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            bin_dir / "iris-train",
            "--params",
            params,
            "--data-dir",
            data_dir,
            "--metrics",
            tmp_path / "m.json",
            "--plots",
            tmp_path / "c.csv",
            "--tracking-uri",
            tracking_uri,
            "--n-jobs",
            "1",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_below_threshold_registers_without_alias_and_exits_1(
    tmp_path: Path, data_dir: Path, mlflow_url: str
) -> None:
    p, reg = small_params(hidden_layers=[2], epochs=[1]), own_registry()  # far below 90 %
    result = _iris_train(tmp_path, _params_file(tmp_path, p, reg), data_dir, mlflow_url)
    assert result.returncode == 1, result.stderr
    assert "is not above the threshold 0.9000" in result.stderr
    assert "without the alias 'champion'" in result.stderr
    assert "Traceback" not in result.stderr
    client = MlflowClient(mlflow_url)
    for name in (reg.onnx_model_name, reg.sklearn_model_name):
        (version,) = client.search_model_versions(f"name='{name}'")
        assert version.aliases == []
        # What `iris-stack up` asks: a known model without the alias is "no champion".
        assert version_by_alias(mlflow_url, name, "champion") is None
    assert version_by_alias(mlflow_url, f"{reg.onnx_model_name}-unknown", "champion") is None


def test_unreachable_mlflow_fails_fast_with_a_way_out(tmp_path: Path, data_dir: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    params = _params_file(tmp_path, small_params(), own_registry())
    result = _iris_train(tmp_path, params, data_dir, url)
    assert result.returncode == 1
    assert f"MLflow at {url} does not answer" in result.stderr
    assert "MLFLOW_TRACKING_URI" in result.stderr
    assert "Traceback" not in result.stderr


def test_training_member_runs_with_its_own_dependencies_only(
    tmp_path: Path, data_dir: Path, mlflow_url: str
) -> None:
    """What the training image installs (`--package iris-training`, no dev group, so
    mlflow-skinny and no MLflow server) is enough to train, log and register."""
    bin_dir = member_env("iris-training", tmp_path / "venv")
    has_server = subprocess.run(
        [bin_dir / "python", "-c", "import flask"], capture_output=True, check=False
    )
    assert has_server.returncode != 0  # the server's dependencies are not there
    p, reg = small_params(hidden_layers=[2], epochs=[300]), own_registry()
    result = _iris_train(tmp_path, _params_file(tmp_path, p, reg), data_dir, mlflow_url, bin_dir)
    assert result.returncode == 0, result.stderr
    assert (
        MlflowClient(mlflow_url).get_model_version_by_alias(reg.onnx_model_name, "champion").version
        == "1"
    )


def test_promotion_is_strictly_above_the_threshold() -> None:
    assert promotes(0.9 + 1e-9, 0.9)
    assert not promotes(0.9, 0.9)
    assert not promotes(27 / 30, 0.9)  # 27 of 30 test rows right is exactly 0.9: not above
    assert promotes(28 / 30, 0.9)


@pytest.mark.parametrize(("offset", "alias"), [(0.0, False), (-1e-9, True)])
def test_training_gives_the_alias_only_above_the_threshold(
    offset: float, alias: bool, data_dir: Path, mlflow_url: str, tmp_path: Path
) -> None:
    """The same seeded one-point grid twice: a threshold equal to the accuracy it reaches
    keeps the alias away; a hair below it gives it."""
    p = small_params(hidden_layers=[2], epochs=[300])
    probe = own_registry()
    first = train(p, probe, data_dir, tmp_path / "m.json", tmp_path / "c.csv", mlflow_url, 1)
    reg = own_registry(accuracy_above=first.test_accuracy + offset)
    outcome = train(p, reg, data_dir, tmp_path / "m.json", tmp_path / "c.csv", mlflow_url, 1)
    assert outcome.test_accuracy == first.test_accuracy
    assert outcome.champion is alias
    found = version_by_alias(mlflow_url, reg.onnx_model_name, reg.alias)
    assert (found is not None) is alias
