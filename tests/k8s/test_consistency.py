"""The files agree with one another, as rendered: image names (Makefile, skaffold, chart, base
job template), the monitoring labels against kube-prometheus-stack's selectors and Grafana's
sidecar, the work pool across the worker, the template and the registration; every service URL
a pod is given resolves to a rendered Service and port, and the NetworkPolicies allow each of
those connections and nothing else. The Job of a flow run, rendered by prefect-kubernetes'
own code, is strictly valid and hardened."""

from __future__ import annotations

import asyncio
import base64
import configparser
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
import yaml

from iris_stack.settings import StackSettings
from iris_testing import k8s

pytestmark = pytest.mark.integration

ROOT = k8s.ROOT
Rendered = dict[str, list[k8s.Obj]]
BASE_JOB_TEMPLATE = json.loads((ROOT / "k8s" / "prefect" / "base-job-template.json").read_text())
PREFECT_YAML = yaml.safe_load((ROOT / "prefect.yaml").read_text())
WORKER_VALUES = yaml.safe_load((ROOT / "k8s" / "values" / "prefect-worker.yaml").read_text())
IRIS_VALUES = yaml.safe_load((ROOT / "charts" / "iris" / "values.yaml").read_text())


def secret_data(secret: k8s.Obj) -> dict[str, str]:
    """A rendered Secret's values, `data` decoded."""
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    return data | (secret.get("stringData") or {})


def test_image_names_agree(images: dict[str, str], rendered: Rendered) -> None:
    artifacts = {a["image"] for a in k8s.skaffold_config()["build"]["artifacts"]}
    assert artifacts == {i.rsplit(":", 1)[0] for i in images.values()}
    for member, image in images.items():
        assert IRIS_VALUES["images"][member]["repository"] == image.rsplit(":", 1)[0]
    chart = yaml.safe_load((ROOT / "charts" / "iris" / "Chart.yaml").read_text())
    assert {i.rsplit(":", 1)[1] for i in images.values()} == {chart["appVersion"]}
    used = {c["image"] for o in rendered["iris"] for c in k8s.containers(o)}
    assert used == {images["api"], images["training"], images["finetune"]}


def test_monitoring_labels_match_the_selectors(rendered: Rendered) -> None:
    prometheus = k8s.one(rendered["kps"], "Prometheus")["spec"]
    monitor = k8s.one(rendered["iris"], "ServiceMonitor")
    rule = k8s.one(rendered["iris"], "PrometheusRule")
    assert prometheus["serviceMonitorNamespaceSelector"] == {}
    assert prometheus["ruleNamespaceSelector"] == {}
    assert k8s.selected(
        prometheus["serviceMonitorSelector"]["matchLabels"], monitor["metadata"]["labels"]
    )
    assert k8s.selected(prometheus["ruleSelector"]["matchLabels"], rule["metadata"]["labels"])
    # the job label is "api", as the rules expect (up{job="api"})
    service = k8s.one(rendered["iris"], "Service")
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "api"
    assert k8s.selected(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


def test_dashboard_label_matches_the_grafana_sidecar(rendered: Rendered) -> None:
    grafana = next(
        o
        for o in k8s.by_kind(rendered["kps"], "Deployment")
        if o["metadata"]["name"] == "kps-grafana"
    )
    sidecar = next(c for c in k8s.containers(grafana) if c["name"] == "grafana-sc-dashboard")
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    dashboard = next(
        o
        for o in k8s.by_kind(rendered["iris"], "ConfigMap")
        if "dashboard" in o["metadata"]["name"]
    )
    assert dashboard["metadata"]["labels"][env["LABEL"]] == env["LABEL_VALUE"]
    assert env["NAMESPACE"] == "ALL"


def test_grafana_ingress_and_admin_secret(rendered: Rendered) -> None:
    ingress = k8s.one(rendered["kps"], "Ingress")
    assert ingress["spec"]["rules"][0]["host"] == "grafana.localtest.me"
    assert "ingressClassName" not in ingress["spec"]  # Traefik is the default class
    grafana = next(
        o
        for o in k8s.by_kind(rendered["kps"], "Deployment")
        if o["metadata"]["name"] == "kps-grafana"
    )
    env = {
        e["name"]: e
        for e in next(c for c in k8s.containers(grafana) if c["name"] == "grafana")["env"]
    }
    assert env["GF_SECURITY_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "kps-grafana"
    values = yaml.safe_load((ROOT / "k8s" / "values" / "kube-prometheus-stack.yaml").read_text())
    assert "adminPassword" not in values["grafana"]


def test_cluster_forwards_have_ports_of_their_own_and_the_servers_accept_them(
    rendered: Rendered,
) -> None:
    """skaffold's port-forwards listen on ports `make up` does not use (a busy port makes
    skaffold pick a random one); the Prefect UI calls its API through the same forward;
    MLflow (its own host check, from the locked MLflow) answers the browser on that port and
    on any other, the in-cluster names, and nothing else."""
    from mlflow.server.security_utils import is_allowed_host_header  # noqa: PLC0415 (slow import)

    forwards = {f["resourceName"]: f["localPort"] for f in k8s.skaffold_config()["portForward"]}
    stack = {name: field.default for name, field in StackSettings.model_fields.items()}
    local_stack = {v for k, v in stack.items() if k.endswith("_port")}
    assert {stack["api_port"], stack["mlflow_port"], stack["prefect_port"]} <= local_stack
    assert not set(forwards.values()) & local_stack, (forwards, local_stack)
    server = k8s.one(rendered["prefect-server"], "Deployment")
    (container,) = [c for c in k8s.containers(server) if c["name"] == "prefect-server"]
    ui_api = urlsplit(k8s.plain_env(container)["PREFECT_UI_API_URL"])
    assert (ui_api.hostname, ui_api.port) == ("localhost", forwards["prefect-server"])
    config = next(
        c for c in k8s.by_kind(rendered["mlflow"], "ConfigMap")
        if "MLFLOW_SERVER_ALLOWED_HOSTS" in (c.get("data") or {})
    )  # fmt: skip
    allowed = config["data"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    port = forwards["mlflow"]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost:53127", "mlflow:5000",
                 "mlflow.mlops.svc.cluster.local:5000"):  # fmt: skip
        assert is_allowed_host_header(allowed, host), f"MLflow answers 403 to Host {host}"
    assert not is_allowed_host_header(allowed, "mlflow.attacker.example:5000")


def test_grafana_links_to_itself_through_the_ingress(rendered: Rendered) -> None:
    """Grafana's absolute links and redirects use root_url; with Grafana's defaults (protocol
    http, http_port 3000: conf/defaults.ini) interpolated, it names the ingress's address."""
    ingress = k8s.one(rendered["kps"], "Ingress")["spec"]
    host = ingress["rules"][0]["host"]
    config = next(
        c
        for c in k8s.by_kind(rendered["kps"], "ConfigMap")
        if c["metadata"]["name"] == "kps-grafana"
    )
    ini = configparser.ConfigParser(interpolation=configparser.BasicInterpolation())
    ini.read_dict({"server": {"protocol": "http", "http_port": "3000", "domain": "localhost",
                              "root_url": "%(protocol)s://%(domain)s:%(http_port)s/"}})  # fmt: skip
    ini.read_string(config["data"]["grafana.ini"])
    root = urlsplit(ini.get("server", "root_url"))
    scheme = "https" if ingress.get("tls") else "http"
    assert (root.scheme, root.hostname, root.port) == (scheme, host, None), root.geturl()


def test_alertmanager_routes_every_severity_of_the_rules(rendered: Rendered) -> None:
    secret = next(
        o
        for o in k8s.by_kind(rendered["kps"], "Secret")
        if o["metadata"]["name"].startswith("alertmanager-kps")
    )
    config = yaml.safe_load(secret_data(secret)["alertmanager.yaml"])
    receivers = {r["name"] for r in config["receivers"]}
    routes = {r["receiver"]: r["matchers"] for r in config["route"]["routes"]}
    rules = yaml.safe_load((ROOT / "monitoring" / "rules.yml").read_text())
    severities = {
        r["labels"]["severity"] for g in rules["groups"] for r in g["rules"] if "alert" in r
    }
    assert severities == {"page", "ticket"}
    for severity in severities:
        assert routes[severity] == [f'severity = "{severity}"']
        assert severity in receivers


def test_work_pool_agrees(rendered: Rendered) -> None:
    pool = WORKER_VALUES["worker"]["config"]["workPool"]
    assert WORKER_VALUES["worker"]["config"]["type"] == "kubernetes"
    deployment = next(d for d in PREFECT_YAML["deployments"] if d["name"] == "kubernetes")
    assert deployment["work_pool"]["name"] == pool
    assert IRIS_VALUES["prefect"]["workPool"] == pool
    assert IRIS_VALUES["prefect"]["deployment"] == deployment["name"]
    job = next(
        o for o in k8s.by_kind(rendered["iris"], "Job") if "registration" in o["metadata"]["name"]
    )
    env = {
        e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["POOL"] == pool
    worker = k8s.one(rendered["prefect-worker"], "Deployment")
    args = k8s.pod_spec(worker)["containers"][0]["args"]  # type: ignore[index]
    assert args[args.index("--pool") + 1] == pool
    assert args[args.index("--type") + 1] == "kubernetes"
    template = json.loads(
        k8s.one(rendered["prefect-worker"], "ConfigMap")["data"]["baseJobTemplate.json"]
    )
    assert template == BASE_JOB_TEMPLATE
    # the flow-run pods the NetworkPolicies name are the template's
    labels = BASE_JOB_TEMPLATE["job_configuration"]["job_manifest"]["spec"]["template"]["metadata"][
        "labels"
    ]
    assert labels == IRIS_VALUES["prefect"]["flowRunPods"]


def test_a_flow_run_without_an_image_is_refused_when_it_is_created(images: dict[str, str]) -> None:
    """skaffold tags the images by their inputs' digest, so no fixed tag (a template default)
    is ever in kind: a flow run without the `image` job variable would get a pod that cannot
    pull. The Prefect server's own check of a new flow run's job variables (the pool's
    template, the deployment's, the run's) refuses it; prefect.yaml's kubernetes deployment,
    with the image the registration Job gives it, passes."""
    from prefect.server.api.validation import (  # noqa: PLC0415 (the server's modules: slow)
        _validate_work_pool_job_variables,
    )
    from prefect.utilities.schema_tools.validation import ValidationError  # noqa: PLC0415

    deployment = next(d for d in PREFECT_YAML["deployments"] if d["name"] == "kubernetes")
    variables = dict(deployment["work_pool"]["job_variables"])
    assert variables["image"] == "{{ $IRIS_FINETUNE_IMAGE }}"  # the registration Job's env
    variables["image"] = images["finetune"]

    def check(deployment_variables: dict[str, Any], run_variables: dict[str, Any]) -> None:
        # the database session serves block references only: the template has none
        no_session = cast("Any", None)
        asyncio.run(
            _validate_work_pool_job_variables(
                no_session, "iris-kubernetes", BASE_JOB_TEMPLATE, deployment_variables,
                run_variables, ignore_required=False, ignore_invalid_defaults=True,
            )
        )  # fmt: skip

    check(variables, {})
    without = {k: v for k, v in variables.items() if k != "image"}
    for deployment_variables, run_variables in ((without, {}), (without, {"image": None})):
        with pytest.raises(ValidationError, match="image"):
            check(deployment_variables, run_variables)


def test_flow_run_job_is_valid_and_hardened(flow_run_job: k8s.Obj, images: dict[str, str]) -> None:
    job = json.loads(json.dumps(flow_run_job))
    pod = job["spec"]["template"]["spec"]
    # Prefect requires these two in the pod spec; Kubernetes has them in the Job's spec
    assert (pod.pop("parallelism"), pod.pop("completions")) == (1, 1)
    job["metadata"]["name"] = "flow-run"  # the worker gives only generateName
    failures, custom = k8s.kubernetes_validate([job])
    assert not failures, "\n".join(map(str, failures))
    assert not custom
    (container,) = pod["containers"]
    assert container["image"] == images["finetune"]
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["args"] == ["prefect", "flow-run", "execute"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert set(container["resources"]) == {"requests", "limits"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    env = {e["name"]: e for e in container["env"]}
    assert env["IRIS_FEEDBACK_STORE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "iris-feedback-store",
        "key": "url",
    }
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow:5000"


def test_a_flow_run_whose_pod_never_starts_ends_and_is_replaced(
    rendered: Rendered, flow_run_job: k8s.Obj
) -> None:
    """The time limits a flow run that cannot start (image missing, no room, an evicted pod)
    meets: the API replaces it after its start timeout; Kubernetes fails its Job after the
    active deadline (backoffLimit 0: the first failed pod fails the Job); the worker's observer,
    watching that namespace with the rights to, reports the run Crashed. prefect-kubernetes
    0.8.0 reads no pod_watch_timeout_seconds: the worker returns once the Job is created."""
    spec = flow_run_job["spec"]
    variables = BASE_JOB_TEMPLATE["variables"]["properties"]
    assert spec["activeDeadlineSeconds"] == variables["active_deadline_seconds"]["default"]
    assert spec["backoffLimit"] == 0
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    api = next(
        o for o in k8s.by_kind(rendered["iris"], "Deployment") if "api" in o["metadata"]["name"]
    )
    (container,) = [c for c in k8s.containers(api) if c["name"] == "api"]
    start_timeout = float(k8s.plain_env(container)["IRIS_API_FEEDBACK_START_TIMEOUT_S"])
    worker = k8s.one(rendered["prefect-worker"], "Deployment")
    (worker_container,) = [c for c in k8s.containers(worker) if c["name"] == "prefect-worker"]
    worker_env = k8s.plain_env(worker_container)
    polling = float(worker_env.get("PREFECT_WORKER_QUERY_SECONDS", "10"))
    assert 3 * polling < start_timeout < spec["activeDeadlineSeconds"]
    assert worker_env.get("PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_ENABLED", "true") == "true"
    namespace = flow_run_job["metadata"]["namespace"]
    assert namespace in worker_env["PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES"].split(",")
    rules = k8s.one(rendered["prefect-worker"], "Role")["rules"]
    for group, resource in (("batch", "jobs"), ("", "pods")):
        assert any(
            group in r["apiGroups"]
            and resource in r["resources"]
            and {"list", "watch"} <= set(r["verbs"])
            for r in rules
        ), f"the worker may not watch {resource}"


# --- connections --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: dict[str, str]
    ports: dict[str, int]  # named container ports
    obj: k8s.Obj | None = None


@dataclass(frozen=True)
class Connection:
    source: Pod
    target: Pod
    port: int
    why: str


def pods(rendered: Rendered, flow_run_job: k8s.Obj) -> list[Pod]:
    namespaces = {r.name: r.namespace for r in k8s.skaffold_releases()}
    out = []
    for release, objects in rendered.items():
        for obj in objects:
            if k8s.pod_spec(obj) is None:
                continue
            ports = {
                p["name"]: p["containerPort"]
                for c in k8s.containers(obj)
                for p in c.get("ports", [])
                if "name" in p
            }
            out.append(
                Pod(k8s.kind_name(obj), namespaces[release], k8s.pod_labels(obj), ports, obj)
            )
    out.append(Pod("flow-run", "mlops", k8s.pod_labels(flow_run_job), {}, flow_run_job))
    # Pods the Prometheus operator and kubeadm make
    out.append(
        Pod(
            "prometheus",
            "monitoring",
            {
                "app.kubernetes.io/name": "prometheus",
                "app.kubernetes.io/instance": "kps-prometheus",
            },
            {"http-web": 9090},
        )
    )
    out.append(Pod("kube-dns", "kube-system", {"k8s-app": "kube-dns"}, {}))
    return out


def env_of(
    pod: Pod,
    secrets: dict[tuple[str, str], dict[str, str]],
    configmaps: dict[tuple[str, str], dict[str, str]],
) -> Iterator[tuple[str, str]]:
    """(name, value) of every container's environment, Secret and ConfigMap values resolved."""
    assert pod.obj is not None
    for c in k8s.containers(pod.obj):
        for source in c.get("envFrom") or []:
            if "configMapRef" in source:
                yield from configmaps.get(
                    (pod.namespace, source["configMapRef"]["name"]), {}
                ).items()
        for e in c.get("env") or []:
            if "value" in e:
                yield e["name"], str(e["value"])
            elif "secretKeyRef" in e.get("valueFrom", {}):
                ref = e["valueFrom"]["secretKeyRef"]
                value = secrets.get((pod.namespace, ref["name"]), {}).get(ref["key"])
                if value is not None:
                    yield e["name"], value


URL = re.compile(r"^(https?|postgresql(\+\w+)?)://")


def connections(rendered: Rendered, flow_run_job: k8s.Obj) -> tuple[list[Connection], list[Pod]]:
    """Every connection the settings imply: each URL in a pod's environment (and libpq's
    PGHOST/PGPORT) to the pods behind the Service it names, and Prometheus to each target of
    a ServiceMonitor."""
    everything = [o for objects in rendered.values() for o in objects]
    namespaces = {r.name: r.namespace for r in k8s.skaffold_releases()}
    ns_of = {id(o): namespaces[rel] for rel, objects in rendered.items() for o in objects}
    secrets = {
        (ns_of[id(s)], s["metadata"]["name"]): secret_data(s)
        for s in k8s.by_kind(everything, "Secret")
    }
    configmaps = {
        (ns_of[id(c)], c["metadata"]["name"]): c.get("data") or {}
        for c in k8s.by_kind(everything, "ConfigMap")
    }
    services = {
        (ns_of[id(s)], s["metadata"]["name"]): s for s in k8s.by_kind(everything, "Service")
    }
    all_pods = pods(rendered, flow_run_job)
    found = []

    def to_service(source: Pod, host: str, port: int, why: str) -> None:
        name, _, rest = host.partition(".")
        namespace = rest.split(".")[0] if rest else source.namespace
        service = services.get((namespace, name))
        assert service is not None, f"{source.name}: {why}: no Service {namespace}/{name}"
        (sp,) = [p for p in service["spec"]["ports"] if p["port"] == port] or [None]
        assert sp is not None, f"{source.name}: {why}: Service {name} has no port {port}"
        targets = [p for p in all_pods if p.namespace == namespace and p.obj is not None
                   and k8s.selected(service["spec"]["selector"], p.labels)]  # fmt: skip
        assert targets, f"{source.name}: {why}: Service {name} selects no pod"
        for target in targets:
            tp = sp.get("targetPort", port)
            found.append(
                Connection(source, target, target.ports[tp] if isinstance(tp, str) else tp, why)
            )

    for pod in all_pods:
        if pod.obj is None:
            continue
        env = dict(env_of(pod, secrets, configmaps))
        for name, value in env.items():
            if not URL.match(value):
                continue
            url = urlsplit(value)
            host = url.hostname or ""
            if host in {"localhost", "127.0.0.1", "0.0.0.0"}:  # noqa: S104 (a browser's or its own address)
                continue
            port = url.port or {"http": 80, "https": 443}.get(url.scheme, 5432)
            to_service(pod, host, port, f"{name}={url.scheme}://{host}:{port}")
        if "PGHOST" in env:
            to_service(pod, env["PGHOST"], int(env.get("PGPORT", "5432")), "PGHOST/PGPORT")
    prometheus = next(p for p in all_pods if p.name == "prometheus")
    for monitor in k8s.by_kind(everything, "ServiceMonitor"):
        if monitor["metadata"]["name"] != "iris-api":
            continue
        for (namespace, _), service in services.items():
            if namespace in monitor["spec"]["namespaceSelector"]["matchNames"] and k8s.selected(
                monitor["spec"]["selector"]["matchLabels"], service["metadata"].get("labels", {})
            ):
                port = next(
                    p["port"]
                    for p in service["spec"]["ports"]
                    if p["name"] == monitor["spec"]["endpoints"][0]["port"]
                )
                to_service(
                    prometheus, f"{service['metadata']['name']}.{namespace}", port, "ServiceMonitor"
                )
    return found, all_pods


def peer_matches(peer: k8s.Obj, policy_ns: str, pod: Pod) -> bool:
    if "ipBlock" in peer:
        return False
    ns_sel = peer.get("namespaceSelector")
    if ns_sel is None:
        if pod.namespace != policy_ns:
            return False
    elif not k8s.selected(
        ns_sel.get("matchLabels", {}), {"kubernetes.io/metadata.name": pod.namespace}
    ):
        return False
    return k8s.selected((peer.get("podSelector") or {}).get("matchLabels", {}), pod.labels)


def rule_allows(rule: k8s.Obj, policy_ns: str, pod: Pod, port: int, direction: str) -> bool:
    peers = rule.get("to" if direction == "Egress" else "from") or []
    ports = [p["port"] for p in rule.get("ports") or []]
    return (not ports or port in ports) and any(peer_matches(p, policy_ns, pod) for p in peers)


def test_every_service_url_resolves_and_the_policies_allow_exactly_those(
    rendered: Rendered, flow_run_job: k8s.Obj
) -> None:
    found, all_pods = connections(rendered, flow_run_job)
    whys = {c.why.split("=")[0] for c in found}
    assert {"IRIS_API_TRACKING_URI", "IRIS_API_PREFECT_API_URL", "IRIS_FEEDBACK_STORE_URL", "MLFLOW_TRACKING_URI",
            "PREFECT_API_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL", "PGHOST/PGPORT", "ServiceMonitor", "API"} <= whys  # fmt: skip
    namespaces = {r.name: r.namespace for r in k8s.skaffold_releases()}
    policies = [
        (namespaces[rel], p)
        for rel, objects in rendered.items()
        for p in k8s.by_kind(objects, "NetworkPolicy")
    ]
    assert len(policies) == 8
    used: set[tuple[int, str, int]] = (
        set()
    )  # (policy, direction, rule index) that a connection needs
    for c in found:
        for direction, subject, other in (
            ("Egress", c.source, c.target),
            ("Ingress", c.target, c.source),
        ):
            applying = [(i, ns, p) for i, (ns, p) in enumerate(policies)
                        if ns == subject.namespace and direction in p["spec"]["policyTypes"]
                        and k8s.selected(p["spec"]["podSelector"].get("matchLabels", {}), subject.labels)]  # fmt: skip
            if not applying:
                continue
            allowing = [(i, r) for i, ns, p in applying
                        for r, rule in enumerate(p["spec"].get(direction.lower()) or [])
                        if rule_allows(rule, ns, other, c.port, direction)]  # fmt: skip
            assert allowing, (
                f"{direction} of {subject.name} blocks {c.source.name} -> {c.target.name}:{c.port} ({c.why})"
            )
            used.update((i, direction, r) for i, r in allowing)
    # nothing else: every rule is needed by a connection, but DNS and the training's HTTPS fetch
    dns = next(p for p in all_pods if p.name == "kube-dns")
    for i, (ns, policy) in enumerate(policies):
        for direction in ("Ingress", "Egress"):
            for r, rule in enumerate(policy["spec"].get(direction.lower()) or []):
                if (i, direction, r) in used:
                    continue
                if direction == "Egress" and rule_allows(rule, ns, dns, 53, "Egress"):
                    continue
                peers = rule.get("to") or []
                if [p.get("ipBlock", {}).get("cidr") for p in peers] == ["0.0.0.0/0"]:
                    assert policy["metadata"]["name"] == "iris-training", policy["metadata"]["name"]
                    params = yaml.safe_load((ROOT / "params.yaml").read_text())
                    assert urlsplit(params["data"]["url"]).scheme == "https"
                    assert rule["ports"] == [{"protocol": "TCP", "port": 443}]
                    continue
                pytest.fail(
                    f"{policy['metadata']['name']} {direction} rule {r} allows what no setting needs: {rule}"
                )


def test_the_policy_check_can_fail(rendered: Rendered, flow_run_job: k8s.Obj) -> None:
    broken = {k: [json.loads(json.dumps(o)) for o in v] for k, v in rendered.items()}
    policy = next(
        p
        for p in broken["iris"]
        if p["kind"] == "NetworkPolicy" and p["metadata"]["name"] == "iris-api"
    )
    policy["spec"]["egress"] = [
        r for r in policy["spec"]["egress"] if r["ports"][0]["port"] != 5000
    ]
    with pytest.raises(AssertionError, match="Egress of Deployment/iris-api blocks"):
        test_every_service_url_resolves_and_the_policies_allow_exactly_those(broken, flow_run_job)
    extra = {k: [json.loads(json.dumps(o)) for o in v] for k, v in rendered.items()}
    policy = next(
        p
        for p in extra["iris"]
        if p["kind"] == "NetworkPolicy" and p["metadata"]["name"] == "iris-registration"
    )
    policy["spec"]["egress"].append(
        {
            "to": [{"podSelector": {"matchLabels": IRIS_VALUES["mlflow"]["pods"]}}],
            "ports": [{"protocol": "TCP", "port": 5000}],
        }
    )
    with pytest.raises(
        pytest.fail.Exception, match="iris-registration Egress rule 2 allows what no setting needs"
    ):
        test_every_service_url_resolves_and_the_policies_allow_exactly_those(extra, flow_run_job)


def test_postgres_clients_are_the_pods_that_use_it(
    rendered: Rendered, flow_run_job: k8s.Obj
) -> None:
    found, _ = connections(rendered, flow_run_job)
    users = {c.source.name for c in found if c.port == 5432}
    assert users == {
        "Deployment/mlflow",
        "Deployment/prefect-server",
        "Deployment/iris-api",
        "flow-run",
    }
