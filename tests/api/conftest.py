"""The API in this process without MLflow: the folder model source serves a model trained and
exported here (`iris_testing.models`), so these tests need no server (unit tier). What needs
the registry itself is in test_registry.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from iris_api.app import create_app
from iris_api.settings import ApiSettings
from iris_testing.models import OnnxModel, put_version, train_onnx
from iris_testing.ports import free_port

#: Nothing listens here: Prefect is not part of these tests (tests/finetune has a real one).
NO_PREFECT = f"http://127.0.0.1:{free_port()}/api"
#: The batch limit of these tests' apps.
BATCH_LIMIT = 5


@pytest.fixture(scope="session")
def onnx_model(data_dir: Path) -> OnnxModel:
    """A model trained and exported as training does, on the prepared test data."""
    return train_onnx(data_dir)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, onnx_model: OnnxModel) -> Path:
    """A model folder holding version 1 (never changed: tests that add versions make their
    own folder)."""
    folder = tmp_path_factory.mktemp("models")
    put_version(folder, 1, onnx_model)
    return folder


def api_settings(model_dir: Path, **overrides: Any) -> ApiSettings:
    values: dict[str, Any] = {
        "model_dir": model_dir,
        "batch_limit": BATCH_LIMIT,
        "prefect_api_url": NO_PREFECT,
    }
    return ApiSettings(**(values | overrides))


@pytest.fixture(scope="module", params=[True, False], ids=["fast-path", "fastapi-route"])
def client(request: pytest.FixtureRequest, model_dir: Path) -> Iterator[TestClient]:
    """Every test with it runs twice: answered by the ASGI fast path, and by FastAPI's
    routes."""
    with TestClient(create_app(api_settings(model_dir, fast_path=request.param))) as c:
        yield c
