"""The translation of rendered containers into `docker run` (iris_testing.pods), offline: every
pod of charts/iris (as skaffold installs it) and the Job of a fine-tune flow run translate, to
the flags that mean what the manifests say; a field or value it cannot translate fails it; the
address map rewrites in-cluster URLs and refuses any other host. `make test-images` runs the
translated containers (tests/images/test_images.py)."""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from iris_testing import k8s
from iris_testing.containers import Container, Mount
from iris_testing.pods import (
    Cluster,
    Probe,
    Untranslatable,
    own_writes,
    quantity,
    service_addresses,
    service_links,
    translate,
)

Rendered = dict[str, list[k8s.Obj]]
#: The feedback store's Secret, made by the iris-postgres release (another chart) in a cluster.
STORE_URL = "postgresql://feedback:s3cret@127.0.0.1:5433/feedback"
#: /tmp in a container (an emptyDir there)
TMP = "/tmp"  # noqa: S108
#: This machine's ports standing for the Services of the mlops namespace.
HERE = {"mlflow": 15000, "prefect-server": 14200, "iris-postgres": 15432, "iris-api": 18000}


def mlops_services(rendered: Rendered) -> list[k8s.Obj]:
    return k8s.namespace_services(rendered, "mlops")


def cluster_for(rendered: Rendered) -> Cluster:
    addresses: dict[str, str] = {}
    for service in mlops_services(rendered):
        name = service["metadata"]["name"]
        if name in HERE:
            port = service["spec"]["ports"][0]["port"]
            addresses |= service_addresses(name, "mlops", port, f"127.0.0.1:{HERE[name]}")
    return Cluster(
        objects=rendered["iris"],
        secrets={"iris-feedback-store": {"url": STORE_URL}},
        addresses=addresses,
        services=mlops_services(rendered),
    )


def workloads(rendered: Rendered, flow_run_job: k8s.Obj) -> list[k8s.Obj]:
    return [o for o in rendered["iris"] if k8s.pod_spec(o) is not None] + [flow_run_job]


@pytest.mark.integration
def test_every_pod_of_the_chart_and_a_flow_run_translate_hardened(
    rendered: Rendered, flow_run_job: k8s.Obj, tmp_path: Path
) -> None:
    translated: dict[str, Container] = {}
    for i, workload in enumerate(workloads(rendered, flow_run_job)):
        pod = translate(workload, cluster_for(rendered), tmp_path / str(i))
        for each in pod.init_containers + pod.containers:
            translated[f"{k8s.kind_name(workload)}/{each.name}"] = each.container
    # api, register, fetch, prepare, train, the helm test, the flow run
    assert len(translated) == 7, sorted(translated)
    for name, c in translated.items():
        assert (c.user, c.group, tuple(c.groups)) == (10001, 10001, (10001,)), name
        flags = (c.read_only_root, c.drop_all_capabilities, c.no_new_privileges)
        assert flags == (True, True, True), name
        assert (c.memory is not None, c.cpus is not None) == (True, True), name
        assert (c.network, c.pull) == ("host", "missing"), name


@pytest.mark.integration
def test_the_api_container_means_what_the_deployment_says(
    rendered: Rendered, tmp_path: Path
) -> None:
    deployment = k8s.one(rendered["iris"], "Deployment")
    api = translate(deployment, cluster_for(rendered), tmp_path).container("api")
    c = api.container
    token = base64.b64decode(
        k8s.one(rendered["iris"], "Secret", "iris-feedback-token")["data"]["token"]
    ).decode()
    assert c.image == k8s.image_names()["api"]
    assert (c.command, c.args) == ((), ())  # the image's entrypoint and CMD
    assert c.env["IRIS_API_TRACKING_URI"] == f"http://127.0.0.1:{HERE['mlflow']}"
    assert c.env["IRIS_API_PREFECT_API_URL"] == f"http://127.0.0.1:{HERE['prefect-server']}/api"
    assert c.env["IRIS_API_FEEDBACK_TOKEN"] == token
    assert c.env["IRIS_FEEDBACK_STORE_URL"] == STORE_URL
    # service links from the namespace's Services, the declared variable winning over its link
    assert c.env["MLFLOW_SERVICE_PORT"] == "5000"
    assert c.env["IRIS_API_SERVICE_PORT"] == "8000"
    assert c.env["IRIS_API_PORT"] == "8000"
    assert c.env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"
    assert list(c.tmpfs) == [f"{TMP}:exec,size={64 * 2**20}"]
    assert (c.memory, c.cpus) == (384 * 2**20, 1.0)
    assert api.probes == {
        "startup": Probe("/v2/health/live", 8000, period_s=2, failure_threshold=30),
        "liveness": Probe("/v2/health/live", 8000, period_s=10, timeout_s=3),
        "readiness": Probe("/v2/health/ready", 8000, period_s=5, timeout_s=3),
    }
    flags = c.run_flags()
    for flag in ("--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges",
                 "--user=10001:10001", "--group-add=10001", "--network=host"):  # fmt: skip
        assert flag in flags


@pytest.mark.integration
def test_the_training_job_shares_its_data_folder_between_its_containers(
    rendered: Rendered, tmp_path: Path
) -> None:
    job = next(
        j for j in k8s.by_kind(rendered["iris"], "Job") if "training" in j["metadata"]["name"]
    )
    pod = translate(job, cluster_for(rendered), tmp_path)
    everyone = pod.init_containers + pod.containers
    assert [c.name for c in everyone] == ["fetch", "prepare", "train"]
    # both emptyDirs are the pod's, shared by its three containers: one host folder each
    shared = (
        Mount(tmp_path / "volume-data", "/data", read_only=False),
        Mount(tmp_path / "volume-tmp", TMP, read_only=False),
    )
    assert {tuple(c.container.mounts) for c in everyone} == {shared}
    assert all(not c.container.tmpfs for c in everyone)
    assert (tmp_path / "volume-data").stat().st_mode & 0o777 == 0o777
    train = pod.container("train").container
    assert train.command[0] == "iris-train"
    assert train.args == ()
    assert train.env["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{HERE['mlflow']}"
    assert train.env["IRIS_TRAIN_N_JOBS"] == "2"


@pytest.mark.integration
def test_the_registration_job_gets_prefect_yaml_as_a_read_only_folder(
    rendered: Rendered, tmp_path: Path
) -> None:
    job = next(
        j for j in k8s.by_kind(rendered["iris"], "Job") if "registration" in j["metadata"]["name"]
    )
    register = translate(job, cluster_for(rendered), tmp_path).container().container
    assert register.mounts == [Mount(tmp_path / "volume-prefect-yaml", "/etc/iris", read_only=True)]
    written = (tmp_path / "volume-prefect-yaml" / "prefect.yaml").read_text()
    assert written == (k8s.ROOT / "prefect.yaml").read_text().rstrip("\n")  # the chart's `|-`
    assert register.workdir == TMP
    assert register.env["PREFECT_API_URL"] == f"http://127.0.0.1:{HERE['prefect-server']}/api"


@pytest.mark.integration
def test_the_flow_run_job_runs_prefect_with_the_store_from_its_secret(
    rendered: Rendered, flow_run_job: k8s.Obj, tmp_path: Path
) -> None:
    run = translate(flow_run_job, cluster_for(rendered), tmp_path).container().container
    assert (run.command, run.args) == ((), ("prefect", "flow-run", "execute"))
    assert run.env["IRIS_FEEDBACK_STORE_URL"] == STORE_URL
    assert run.env["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{HERE['mlflow']}"
    # the worker's address of the server (prefect-server.mlops.svc.cluster.local)
    assert run.env["PREFECT_API_URL"] == f"http://127.0.0.1:{HERE['prefect-server']}/api"
    assert "PREFECT__FLOW_RUN_ID" in run.env


def container_of(deployment: k8s.Obj) -> k8s.Obj:
    return next(k8s.containers(deployment))


#: A change to the API Deployment -> what the refusal names.
BREAKS: dict[str, tuple[Callable[[k8s.Obj, k8s.Obj, k8s.Obj], Any], str]] = {
    "envFrom": (lambda d, p, c: c.update(envFrom=[{"secretRef": {"name": "x"}}]), "envFrom"),
    "fieldRef": (
        lambda d, p, c: c["env"].append(
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
        ),
        "fieldRef",
    ),
    "exec probe": (lambda d, p, c: c.update(livenessProbe={"exec": {"command": ["true"]}}), "exec"),
    "hostPath": (
        lambda d, p, c: p["volumes"].append({"name": "h", "hostPath": {"path": "/x"}}),
        "hostPath volume",
    ),
    "privileged": (lambda d, p, c: c["securityContext"].update(privileged=True), "privileged"),
    "cap add": (
        lambda d, p, c: c["securityContext"]["capabilities"].update(add=["NET_ADMIN"]),
        "capabilities",
    ),
    "subPath": (lambda d, p, c: c["volumeMounts"][0].update(subPath="x"), "subPath"),
    "nodeSelector": (lambda d, p, c: p.update(nodeSelector={"a": "b"}), "nodeSelector"),
    "lifecycle": (
        lambda d, p, c: c.update(lifecycle={"preStop": {"exec": {"command": ["x"]}}}),
        "lifecycle",
    ),
    "$(VAR)": (
        lambda d, p, c: c["env"].append({"name": "X", "value": "$(IRIS_API_PORT)"}),
        r"\$\(VAR\)",
    ),
    "token": (lambda d, p, c: p.pop("automountServiceAccountToken"), "token"),
    "root": (lambda d, p, c: p["securityContext"].update(runAsUser=0), "user 0"),
    "no seccomp": (lambda d, p, c: p["securityContext"].pop("seccompProfile"), "seccompProfile"),
    "gpu": (
        lambda d, p, c: c["resources"]["limits"].update({"nvidia.com/gpu": 1}),
        "nvidia.com/gpu",
    ),
    "pull policy": (lambda d, p, c: c.update(imagePullPolicy="Sometimes"), "imagePullPolicy"),
    "unmapped host": (
        lambda d, p, c: c["env"].append({"name": "X", "value": "http://other:1234/x"}),
        "other:1234",
    ),
    "missing secret": (
        lambda d, p, c: c["env"].append(
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}
        ),
        "nope/k",
    ),
    "hostPort": (lambda d, p, c: c["ports"][0].update(hostPort=80), "hostPort"),
    "emptyDir medium": (
        lambda d, p, c: p["volumes"][0]["emptyDir"].update(medium="HugePages"),
        "medium",
    ),
}


@pytest.mark.integration
@pytest.mark.parametrize("change", sorted(BREAKS))
def test_a_field_or_value_it_cannot_translate_fails_it(
    change: str, rendered: Rendered, tmp_path: Path
) -> None:
    deployment = copy.deepcopy(k8s.one(rendered["iris"], "Deployment"))
    pod = k8s.pod_spec(deployment)
    assert pod is not None
    translate(deployment, cluster_for(rendered), tmp_path / "before")  # translates as it is
    breaks, named = BREAKS[change]
    breaks(deployment, pod, container_of(deployment))
    with pytest.raises(Untranslatable, match=named):
        translate(deployment, cluster_for(rendered), tmp_path / "after")


@pytest.mark.integration
def test_service_links_are_asked_for_unless_the_pod_turns_them_off(
    rendered: Rendered, tmp_path: Path
) -> None:
    deployment = copy.deepcopy(k8s.one(rendered["iris"], "Deployment"))
    without = Cluster(objects=rendered["iris"], secrets={"iris-feedback-store": {"url": STORE_URL}},
                      addresses=cluster_for(rendered).addresses)  # fmt: skip
    with pytest.raises(Untranslatable, match="enableServiceLinks"):
        translate(deployment, without, tmp_path / "a")
    pod = k8s.pod_spec(deployment)
    assert pod is not None
    pod["enableServiceLinks"] = False
    env = translate(deployment, without, tmp_path / "b").container().container.env
    assert "MLFLOW_SERVICE_HOST" not in env
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"  # the API server's: always


# --- without rendering --------------------------------------------------------------------------


def test_the_address_map_rewrites_cluster_urls_and_refuses_other_hosts() -> None:
    cluster = Cluster(
        addresses=service_addresses("mlflow", "mlops", 5000, "127.0.0.1:15000")
        | service_addresses("pg", "mlops", 5432, "127.0.0.1:15432")
    )
    assert cluster.rewrite("http://mlflow:5000", "x") == "http://127.0.0.1:15000"
    assert cluster.rewrite("http://mlflow.mlops.svc.cluster.local:5000/api", "x") == (
        "http://127.0.0.1:15000/api"
    )
    assert cluster.rewrite("postgresql://u:p%40ss@pg/db", "x") == (
        "postgresql://u:p%40ss@127.0.0.1:15432/db"
    )  # the scheme's port, the login kept
    assert cluster.rewrite("http://127.0.0.1:9/x and plain words", "x") == (
        "http://127.0.0.1:9/x and plain words"
    )
    with pytest.raises(Untranslatable, match=r"x: http://mlflow:80 ") as refused:
        cluster.rewrite("http://mlflow/x", "x")  # another port of a known host
    with pytest.raises(Untranslatable) as refused:
        cluster.rewrite("postgresql://u:topsecret@db.example:5432/x", "x")
    assert "topsecret" not in str(refused.value)


def test_service_links_are_named_as_the_kubelet_names_them() -> None:
    service = {
        "metadata": {"name": "prefect-server"},
        "spec": {
            "ports": [{"name": "server-svc-port", "port": 4200}, {"port": 9, "protocol": "UDP"}]
        },
    }
    headless = {
        "metadata": {"name": "db-hl"},
        "spec": {"clusterIP": "None", "ports": [{"port": 1}]},
    }
    assert service_links([service, headless]) == {
        "PREFECT_SERVER_SERVICE_HOST": "10.96.0.10",
        "PREFECT_SERVER_SERVICE_PORT": "4200",
        "PREFECT_SERVER_SERVICE_PORT_SERVER_SVC_PORT": "4200",
        "PREFECT_SERVER_PORT": "tcp://10.96.0.10:4200",
        "PREFECT_SERVER_PORT_4200_TCP": "tcp://10.96.0.10:4200",
        "PREFECT_SERVER_PORT_4200_TCP_PROTO": "tcp",
        "PREFECT_SERVER_PORT_4200_TCP_PORT": "4200",
        "PREFECT_SERVER_PORT_4200_TCP_ADDR": "10.96.0.10",
        "PREFECT_SERVER_PORT_9_UDP": "udp://10.96.0.10:9",
        "PREFECT_SERVER_PORT_9_UDP_PROTO": "udp",
        "PREFECT_SERVER_PORT_9_UDP_PORT": "9",
        "PREFECT_SERVER_PORT_9_UDP_ADDR": "10.96.0.10",
    }


@pytest.mark.parametrize(
    ("text", "value"),
    [("384Mi", 384 * 2**20), ("1Gi", 2**30), ("500m", 0.5), ("2", 2), (1, 1), ("1.5", 1.5),
     ("64M", 64 * 10**6)],
)  # fmt: skip
def test_quantities(text: str | int, value: float) -> None:
    assert quantity(text, "x") == value


def test_a_bad_quantity_is_refused() -> None:
    with pytest.raises(Untranslatable, match="suffix"):
        quantity("1Zi", "x")


def test_the_mount_points_a_runtime_makes_are_not_writes_of_the_container() -> None:
    c = Container("img", mounts=[Mount(Path("/x"), "/etc/iris/conf")], tmpfs=[f"{TMP}:exec"])
    diff = ["C /etc", "A /etc/iris", "A /etc/iris/conf", "A /etc/passwd-", "C /var", "A /var/x"]
    assert own_writes(diff, c) == ["A /etc/passwd-", "C /var", "A /var/x"]


def test_the_docker_flags_of_a_pod_container() -> None:
    c = Container("img", args=["a"], command=["sh", "-c"], user=1, group=2, groups=[3],
                  tmpfs=[f"{TMP}:exec,size=9"], workdir="/w", memory=1024, cpus=0.5, pull="never")  # fmt: skip
    assert c.run_flags() == [
        "--network=host", "--user=1:2", "--group-add=3", "--read-only",
        "--tmpfs=/tmp:exec,size=9", "--workdir=/w", "--memory=1024b", "--memory-swap=1024b",
        "--cpus=0.5", "--pull=never", "--cap-drop=ALL", "--security-opt=no-new-privileges",
        "--entrypoint=sh", "img", "-c", "a",
    ]  # fmt: skip
