"""Monitoring against real parts: promtool on the config and rules, and a real Prometheus
scraping the real API (uvicorn, its own environment) on 127.0.0.1 after known traffic: every
dashboard query answers, the seed's counter equals the traffic, drift scores move as they must.

CI installs Prometheus from Debian (`promtool` comes with it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from iris_core import FEATURES
from iris_stack.process import running
from iris_stack.prometheus import prometheus_config
from iris_stack.services import prometheus_server
from iris_testing.api import api_process
from iris_testing.feedback import FeedbackCase
from iris_testing.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "k8s" / "grafana" / "iris-dashboard.json"
WINDOW = 200  # IRIS_API_DRIFT_WINDOW for these tests
BOUND = 0.25  # the IrisInputDrift alert's bound


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool not found: apt-get install prometheus (CI does)"
    return subprocess.run([tool, *args], cwd=ROOT, capture_output=True, text=True, check=False)


@pytest.mark.integration  # promtool: Prometheus' own checker (Debian's prometheus package)
def test_promtool_accepts_the_config_and_the_rules_and_their_unit_tests_pass() -> None:
    for args in (
        ("check", "config", "prometheus.yml"),
        ("check", "rules", "monitoring/rules.yml"),
        ("test", "rules", "monitoring/rules.test.yml"),
    ):
        result = promtool(*args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_staying_quiet() -> None:
    rules = yaml.safe_load((ROOT / "monitoring" / "rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert alerts  # the rules file holds alerts at all
    tested: dict[str, set[bool]] = {}
    for case in yaml.safe_load((ROOT / "monitoring" / "rules.test.yml").read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            tested.setdefault(check["alertname"], set()).add(bool(check["exp_alerts"]))
    assert tested == {alert: {True, False} for alert in alerts}


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(panel title, PromQL, legend) of every target, with Grafana's variables filled in."""
    board = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "30s").replace("$__range", "5m")
            assert "$" not in expr, (panel["title"], expr)
            queries.append((panel["title"], expr, target.get("legendFormat", "")))
    return queries


def test_every_panel_queries_through_the_datasource_variable() -> None:
    """No hard-coded datasource: the dashboard works in any Grafana whatever its Prometheus is
    called, and every panel has something to draw."""
    board = json.loads(DASHBOARD.read_text())
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource"]
    text = DASHBOARD.read_text()
    uids = set(re.findall(r'"uid": "([^"]*)"', text))
    assert uids == {"${datasource}", board["uid"]}
    for panel in board["panels"]:
        assert panel.get("targets"), panel["title"]


class PromQL:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=10)

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = self.http.get("/api/v1/query", params={"query": expr}).json()
        assert answer["status"] == "success", (expr, answer)
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def values(self, expr: str, label: str) -> dict[str, float]:
        return {r["metric"][label]: float(r["value"][1]) for r in self.query(expr)}

    def wait(self, check: Any, timeout_s: float = 60) -> None:
        """Until `check()` is true: Prometheus scrapes every second here; no fixed sleeps."""
        deadline = time.monotonic() + timeout_s
        while not check():
            assert time.monotonic() < deadline, "Prometheus did not see it in time"
            time.sleep(0.25)


@pytest.fixture
def monitored(
    feedback: FeedbackCase, api_bin: Path, tmp_path: Path
) -> Iterator[tuple[httpx.Client, PromQL]]:
    """The API (drift window of 200 rows, Prefect counts every second) and a Prometheus
    scraping it every second with the repository's prometheus.yml and rules."""
    case = feedback
    env = {
        "IRIS_API_PREFECT_API_URL": case.prefect.url,
        "IRIS_API_FEEDBACK_DEPLOYMENT": case.deployment,
        "IRIS_FEEDBACK_STORE_URL": case.store_url,
        "IRIS_API_PREFECT_POLL_S": "1",
        "IRIS_API_DRIFT_WINDOW": str(WINDOW),
        "IRIS_API_DRIFT_MIN_ROWS": "50",
    }
    with api_process(tmp_path / "api", case.tracking_uri, case.onnx_model, api_bin, env) as url:
        config = prometheus_config(
            ROOT / "prometheus.yml", url.removeprefix("http://"), tmp_path / "prometheus.yml", "1s"
        )
        with (
            running(prometheus_server(config, tmp_path / "prometheus", free_port())) as prom,
            httpx.Client(base_url=url, timeout=30) as client,
        ):
            promql = PromQL(prom.health_url.removesuffix("/-/ready"))
            promql.wait(lambda: promql.values('up{job="api"}', "job") == {"api": 1.0})
            deadline = time.monotonic() + 30
            while client.get("/v2/health/ready").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            yield client, promql
            promql.http.close()


def rows(path: Path) -> np.ndarray:
    return np.loadtxt(path, delimiter=",", ndmin=2)[:, : len(FEATURES)]


def predict(client: httpx.Client, x: np.ndarray, sent: Counter[str]) -> None:
    for row in x.tolist():
        answer = client.post("/predict", json=dict(zip(FEATURES, row, strict=True)))
        assert answer.status_code == 200, answer.text
        sent[answer.json()["class_name"]] += 1


@pytest.mark.integration
@pytest.mark.parametrize(
    "store_url", ["sqlite"], indirect=True
)  # both: tests/finetune/test_feedback.py
def test_prometheus_sees_the_traffic_every_panel_answers_and_drift_moves_with_the_inputs(
    monitored: tuple[httpx.Client, PromQL], data_dir: Path
) -> None:
    client, promql = monitored
    train = rows(data_dir / "train.csv")
    # Flowers of the population the training rows came from: train and test rows alike.
    population = np.vstack([train, rows(data_dir / "test.csv")])
    sent: Counter[str] = Counter()

    # Known traffic: a window of rows drawn from that population, a batch, bad input, feedback.
    rng = np.random.default_rng(7)
    predict(client, population[rng.integers(0, len(population), WINDOW)], sent)
    batch = client.post(
        "/predict/batch",
        json={"instances": [dict(zip(FEATURES, r, strict=True)) for r in train[:3].tolist()]},
    )
    assert batch.status_code == 200
    for p in batch.json()["predictions"]:
        sent[p["class_name"]] += 1
    assert client.post("/predict", json={"sepal_length": -1}).status_code == 422
    for i in range(2):
        body = dict(zip(FEATURES, train[i].tolist(), strict=True))
        assert client.post("/suggest", json=body | {"class_name": "Iris-setosa"}).status_code == 202

    # The seed's counter per class equals the traffic sent, once scraped.
    promql.wait(lambda: promql.values("predicted_class_name_total", "class_name") == dict(sent))
    # Every expression of every dashboard panel answers with data (rates need two scrapes), and
    # every label a legend shows is on every series it draws.
    queries = dashboard_queries()
    promql.wait(lambda: all(promql.query(expr) for _, expr, _ in queries))
    for title, expr, legend in queries:
        for label in re.findall(r"{{(\w+)}}", legend):
            assert all(label in r["metric"] for r in promql.query(expr)), (title, legend)
    # The seed's panel draws the counts sent, one series per class.
    [seed] = [expr for title, expr, _ in queries if title == "Predicted Classes"]
    assert promql.values(seed, "class_name") == dict(sent)
    # Drift: traffic from the training distribution stays under the alert's bound.
    calm = promql.values("iris_input_drift_psi", "feature")
    assert set(calm) == set(FEATURES)
    assert max(calm.values()) < BOUND, calm

    # Petal length + 3 cm for a whole window: that feature over the bound, the others under.
    shifted = population[rng.integers(0, len(population), WINDOW)].copy()
    shifted[:, FEATURES.index("petal_length")] += 3
    predict(client, shifted, sent)
    promql.wait(lambda: promql.values("predicted_class_name_total", "class_name") == dict(sent))
    drifted = promql.values("iris_input_drift_psi", "feature")
    assert drifted["petal_length"] > BOUND, drifted
    assert all(v < BOUND for k, v in drifted.items() if k != "petal_length"), drifted
