"""Every release of skaffold.yaml rendered with exactly the values and settings skaffold gives
it (read from skaffold.yaml; upstream charts from ../shared/charts at the pinned versions) and
validated strictly; every key the project sets for an upstream chart exists in that chart;
image tags pinned, no Bitnami images; skaffold.yaml and the kind config against their schemas."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import tarfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from jsonschema.exceptions import best_match

from iris_testing import k8s

pytestmark = pytest.mark.integration

ROOT = k8s.ROOT
RELEASES = k8s.skaffold_releases()
UPSTREAM = [r for r in RELEASES if r.upstream]
#: Objects each release renders as skaffold installs it (with the monitoring CRDs present).
EXPECTED_COUNTS = {
    "traefik": 6, "kps": 106, "iris-postgres": 9, "mlflow": 9, "prefect-server": 3,
    "prefect-worker": 5, "iris": 18,
}  # fmt: skip


def test_releases_in_dependency_order() -> None:
    names = [r.name for r in RELEASES]
    assert names == [
        "traefik",
        "kps",
        "iris-postgres",
        "mlflow",
        "prefect-server",
        "prefect-worker",
        "iris",
    ]
    helm = k8s.skaffold_config()["deploy"]["helm"]
    assert helm["concurrency"] == 1
    assert all(r["wait"] for r in helm["releases"])


@pytest.mark.parametrize("release", RELEASES, ids=lambda r: r.name)
def test_release_renders_strictly_valid(
    release: k8s.Release, rendered: dict[str, list[k8s.Obj]]
) -> None:
    objects = rendered[release.name]
    assert len(objects) == EXPECTED_COUNTS[release.name]
    failures, custom = k8s.kubernetes_validate(objects)
    assert not failures, "\n".join(map(str, failures))
    checkable = [
        o for o in custom if o["kind"] in {"ServiceMonitor", "PrometheusRule", "PodMonitor"}
    ]
    # Prometheus and Alertmanager (kube-prometheus-stack's own CRs) have no schema here
    assert {o["kind"] for o in custom} - {
        "ServiceMonitor",
        "PrometheusRule",
        "Prometheus",
        "Alertmanager",
    } == set()
    if checkable:
        code, out = k8s.validate_crs(checkable)
        assert code == 0, out


@pytest.mark.parametrize("release", UPSTREAM, ids=lambda r: r.name)
def test_upstream_chart_is_the_pinned_package(release: k8s.Release) -> None:
    assert release.chart.is_file(), (
        f"{release.chart} missing: ../shared/charts has the offline charts"
    )
    with tarfile.open(release.chart) as tar:
        chart = yaml.safe_load(tar.extractfile(f"{release.remote}/Chart.yaml").read())  # type: ignore[union-attr]
    assert (chart["name"], str(chart["version"])) == (release.remote, release.version)


def chart_schema(package: Path, name: str) -> dict[str, Any]:
    """The chart's own values.schema.json, or an empty schema."""
    with tarfile.open(package) as tar:
        try:
            schema: dict[str, Any] = json.load(tar.extractfile(f"{name}/values.schema.json"))  # type: ignore[arg-type]
        except KeyError:
            return {}
    return schema


def schema_declares(schema: dict[str, Any], path: list[str]) -> bool:
    """`path` is a property the chart's values schema names (a key values.yaml leaves as a
    comment, e.g. traefik's ports.<name>.hostPort); a named entry of a map counts when the
    map's entries have a schema of their own."""
    if not path:
        return True
    key, rest = path[0], path[1:]
    candidates = []
    if key in (schema.get("properties") or {}):
        candidates.append(schema["properties"][key])
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict) and extra.get("properties"):
        candidates.append(extra)
    return any(schema_declares(c, rest) for c in candidates)


def chart_values(package: Path, name: str) -> dict[str, dict[str, Any]]:
    """The values.yaml of a packaged chart and of each subchart, by (sub)chart name."""
    out = {}
    with tarfile.open(package) as tar:
        for member in tar.getmembers():
            m = re.fullmatch(rf"{name}/(?:charts/([^/]+)/)?values\.yaml", member.name)
            if m:
                out[m.group(1) or ""] = yaml.safe_load(tar.extractfile(member).read()) or {}  # type: ignore[union-attr]
    return out


def key_exists(values: dict[str, dict[str, Any]], path: list[str], sub: str = "") -> bool:
    """`path` names a key of the chart's values (or of a subchart's, under its name), or lies
    under a map the chart leaves empty for free-form entries (resources: {}, extraArgs: {})."""
    node: Any = values[sub]
    for i, key in enumerate(path):
        if isinstance(node, dict) and key in node:
            if node[key] == {} and i < len(path) - 1:
                return True
            node = node[key]
            continue
        if i == 0 and key in values and sub == "":
            return key_exists(values, path[1:], key)
        if isinstance(node, dict) and i > 0 and sub == "" and path[0] in values:
            return key_exists(values, path[1:], path[0])
        return False
    return True


#: Maps a chart writes out whole, any key allowed: Grafana's templates/_config.tpl turns every
#: section and key of grafana.ini into its ini file.
FREE_FORM = (["grafana", "grafana.ini"],)


def free_form(path: list[str]) -> bool:
    return any(path[: len(p)] == p and len(path) > len(p) for p in FREE_FORM)


@pytest.mark.parametrize("release", UPSTREAM, ids=lambda r: r.name)
def test_every_key_we_set_exists_in_the_chart(release: k8s.Release) -> None:
    values = chart_values(release.chart, release.remote or "")
    schema = chart_schema(release.chart, release.remote or "")
    ours: dict[str, Any] = {}
    for f in release.values_files:
        ours |= yaml.safe_load(f.read_text())
    keys = set(k8s.flat_keys(ours)) | set(release.set_values) | set(release.set_files)
    missing = sorted(
        k for k in keys
        if not key_exists(values, k8s.key_path(k)) and not free_form(k8s.key_path(k))
        and not schema_declares(schema, k8s.key_path(k))
    )  # fmt: skip
    assert not missing, f"{release.name}: not keys of the chart: {missing}"


def test_the_key_check_can_fail() -> None:
    kps = next(r for r in UPSTREAM if r.name == "kps")
    values = chart_values(kps.chart, "kube-prometheus-stack")
    assert key_exists(values, ["grafana", "sidecar", "dashboards", "label"])
    assert key_exists(values, ["grafana", "resources", "limits", "cpu"])  # under resources: {}
    assert not key_exists(values, ["grafana", "sidecar", "dashboard", "label"])
    assert not key_exists(values, ["prometheus", "prometheusSpecs"])
    assert key_exists(values, k8s.key_path("grafana.grafana\\.ini.server.domain"))
    assert not key_exists(values, k8s.key_path("grafana.grafana.ini.server.domain"))
    traefik = next(r for r in UPSTREAM if r.name == "traefik")
    schema = chart_schema(traefik.chart, "traefik")
    assert schema_declares(schema, ["ports", "web", "hostPort"])
    assert not schema_declares(schema, ["service", "type"])  # ignored by the chart: spec.type


def all_images(rendered: dict[str, list[k8s.Obj]]) -> set[str]:
    return {c["image"] for objects in rendered.values() for o in objects for c in k8s.containers(o)}


def test_traefik_listens_on_the_node_ports(rendered: dict[str, list[k8s.Obj]]) -> None:
    objects = rendered["traefik"]
    assert k8s.one(objects, "Service")["spec"]["type"] == "ClusterIP"
    pod = k8s.pod_spec(k8s.one(objects, "Deployment"))
    assert pod is not None
    assert pod["nodeSelector"] == {"ingress-ready": "true"}
    ports = {p["hostPort"] for p in pod["containers"][0]["ports"] if "hostPort" in p}
    assert ports == {80, 443}
    ingress_class = k8s.one(objects, "IngressClass")
    assert (
        ingress_class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"]
        == "true"
    )


def test_images_are_pinned_and_not_bitnami(
    rendered: dict[str, list[k8s.Obj]], flow_run_job: k8s.Obj
) -> None:
    images = all_images(rendered) | {c["image"] for c in k8s.containers(flow_run_job)}
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name, f"{image}: no tag"
        assert "/" not in tag, f"{image}: no tag"
        assert not re.search(r"(^|-)latest$", tag), image
        assert "bitnami" not in name, image
    # the Prometheus operator's own images (Prometheus, Alertmanager) are pinned in the CRs
    kps = rendered["kps"]
    for kind in ("Prometheus", "Alertmanager"):
        assert re.search(r":v[0-9.]+", k8s.one(kps, kind)["spec"]["image"]), kind


def test_skaffold_yaml_is_valid_v4beta14() -> None:
    schema = json.loads((k8s.SHARED_CHARTS / "skaffold-schema" / "v4beta14.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    config = k8s.skaffold_config()
    assert config["apiVersion"] == "skaffold/v4beta14"
    assert best_match(validator.iter_errors(config)) is None
    config["deploy"]["helm"]["releases"][0]["valueFile"] = ["x.yaml"]  # the schema can fail
    error = best_match(validator.iter_errors(config))
    assert error is not None
    assert "valueFile" in error.message


def test_skaffold_builds_and_forwards() -> None:
    config = k8s.skaffold_config()
    assert config["build"]["local"]["push"] is False  # kind: images are loaded, not pushed
    dockerfiles = {a["image"]: a["docker"]["dockerfile"] for a in config["build"]["artifacts"]}
    assert dockerfiles == {
        f"iris-mlops/{m}": f"{m}/Dockerfile" for m in ("api", "training", "finetune")
    }
    forwards = {(p["resourceName"], p["port"]) for p in config["portForward"]}
    assert forwards == {("iris-api", 8000), ("mlflow", 5000), ("prefect-server", 4200)}
    for release in config["deploy"]["helm"]["releases"]:
        assert ("remoteChart" in release) == ("version" in release)
        for f in release.get("valuesFiles", []) + list(release.get("setFiles", {}).values()):
            assert (ROOT / f).is_file(), f


def skaffold_upgrades(release: dict[str, Any]) -> bool:
    """Whether skaffold's helm deployer runs `helm upgrade` for a release that is installed
    already (skaffold v2 pkg/skaffold/deploy/helm/helm.go, deployRelease): it returns early
    when upgradeOnChange is false, and when it is unset for a remote chart ("Release %s not
    upgraded as it is remote..."); a chart folder of ours is upgraded."""
    flag = release.get("upgradeOnChange")
    if flag is False:
        return False
    return not (flag is None and release.get("remoteChart"))


def test_a_redeploy_upgrades_every_release() -> None:
    """skaffold dev (after any change) and a second skaffold run upgrade every release, so an
    edit of k8s/values/ or of the base job template reaches the cluster."""
    releases = k8s.skaffold_config()["deploy"]["helm"]["releases"]
    skipped = [r["name"] for r in releases if not skaffold_upgrades(r)]
    assert not skipped, f"installed once, then never upgraded by skaffold: {skipped}"
    assert not skaffold_upgrades({"remoteChart": "traefik"})  # the model can fail
    assert not skaffold_upgrades({"chartPath": "charts/iris", "upgradeOnChange": False})


def rolling_budget(value: int | str | None, default: str, replicas: int, up: bool) -> int:
    """maxSurge (rounded up) or maxUnavailable (rounded down) as a number of pods."""
    value = default if value is None else value
    if isinstance(value, str) and value.endswith("%"):
        exact = replicas * int(value[:-1]) / 100
        return math.ceil(exact) if up else math.floor(exact)
    return int(value)


def test_workloads_on_host_ports_roll_out_on_one_node(rendered: dict[str, list[k8s.Obj]]) -> None:
    """kind here is one node: a pod on a hostPort (or the host's network) cannot start beside
    the pod it replaces, so the old one must go first (maxSurge 0, maxUnavailable >= 1, or
    Recreate); a surge pod would stay Pending and the release time out (15 minutes)."""
    checked = []
    for release, objects in rendered.items():
        for obj in objects:
            if obj["kind"] not in {"Deployment", "DaemonSet"}:
                continue
            pod = k8s.pod_spec(obj) or {}
            host_ports = pod.get("hostNetwork") or any(
                "hostPort" in p for c in k8s.containers(obj) for p in c.get("ports") or []
            )
            if not host_ports:
                continue
            checked.append(f"{release}/{k8s.kind_name(obj)}")
            spec = obj["spec"]
            strategy = (
                spec.get("strategy" if obj["kind"] == "Deployment" else "updateStrategy") or {}
            )
            if strategy.get("type") in {"Recreate", "OnDelete"}:
                continue
            rolling = strategy.get("rollingUpdate") or {}
            replicas = spec.get("replicas", 1)
            # Kubernetes' defaults: a Deployment 25 % / 25 %, a DaemonSet maxSurge 0, maxUnavailable 1
            surge_default, unavailable_default = (
                ("25%", "25%") if obj["kind"] == "Deployment" else ("0", "1")
            )
            surge = rolling_budget(rolling.get("maxSurge"), surge_default, replicas, up=True)
            unavailable = rolling_budget(
                rolling.get("maxUnavailable"), unavailable_default, replicas, up=False
            )
            assert (surge, unavailable >= 1) == (0, True), (
                f"{release}: {k8s.kind_name(obj)} on host ports rolls out with maxSurge {surge}, "
                f"maxUnavailable {unavailable}: the new pod cannot schedule beside the old one"
            )
    assert "traefik/Deployment/traefik" in checked
    assert "kps/DaemonSet/kps-prometheus-node-exporter" in checked


def skaffold_docker_build(artifact: dict[str, Any], local: dict[str, Any]) -> list[str]:
    """The `docker build` skaffold runs for an artifact (skaffold v2
    pkg/skaffold/build/docker/docker.go dockerCLIBuild, pkg/skaffold/docker/image.go
    ToCLIBuildArgs): the CLI is used with BuildKit or any cliFlags; cliFlags are passed as
    they are; with BuildKit and no push, --load puts the image into the local Docker."""
    docker = artifact["docker"]
    args = ["build", artifact["context"], "--file", docker["dockerfile"], "-t", artifact["image"]]
    args += docker.get("cliFlags", [])
    if local.get("useBuildkit") and not local.get("push"):
        args.append("--load")
    return args


def test_images_for_kind_are_built_without_attestations() -> None:
    """`kind load docker-image` imports `docker save`'s archive with `ctr images import
    --all-platforms`; from a containerd image store that archive lacks the provenance
    attestation BuildKit adds by default, and the import fails (kind#3795, kind#4236)."""
    config = k8s.skaffold_config()["build"]
    for artifact in config["artifacts"]:
        args = skaffold_docker_build(artifact, config["local"])
        assert "--load" in args, args  # built into the local Docker, then loaded into kind
        assert {"--provenance=false", "--sbom=false"} <= set(args), (
            f"{artifact['image']}: docker {' '.join(args)} adds attestations"
        )


#: kind's Cluster (kind.x-k8s.io/v1alpha4) fields, decoded strictly by kind
KIND_CLUSTER = {"kind", "apiVersion", "name", "nodes", "networking", "featureGates", "runtimeConfig",
                "kubeadmConfigPatches", "kubeadmConfigPatchesJSON6902", "containerdConfigPatches",
                "containerdConfigPatchesJSON6902"}  # fmt: skip
KIND_NODE = {"role", "image", "labels", "extraMounts", "extraPortMappings", "kubeadmConfigPatches",
             "kubeadmConfigPatchesJSON6902"}  # fmt: skip
KIND_PORT = {"containerPort", "hostPort", "listenAddress", "protocol"}


def test_kind_config() -> None:
    config = yaml.safe_load((ROOT / "k8s" / "kind-config.yaml").read_text())
    assert set(config) <= KIND_CLUSTER
    assert (config["kind"], config["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    (node,) = config["nodes"]
    assert set(node) <= KIND_NODE
    assert node["labels"] == {"ingress-ready": "true"}
    ports = {
        (p["containerPort"], p["hostPort"], p["listenAddress"]) for p in node["extraPortMappings"]
    }
    assert ports == {(80, 80, "127.0.0.1"), (443, 443, "127.0.0.1")}
    assert all(set(p) <= KIND_PORT for p in node["extraPortMappings"])


def test_the_crd_schemas_are_what_the_pinned_charts_own_crds_make(tmp_path: Path) -> None:
    """Where no folder of packaged charts exists, `make k8s-tools` pulls the charts and makes
    the CRD schemas from their CRDs (scripts/k8s_offline.py): made from the pinned charts here,
    they are exactly the schemas the checks use."""
    spec = importlib.util.spec_from_file_location(
        "k8s_offline", ROOT / "scripts" / "k8s_offline.py"
    )
    assert spec is not None
    assert spec.loader is not None
    offline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(offline)
    charts = [k8s.SHARED_CHARTS / f"{c}-{v}.tgz" for _, c, v in offline.pinned()]
    made = offline.crd_schemas(charts, tmp_path)
    used = sorted(p.name for p in (k8s.SHARED_CHARTS / "crd-schemas").glob("*.json"))
    assert sorted(made) == used
    for name in used:
        ours = json.loads((tmp_path / name).read_text())
        assert ours == json.loads((k8s.SHARED_CHARTS / "crd-schemas" / name).read_text()), name
