"""The API against the MLflow registry itself: a version the alias moves to that cannot be
served (no ONNX flavour) is refused and the old one kept, `latest` follows the newest version,
and a registry answering web pages leaves the API live, not ready, following. The rest of the
API's behaviour does not depend on where the model comes from: tests/api/test_predict.py and
test_v2.py serve a model from a folder."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient

from iris_api.app import create_app
from iris_api.follower import ModelFollower
from iris_api.model import ModelError
from iris_api.settings import ApiSettings
from iris_core import EXAMPLES, FEATURES
from iris_testing.training import Registered
from tests.api.conftest import NO_PREFECT

SETOSA = dict(zip(FEATURES, EXAMPLES["Iris-setosa"], strict=True))


def settings(registered: Registered, **overrides: Any) -> ApiSettings:
    values: dict[str, Any] = {
        "tracking_uri": registered.tracking_uri,
        "model_name": registered.model_name,
        "prefect_api_url": NO_PREFECT,
    }
    return ApiSettings(**(values | overrides))


def _model_id(source: str | None) -> str:
    """MLflow 3 wants the logged model's id with a `models:/m-...` source (the REST answer
    for a version leaves `model_id` empty)."""
    assert source is not None
    return source.removeprefix("models:/")


@pytest.mark.integration
def test_a_version_that_fails_to_load_keeps_the_old_one_and_is_counted(
    registered: Registered,
) -> None:
    """A model of its own whose alias moves to a version with no ONNX flavour: refused."""
    mlflow = MlflowClient(registered.tracking_uri)
    good = mlflow.get_model_version(
        registered.model_name, registered.outcome.versions[registered.model_name]
    )
    name = f"{registered.model_name}-broken"
    mlflow.create_registered_model(name)
    first = mlflow.create_model_version(
        name, str(good.source), run_id=good.run_id, model_id=_model_id(good.source)
    )
    mlflow.set_registered_model_alias(name, "champion", first.version)
    app = create_app(settings(registered, model_name=name, poll_interval_s=60))
    with TestClient(app) as client:
        follower: ModelFollower = app.state.follower
        sklearn = mlflow.get_model_version_by_alias(
            registered.registry.sklearn_model_name, "champion"
        )
        bad = mlflow.create_model_version(
            name, str(sklearn.source), run_id=sklearn.run_id, model_id=_model_id(sklearn.source)
        )
        mlflow.set_registered_model_alias(name, "champion", bad.version)
        with pytest.raises(ModelError, match="no ONNX flavour"):
            follower.fetch()
        assert client.post("/predict", json=SETOSA).json()["model_version"] == first.version
        assert client.get("/v2/health/ready").status_code == 200
        metrics = client.get("/metrics").text
        assert 'iris_model_reloads_total{result="failure"} 1.0' in metrics
        assert 'iris_model_reloads_total{result="success"} 1.0' in metrics
        assert f'version="{first.version}"' in metrics

        mlflow.set_registered_model_alias(name, "champion", first.version)
        assert follower.fetch() is None  # the version served already: nothing to do


@pytest.mark.integration
def test_latest_follows_the_newest_version(registered: Registered) -> None:
    app = create_app(settings(registered, model_alias="latest", poll_interval_s=60))
    with TestClient(app) as client:
        newest = max(
            int(v.version)
            for v in MlflowClient(registered.tracking_uri).search_model_versions(
                f"name='{registered.model_name}'"
            )
        )
        assert client.get("/model").json()["version"] == str(newest)
        assert client.get("/model").json()["alias"] == "latest"


class Portal(BaseHTTPRequestHandler):
    """What a captive portal or a misrouted proxy answers: 200 and a web page, for anything."""

    def do_GET(self) -> None:
        page = b"<html><body>Please sign in</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_registry_answering_web_pages_leaves_the_api_live_not_ready_and_following() -> None:
    portal = ThreadingHTTPServer(("127.0.0.1", 0), Portal)
    threading.Thread(target=portal.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{portal.server_address[1]}"
        app = create_app(ApiSettings(tracking_uri=url, poll_interval_s=0.2))
        with TestClient(app) as client:
            time.sleep(1)  # several checks, each failing
            ready = client.get("/v2/health/ready")
            assert ready.status_code == 503
            assert "non-JSON" in ready.json()["reason"]
            assert client.get("/v2/health/live").status_code == 200
            follower: ModelFollower = app.state.follower
            assert follower._task is not None
            assert not follower._task.done()  # still following
            errors = [
                line for line in client.get("/metrics").text.splitlines()
                if line.startswith("iris_registry_errors_total")
            ]  # fmt: skip
            assert float(errors[0].split()[1]) >= 3
    finally:
        portal.shutdown()
        portal.server_close()
