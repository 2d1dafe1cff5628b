"""Our charts (charts/iris, charts/iris-postgres) rendered offline with Helm 4: lint, every
scenario under ci/ with and without the monitoring CRDs, every object strictly valid for the
oldest and newest Kubernetes, custom resources against their CRD schemas, the values schema
rejecting what it must, and what the objects promise (probes, hardening, one source for the
dashboard and the rules, Jobs that run again only when they should)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from iris_finetune.flow import FLOW_NAME
from iris_testing import k8s

ROOT = k8s.ROOT
IRIS = ROOT / "charts" / "iris"
POSTGRES = ROOT / "charts" / "iris-postgres"
PREFECT_YAML = yaml.safe_load((ROOT / "prefect.yaml").read_text())
SCENARIOS = sorted(IRIS.glob("ci/*-values.yaml")) + sorted(POSTGRES.glob("ci/*-values.yaml"))
#: helm, kubernetes-validate and validate-crs.py run for each test: together longer than the
#: unit tier's budget, so these run with `make test`.
pytestmark = pytest.mark.integration
CRDS = {"with-monitoring-crds": [k8s.MONITORING_API], "without-monitoring-crds": []}


def render_iris(
    *values: Path, api_versions: Any = (k8s.MONITORING_API,), **sets: Any
) -> list[k8s.Obj]:
    return k8s.helm_template(
        IRIS, "iris", "mlops", values, {k.replace("__", "."): v for k, v in sets.items()},
        api_versions=api_versions,
    )  # fmt: skip


def scenario_id(path: Path) -> str:
    return f"{path.parents[1].name}/{path.name}"


@pytest.mark.parametrize("values", SCENARIOS, ids=scenario_id)
def test_lint_strict(values: Path) -> None:
    chart = values.parents[1]
    out = k8s.run_tool([k8s.HELM, "lint", "--strict", chart, "--values", values])
    assert "1 chart(s) linted, 0 chart(s) failed" in out


@pytest.mark.parametrize("crds", CRDS, ids=list(CRDS))
@pytest.mark.parametrize("values", SCENARIOS, ids=scenario_id)
def test_scenario_renders_valid_objects(values: Path, crds: str) -> None:
    chart = values.parents[1]
    objects = k8s.helm_template(chart, chart.name, "mlops", [values], api_versions=CRDS[crds])
    assert objects
    failures, custom = k8s.kubernetes_validate(objects)
    assert not failures, "\n".join(map(str, failures))
    kinds = {o["kind"] for o in custom}
    assert kinds <= {"ServiceMonitor", "PrometheusRule"}
    if custom:
        code, out = k8s.validate_crs(custom)
        assert code == 0, out
        assert f"{len(custom)} custom resource(s) checked, 0 failed" in out
    monitoring_on = chart == IRIS and "everything" in values.name
    expected = {"ServiceMonitor", "PrometheusRule"} if monitoring_on and CRDS[crds] else set()
    assert kinds == expected


def test_invalid_objects_are_caught() -> None:
    """The validators can fail: a misspelt field, and a ServiceMonitor with a bad field."""
    objects = render_iris()
    deployment = k8s.one(objects, "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicys"] = "Always"
    failures, _ = k8s.kubernetes_validate([deployment])
    assert {f.version for f in failures} == set(k8s.KUBE_VERSIONS)
    monitor = k8s.one(objects, "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["intervall"] = "5s"
    code, out = k8s.validate_crs([monitor])
    assert code == 1, out


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"api": {"replica": 3}}, "additional properties 'replica' not allowed"),
        ({"images": {"api": {"repository": "x", "tag": "latest"}}}, "/images/api/tag"),
        (
            {"api": {"env": {"IRIS_API_ORT_THREADS": "4"}}},
            "invalid propertyName 'IRIS_API_ORT_THREADS'",
        ),
        ({"mlflow": {"url": "mlflow:5000"}}, "/mlflow/url"),
        ({"unknown": True}, "additional properties 'unknown' not allowed"),
        ({"api": {"replicas": 1}}, "api.podDisruptionBudget.enabled needs api.replicas >= 2"),
    ],
)
def test_bad_values_are_rejected(values: dict[str, Any], message: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad-values.yaml"
    bad.write_text(yaml.safe_dump(values))
    with pytest.raises(k8s.ToolError) as e:
        render_iris(bad)
    assert message in str(e.value)


def test_postgres_values_reject_unknown_keys(tmp_path: Path) -> None:
    bad = tmp_path / "bad-values.yaml"
    bad.write_text("databases:\n  mlfow: {secretName: x}\n")
    with pytest.raises(k8s.ToolError, match="additional properties 'mlfow' not allowed"):
        k8s.helm_template(POSTGRES, "iris-postgres", "mlops", [bad])


def api_container(objects: list[k8s.Obj]) -> k8s.Obj:
    container: k8s.Obj = k8s.pod_spec(k8s.one(objects, "Deployment"))["containers"][0]  # type: ignore[index]
    return container


def test_api_deployment_probes_resources_and_hardening() -> None:
    objects = render_iris()
    deployment = k8s.one(objects, "Deployment")
    pod = k8s.pod_spec(deployment)
    assert pod is not None
    c = api_container(objects)
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert set(c["resources"]) == {"requests", "limits"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["automountServiceAccountToken"] is False
    for obj in objects:  # every pod of the chart
        spec = k8s.pod_spec(obj)
        if spec is None:
            continue
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in k8s.containers(obj):
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, k8s.kind_name(obj)
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert set(container["resources"]) == {"requests", "limits"}
            assert container["imagePullPolicy"] == "IfNotPresent"


@pytest.mark.parametrize(
    ("cpu", "threads"), [("1", "1"), ("500m", "1"), ("2", "2"), ("1500m", "2"), (3, "3")]
)
def test_onnxruntime_threads_follow_the_cpu_limit(cpu: Any, threads: str) -> None:
    env = api_container(render_iris(api__resources__limits__cpu=cpu))["env"]
    assert {"name": "IRIS_API_ORT_THREADS", "value": threads} in env


def test_api_settings_and_secrets() -> None:
    objects = render_iris()
    env = {e["name"]: e for e in api_container(objects)["env"]}
    deployment = next(d for d in PREFECT_YAML["deployments"] if d["name"] == "kubernetes")
    assert env["IRIS_API_FEEDBACK_DEPLOYMENT"]["value"] == f"{FLOW_NAME}/{deployment['name']}"
    token = env["IRIS_API_FEEDBACK_TOKEN"]["valueFrom"]["secretKeyRef"]
    secret = k8s.one(objects, "Secret", token["name"])  # the chart makes the token's Secret
    assert token["key"] in (secret.get("data") or secret.get("stringData") or {})
    # every setting the API is given is one it reads (docs/configuration.md lists them all)
    documented = (ROOT / "docs" / "configuration.md").read_text()
    for name in env:
        assert f"`{name}`" in documented or name == "ORT_DISABLE_TELEMETRY", name


def test_prometheus_objects_only_with_their_crds_and_when_enabled() -> None:
    kinds = {o["kind"] for o in render_iris(api_versions=())}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}
    assert "ConfigMap" in kinds  # the dashboard does not need the CRDs
    off = render_iris(
        monitoring__serviceMonitor__enabled=False, monitoring__prometheusRule__enabled=False
    )
    assert not {o["kind"] for o in off} & {"ServiceMonitor", "PrometheusRule"}


def test_rules_and_dashboard_are_the_local_stacks_files() -> None:
    objects = render_iris()
    rule = k8s.one(objects, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((ROOT / "monitoring" / "rules.yml").read_text())
    dashboard = next(
        o
        for o in k8s.by_kind(objects, "ConfigMap")
        if "grafana_dashboard" in o["metadata"]["labels"]
    )
    text = dashboard["data"]["iris-dashboard.json"]
    assert json.loads(text) == json.loads(
        (ROOT / "k8s" / "grafana" / "iris-dashboard.json").read_text()
    )


def test_no_second_copy_of_the_shared_files() -> None:
    """The chart reads the dashboard, the rules, prefect.yaml and the flow's automations
    through links to the files the local stack uses; no tracked file anywhere repeats their
    content."""
    sources = {
        "files/iris-dashboard.json": ROOT / "k8s" / "grafana" / "iris-dashboard.json",
        "files/rules.yml": ROOT / "monitoring" / "rules.yml",
        "files/prefect.yaml": ROOT / "prefect.yaml",
        "files/prefect-automations.yaml": ROOT / "finetune" / "prefect-automations.yaml",
    }
    for link, source in sources.items():
        path = IRIS / link
        assert path.is_symlink(), link
        assert path.resolve() == source.resolve()
    digests = {hashlib.sha256(s.read_bytes()).hexdigest(): s for s in sources.values()}
    tracked = subprocess.run(
        ["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for line in tracked:
        mode, _, _, name = line.split(maxsplit=3)
        path = ROOT / name
        if mode == "120000" or not path.is_file():
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digests.get(digest, path) == path, f"{name} repeats {digests.get(digest)}"


def jobs(objects: list[k8s.Obj]) -> dict[str, tuple[str, str]]:
    """component -> (name, pod template as JSON) of the chart's Jobs."""
    return {
        j["metadata"]["labels"]["app.kubernetes.io/component"]: (
            j["metadata"]["name"], json.dumps(j["spec"]["template"], sort_keys=True),
        )
        for j in k8s.by_kind(objects, "Job")
    }  # fmt: skip


def chart_copy(tmp_path: Path, name: str) -> Path:
    """charts/iris copied (links to the shared files resolved), to change a file in it."""
    chart = tmp_path / name / "iris"
    shutil.copytree(IRIS, chart)
    return chart


def render_chart(chart: Path) -> list[k8s.Obj]:
    return k8s.helm_template(chart, "iris", "mlops", api_versions=[k8s.MONITORING_API])


def test_a_job_keeps_its_name_exactly_while_its_pod_template_stays(tmp_path: Path) -> None:
    """A Job's spec.template is immutable: `helm upgrade` with another template under the same
    Job name fails ("field is immutable"). So across deploys with one thing changed at a
    time, a Job has the same name exactly when it has the same pod template; and a change of
    prefect.yaml (a ConfigMap the registration mounts) runs the registration again."""
    bumped = chart_copy(tmp_path, "bumped")  # a new chart version: the helm.sh/chart label
    chart_yaml = bumped / "Chart.yaml"
    chart_yaml.write_text(chart_yaml.read_text().replace("version: 0.1.0", "version: 0.1.1", 1))
    edited = chart_copy(tmp_path, "edited")  # another prefect.yaml in the same image
    prefect_yaml = edited / "files" / "prefect.yaml"
    prefect_yaml.write_text(prefect_yaml.read_text() + "# edited\n")
    renders = {
        "unchanged": render_iris(),
        "again": render_iris(),
        "api replicas": render_iris(api__replicas=3),
        "training memory": render_iris(training__resources__limits__memory="2Gi"),
        "training backoff": render_iris(training__backoffLimit=5),
        "finetune image": render_iris(images__finetune__tag="0.2.0"),
        "registration cpu": render_iris(registration__resources__limits__cpu="2"),
        "mlflow url": render_iris(mlflow__url="http://mlflow.mlops:5000"),
        "prefect url": render_iris(prefect__apiUrl="http://prefect-server.mlops:4200/api"),
        "chart version": render_chart(bumped),
        "training run": render_iris(training__run=2),
        "prefect.yaml": render_chart(edited),
    }
    seen: dict[str, tuple[str, str]] = {}  # Job name -> (first render, pod template)
    named: dict[str, str] = {}  # pod template -> Job name
    for render, objects in renders.items():
        assert set(jobs(objects)) == {"training", "registration"}, render
        for component, (name, template) in jobs(objects).items():
            assert len(name) <= 63, name
            first, known = seen.setdefault(name, (render, template))
            assert known == template, (
                f"{render}: the {component} Job keeps the name {name} of {first!r} with another "
                "pod template: helm upgrade fails (field is immutable)"
            )
            assert named.setdefault(template, name) == name, (
                f"{render}: the {component} Job's pod template is unchanged, its name is not"
            )
    names = {render: {c: n for c, (n, _) in jobs(o).items()} for render, o in renders.items()}
    base = names["unchanged"]
    assert names["again"] == base == names["api replicas"] == names["training backoff"]
    for render, changed in (("training run", {"training"}), ("finetune image", {"registration"}),
                            ("prefect.yaml", {"registration"}),
                            ("chart version", {"training", "registration"})):  # fmt: skip
        assert {c for c in base if names[render][c] != base[c]} == changed, render


def test_notes_port_forward_rendered_services_on_skaffolds_ports(
    rendered: dict[str, list[k8s.Obj]],
) -> None:
    """Each `kubectl port-forward svc/NAME LOCAL:PORT` the notes give names a Service the
    releases render, with that port, and they are exactly skaffold's forwards."""
    out = k8s.run_tool([k8s.HELM, "install", "iris", IRIS, "--dry-run=client", "-n", "mlops"])
    notes = out.split("NOTES:", 1)[1]
    given = {
        (name, int(local), int(port))
        for name, local, port in re.findall(r"port-forward svc/([\w-]+) (\d+):(\d+)", notes)
    }
    forwards = {
        (f["resourceName"], f["localPort"], f["port"]) for f in k8s.skaffold_config()["portForward"]
    }
    assert given == forwards
    services = {
        o["metadata"]["name"]: {p["port"] for p in o["spec"]["ports"]}
        for objects in rendered.values()
        for o in objects
        if o["kind"] == "Service"
    }
    for name, _, port in given:
        assert port in services.get(name, set()), f"no Service {name} with port {port}"


def test_postgres_secrets_agree() -> None:
    """Every client Secret carries the password of its role in the main Secret."""
    objects = k8s.helm_template(POSTGRES, "iris-postgres", "mlops")
    secrets = {s["metadata"]["name"]: s["stringData"] for s in k8s.by_kind(objects, "Secret")}
    main = secrets["iris-postgres"]
    assert len({main[f"{r}-password"] for r in ("postgres", "mlflow", "prefect", "feedback")}) == 4
    assert secrets["iris-postgres-mlflow"] == {
        "username": "mlflow",
        "password": main["mlflow-password"],
    }
    assert secrets["iris-postgres-prefect"]["connection-string"] == (
        f"postgresql+asyncpg://prefect:{main['prefect-password']}@iris-postgres:5432/prefect"
    )
    assert secrets["iris-feedback-store"]["url"] == (
        f"postgresql://feedback:{main['feedback-password']}@iris-postgres:5432/feedback"
    )
