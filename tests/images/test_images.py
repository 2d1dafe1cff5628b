"""The three images as Kubernetes runs them (`make test-images`: built first by `make images`),
against real services on this machine: MLflow, a Prefect server and PostgreSQL.

Every container is one of the manifests, translated into `docker run` by iris_testing.pods:
charts/iris rendered as skaffold.yaml installs it (the images of this commit; the API on a free
port and polling the registry every second, both chart values) and the Job Prefect's
Kubernetes worker makes for each flow run (the worker's own code, the work pool's base job
template k8s/prefect/base-job-template.json). Image, command, arguments, environment (Secrets,
service links), user and groups, read-only root filesystem, capabilities, privilege escalation,
CPU and memory limits and volumes are the manifests'; the in-cluster addresses of MLflow, Prefect
and the API are mapped to this machine's, on the host's network.

In order: the registration Job deploys prefect.yaml's `kubernetes` deployment into the work pool;
the API Deployment's container starts before any model exists (its startup and liveness probes
pass, its readiness probe fails); the training Job (fetch, prepare, train) registers version 1;
the readiness probe passes and the API answers, as does the chart's `helm test` pod; five flow
runs, each executed by its Job's container, the fifth registering version 2; the API follows it.
Nothing is left behind: no container, network, volume or untagged project image.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from mlflow.tracking import MlflowClient

from iris_core import CLASS_NAMES, EXAMPLES, FEATURES
from iris_core.feedback import STORE_URL
from iris_core.params import registry
from iris_finetune.flow import FLOW_NAME
from iris_stack.deploy import run_prefect
from iris_stack.postgres import Postgres
from iris_stack.process import running
from iris_stack.services import mlflow_server, prefect_env, prefect_server
from iris_testing import k8s
from iris_testing.containers import UID, Container, Docker, DockerError
from iris_testing.pods import Cluster, PodContainer, Ran, run_pod, service_addresses, translate
from iris_testing.ports import free_port
from iris_testing.prefect_rest import PrefectRest

pytestmark = [pytest.mark.integration, pytest.mark.images]

ROOT = Path(__file__).resolve().parents[2]
#: The API's registry poll period here (seconds), through the chart's api.env.
POLL_S = 1
#: Growth over the base image (MB) no image may exceed: the API under 180 MB; training and
#: finetune a third under what they were before any cut (687 and 851 MB above their base).
BUDGET_MB = {"api": 180, "training": 458, "finetune": 567}
#: The namespace of the iris release and of the services it calls.
NAMESPACE = "mlops"
#: charts/iris's default values (the work pool, the feedback store's Secret).
CHART_VALUES = yaml.safe_load((ROOT / "charts" / "iris" / "values.yaml").read_text())
#: The deployment of prefect.yaml whose runs are a pod each, from the finetune image.
DEPLOYMENT = "kubernetes"
#: Five feedback rows, a flower of each class in turn.
FEEDBACK = [CLASS_NAMES[i % 3] for i in range(5)]
#: The feedback database's role (its password is made per run).
ROLE = "feedback"


def feedback_store_env(services: Services) -> dict[str, str]:
    """The feedback store a container is given: the PostgreSQL database on this machine, by
    the one URL setting the API and the flow runs read."""
    return {STORE_URL: services.postgres_url}


@dataclass(frozen=True)
class Services:
    mlflow: str
    prefect: PrefectRest
    postgres_url: str


@dataclass(frozen=True)
class Manifests:
    """The releases of the mlops namespace rendered as skaffold.yaml installs them."""

    iris: list[k8s.Obj]  # charts/iris: the API on `api_port`, polling every POLL_S
    services: list[k8s.Obj]  # every Service of the namespace (the pods' service links)
    worker_env: dict[str, str]  # the Prefect worker pod's environment
    api_port: int

    def job(self, component: str) -> k8s.Obj:
        """The iris release's Job of this component (its name carries a hash)."""
        (job,) = [j for j in k8s.by_kind(self.iris, "Job")
                  if j["metadata"]["labels"]["app.kubernetes.io/component"] == component]  # fmt: skip
        return job


@dataclass
class Api:
    url: str
    name: str
    pod: PodContainer
    #: Seconds from the start until the startup probe passed; what the liveness and
    #: readiness probes and the image's HEALTHCHECK said then (no model registered yet).
    started_s: float
    live_before: bool
    ready_before: int
    health_before: str


def git_head() -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def wait_until(what: str, check: Any, timeout_s: float, every_s: float = 0.25) -> Any:
    """Poll `check()` until it returns something truthy; that value, or a failure naming
    `what` and the last value."""
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            value = check()
            if value:
                return value
        time.sleep(every_s)
    pytest.fail(f"{what}: not within {timeout_s:g} s (last: {value!r})")


def status(url: str) -> int:
    return httpx.get(url, timeout=5).status_code


def flower(class_name: str) -> dict[str, float]:
    """The textbook flower of a class, as /predict takes it."""
    return dict(zip(FEATURES, EXAMPLES[class_name], strict=True))


def feedback_row(class_name: str) -> dict[str, Any]:
    return flower(class_name) | {"class_name": class_name}


def versions(mlflow: str) -> int:
    """How many versions of the served model the registry holds."""
    model = registry().onnx_model_name
    return len(MlflowClient(mlflow).search_model_versions(f"name = '{model}'"))


def failed(ran: list[Ran]) -> str:
    return "\n".join(f"{r.name} exited with {r.code}:\n{r.logs[-3000:]}" for r in ran if r.code)


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    """The engine, checked to answer (a test run without one fails, never skips); afterwards
    this session's containers are removed and nothing of it may remain."""
    client = Docker()
    try:
        client("info", timeout_s=30)
    except (DockerError, subprocess.TimeoutExpired) as e:
        pytest.fail(f"no Docker engine answers: {e}")
    networks, volumes = client.ids("network"), client.ids("volume")
    yield client
    client.remove_all()
    left = {
        "containers": client.containers(),
        "networks": sorted(client.ids("network") - networks),
        "volumes": sorted(client.ids("volume") - volumes),
        "untagged project images": client.dangling_project_images(),
    }
    assert not any(left.values()), f"left behind: {left}"


@pytest.fixture(scope="module")
def images(docker: Docker) -> dict[str, str]:
    """member -> image name, from the Makefile (`make image-names`); each built from this
    commit (`make images`)."""
    names = k8s.image_names()
    head = git_head()
    for member, name in names.items():
        try:
            labels = docker.inspect("image", name)["Config"]["Labels"]
        except DockerError:
            pytest.fail(f"{member}: no image {name}: run `make images` first")
        if labels.get("org.opencontainers.image.revision") != head:
            pytest.fail(f"{name} was built from another commit: run `make images`")
    return names


@pytest.fixture(scope="module")
def manifests(images: dict[str, str]) -> Manifests:
    """skaffold.yaml's releases of the mlops namespace, rendered with Helm 4 as it installs
    them (the images of `make images`); two values of charts/iris differ: the API's port (the
    host's network has no room for a fixed one) and its poll interval."""
    port = free_port()
    rendered = {}
    for release in k8s.skaffold_releases():
        if release.namespace != NAMESPACE:
            continue
        if release.name == "iris":
            values = k8s.skaffold_image_values(images) | {"api.port": str(port)}
            poll = {"api.env.IRIS_API_POLL_INTERVAL_S": str(POLL_S)}
            rendered[release.name] = k8s.render_release(release, values, set_strings=poll)
        else:
            rendered[release.name] = k8s.render_release(release)
    worker = k8s.one(rendered["prefect-worker"], "Deployment")
    (container,) = [c for c in k8s.containers(worker) if c["name"] == "prefect-worker"]
    return Manifests(
        rendered["iris"],
        k8s.namespace_services(rendered, NAMESPACE),
        k8s.plain_env(container),
        port,
    )


@pytest.fixture(scope="module")
def services() -> Iterator[Services]:
    """MLflow and a Prefect server on free loopback ports, the Kubernetes work pool as the
    worker makes it (type kubernetes, the base job template of the prefect-worker release);
    PostgreSQL with a database for the feedback store."""
    with contextlib.ExitStack() as stack:
        folder = Path(tempfile.mkdtemp(prefix="iris-images-"))
        stack.callback(shutil.rmtree, folder, ignore_errors=True)
        folder.chmod(0o755)  # PostgreSQL's user enters it
        mlflow, prefect = (
            mlflow_server(folder / "mlflow", free_port()),
            prefect_server(folder / "prefect", free_port()),
        )
        for service in (mlflow, prefect):  # both start at once, then both are waited for
            service.start()
            stack.callback(service.stop)
        for service in (mlflow, prefect):
            service.wait_healthy(120)
        prefect_url = prefect.health_url.removesuffix("/health")
        create_work_pool(prefect_url, folder / "prefect-client")
        client = PrefectRest(prefect_url)
        stack.callback(client.close)

        # Under /tmp, which the postgres user can enter; a throwaway cluster needs no fsync.
        cluster = Postgres(folder / "postgres", free_port())
        cluster.init(sync=False)
        stack.enter_context(running(cluster.service({"fsync": "off"}), timeout_s=30))
        password = secrets.token_urlsafe(16)
        cluster.create_role(ROLE, password)
        cluster.create_database("feedback", ROLE)
        yield Services(
            mlflow.health_url.removesuffix("/health"),
            client,
            cluster.url("feedback", ROLE, password),
        )


def create_work_pool(api_url: str, home: Path) -> None:
    """The work pool of prefect.yaml's `kubernetes` deployment, as the Prefect worker creates
    it in the cluster: type kubernetes, k8s/prefect/base-job-template.json."""
    env = prefect_env(api_url, home)
    run_prefect(
        "work-pool", "create", CHART_VALUES["prefect"]["workPool"], "--type", "kubernetes",
        "--base-job-template", str(k8s.BASE_JOB_TEMPLATE), "--overwrite", env=env,
    )  # fmt: skip


@pytest.fixture(scope="module")
def cluster(manifests: Manifests, services: Services) -> Cluster:
    """What the pods find around them: the rendered Secrets and ConfigMaps, the feedback
    store's Secret (made by the iris-postgres release in a cluster) with this machine's
    database, the namespace's Services, and MLflow, Prefect and the API at this machine's ports
    under every DNS name of their Services."""
    here = {
        "mlflow": urlsplit(services.mlflow).netloc,
        "prefect-server": urlsplit(services.prefect.url).netloc,
        "iris-api": f"127.0.0.1:{manifests.api_port}",
    }
    addresses: dict[str, str] = {}
    for service in manifests.services:
        name = service["metadata"]["name"]
        if name in here:
            port = service["spec"]["ports"][0]["port"]
            addresses |= service_addresses(name, NAMESPACE, port, here[name])
    store = CHART_VALUES["feedbackStore"]
    return Cluster(
        objects=manifests.iris,
        secrets={store["secretName"]: {store["secretKey"]: services.postgres_url}},
        addresses=addresses,
        services=manifests.services,
    )


@pytest.fixture(scope="module")
def pod_folders() -> Iterator[Path]:
    """Where the pods' shared emptyDirs and configMap volumes live on this machine."""
    folder = Path(tempfile.mkdtemp(prefix="iris-pods-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def registration(
    docker: Docker, manifests: Manifests, cluster: Cluster, pod_folders: Path
) -> list[Ran]:
    """The registration Job run: prefect.yaml's `kubernetes` deployment deployed into the
    work pool, with the finetune image (from the Job's environment)."""
    pod = translate(manifests.job("registration"), cluster, pod_folders / "registration")
    return run_pod(docker, pod, f"iris-test-{docker.session}-registration", timeout_s=240)


@pytest.fixture(scope="module")
def api(docker: Docker, manifests: Manifests, cluster: Cluster, pod_folders: Path) -> Iterator[Api]:
    """The API Deployment's container, started before any model is registered (one of its
    replicas); its startup probe asked as declared (every periodSeconds, failureThreshold
    times at most). Docker runs the image's HEALTHCHECK every second here."""
    deployment = k8s.one(manifests.iris, "Deployment")
    pod = translate(deployment, cluster, pod_folders / "api").container("api")
    name = f"iris-test-{docker.session}-api"
    docker.start(dataclasses.replace(pod.container, extra=["--health-interval=1s"]), name)
    startup, start = pod.probes["startup"], time.monotonic()
    for _ in range(startup.failure_threshold):
        if not docker.inspect("container", name)["State"]["Running"]:
            pytest.fail(f"the API container stopped:\n{docker.logs(name)}")
        if startup.check():
            break
        time.sleep(startup.period_s)
    else:
        pytest.fail(
            f"the startup probe failed {startup.failure_threshold} times:\n{docker.logs(name)}"
        )
    yield Api(
        f"http://127.0.0.1:{manifests.api_port}",
        name,
        pod,
        time.monotonic() - start,
        pod.probes["liveness"].check(),
        status(pod.probes["readiness"].url),
        docker.inspect("container", name)["State"]["Health"]["Status"],
    )
    docker.remove(name)


@dataclass
class Training:
    ran: list[Ran]  # fetch, prepare, train
    versions_before: int


@pytest.fixture(scope="module")
def trained(
    api: Api, docker: Docker, manifests: Manifests, cluster: Cluster, pod_folders: Path,
    services: Services,
) -> Training:  # fmt: skip
    """The training Job run once, after the API started (so the API saw no model first)."""
    before = versions(services.mlflow)
    pod = translate(manifests.job("training"), cluster, pod_folders / "training")
    return Training(run_pod(docker, pod, f"iris-test-{docker.session}-training", 600), before)


@dataclass
class FlowRuns:
    versions: list[int]  # registered versions of the served model after each run
    states: list[str]
    ran: list[Ran]
    env: dict[str, str]  # the first container's environment


@pytest.fixture(scope="module")
def finetuned(
    registration: list[Ran], trained: Training, docker: Docker, manifests: Manifests,
    cluster: Cluster, pod_folders: Path, services: Services,
) -> FlowRuns:  # fmt: skip
    """Five flow runs of the `kubernetes` deployment, created as the API creates them (a
    flower and its class as parameters), the Job of each made by the Kubernetes worker's own
    code with the worker pod's settings, and run to its end, one after the other."""
    assert not failed(registration), failed(registration)
    prefect = services.prefect
    deployment = prefect.deployment(f"{FLOW_NAME}/{DEPLOYMENT}")
    ids = [
        prefect.request(
            "POST",
            f"/deployments/{deployment['id']}/create_flow_run",
            json={"parameters": feedback_row(class_name)},
        ).json()["id"]
        for class_name in FEEDBACK
    ]
    jobs = k8s.flow_run_jobs(prefect.url, ids, manifests.worker_env)
    runs = FlowRuns([], [], [], {})
    for i, (run_id, job) in enumerate(zip(ids, jobs, strict=True)):
        pod = translate(job, cluster, pod_folders / f"flow-run-{i + 1}")
        runs.env = runs.env or dict(pod.container().container.env)
        (ran,) = run_pod(docker, pod, f"iris-test-{docker.session}-flow-run-{i + 1}", 300)
        assert ran.code == 0, f"flow run {i + 1} exited with {ran.code}:\n{ran.logs[-4000:]}"
        runs.ran.append(ran)
        runs.states.append(prefect.request("GET", f"/flow_runs/{run_id}").json()["state_type"])
        runs.versions.append(versions(services.mlflow))
    return runs


# --- tests ------------------------------------------------------------------------------------


def test_the_images_are_labelled_run_as_10001_and_stay_within_their_size_budget(
    docker: Docker, images: dict[str, str]
) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    sizes = {}
    for member, name in images.items():
        image = docker.inspect("image", name)
        labels = image["Config"]["Labels"]
        assert labels["org.opencontainers.image.title"] == f"iris-mlops {member}"
        assert labels["org.opencontainers.image.version"] == version
        assert not re.search("://[^/]*@", labels["org.opencontainers.image.source"])  # no login
        assert image["Config"]["User"] == f"{UID}:{UID}"
        credential = re.compile("PASSWORD|SECRET|TOKEN|API_KEY|://[^/=]*@")
        assert not [v for v in image["Config"]["Env"] if credential.search(v)], member
        base = docker.inspect("image", labels["org.opencontainers.image.base.name"])
        sizes[member] = round((image["Size"] - base["Size"]) / 1e6)
    assert all(sizes[m] <= BUDGET_MB[m] for m in sizes), f"MB above the base: {sizes}"


#: Run inside an image: what its environment holds, as JSON.
SURVEY = """
import json, pathlib
site = next(pathlib.Path('/opt/venv/lib').glob('python3*/site-packages'))
ours = lambda p: p.relative_to(site).parts[0].startswith('iris_')
print(json.dumps({
    'test_suites': [str(p) for p in site.glob('*/**/tests') if p.is_dir()],
    'installers': [n for n in ('pip', 'setuptools', 'wheel') if (site / n).exists()],
    'their_sources': sum(1 for p in site.rglob('*.py') if not ours(p)),
    'their_bytecode': sum(1 for p in site.rglob('*.pyc') if not ours(p)),
    'our_sources': sum(1 for p in site.rglob('*.py') if ours(p)),
    'our_bytecode': sum(1 for p in site.rglob('__pycache__/*.pyc') if ours(p)),
}))
"""


@pytest.mark.parametrize("member", ["api", "training", "finetune"])
def test_the_environment_holds_no_test_suites_or_installers_and_compiled_code(
    member: str, docker: Docker, images: dict[str, str]
) -> None:
    """Dependencies as bytecode only (a handful of modules that do not compile for this
    Python keep their source), our code as source and bytecode."""
    container = Container(images[member], command=["python", "-c", SURVEY], network="none")
    name = f"iris-test-{docker.session}-survey-{member}"
    code, out = docker.run(container, name, timeout_s=60)
    docker.remove(name)
    assert code == 0, out
    found = json.loads(out)
    assert (found["test_suites"], found["installers"]) == ([], []), found
    assert found["their_sources"] < found["their_bytecode"] / 100, found
    assert 0 < found["our_sources"] <= found["our_bytecode"], found


def test_the_registration_job_deploys_the_kubernetes_deployment_with_the_finetune_image(
    registration: list[Ran], services: Services, images: dict[str, str]
) -> None:
    assert not failed(registration), failed(registration)
    deployment = services.prefect.deployment(f"{FLOW_NAME}/{DEPLOYMENT}")
    assert deployment["work_pool_name"] == CHART_VALUES["prefect"]["workPool"]
    assert deployment["job_variables"]["image"] == images["finetune"]
    automations = services.prefect.request("POST", "/automations/filter", json={}).json()
    wanted = yaml.safe_load((ROOT / "finetune" / "prefect-automations.yaml").read_text())
    assert sorted(a["name"] for a in automations) == [a["name"] for a in wanted["automations"]]
    assert [r.diff for r in registration] == [[]]  # wrote nothing outside /tmp


def test_the_api_starts_live_and_is_not_ready_before_a_model_exists(api: Api) -> None:
    """Its probes as the Deployment declares them: startup within its failureThreshold x
    periodSeconds (60 s), liveness passing, readiness failing (503) until a model is loaded."""
    startup = api.pod.probes["startup"]
    assert api.started_s < startup.failure_threshold * startup.period_s
    assert api.live_before is True
    assert api.ready_before == 503
    assert api.pod.probes["readiness"].check() is False
    assert api.health_before != "healthy"


def test_the_training_job_trains_and_registers_the_champion(
    trained: Training, services: Services, docker: Docker, images: dict[str, str],
    manifests: Manifests,
) -> None:  # fmt: skip
    assert [r.code for r in trained.ran] == [0, 0, 0], failed(trained.ran)
    names = registry()
    client = MlflowClient(services.mlflow)
    assert trained.versions_before == 0
    for model in (names.onnx_model_name, names.sklearn_model_name):
        assert client.get_model_version_by_alias(model, names.alias).version == "1"
    assert [r.diff for r in trained.ran] == [[], [], []]  # wrote nothing outside its volumes
    # the image's own command (`docker run` of it, docs/containers.md) is the Job's train step
    (train,) = [c for c in k8s.containers(manifests.job("training")) if c["name"] == "train"]
    assert docker.inspect("image", images["training"])["Config"]["Cmd"] == train["command"]


def test_the_api_becomes_ready_answers_every_class_and_serves_its_own_docs(
    api: Api, trained: Training, docker: Docker
) -> None:
    readiness = api.pod.probes["readiness"]
    wait_until("the readiness probe passes once a model is registered", readiness.check,
               POLL_S + 30)  # fmt: skip
    assert api.pod.probes["liveness"].check() is True
    with httpx.Client(base_url=api.url, timeout=10) as http:
        for name in CLASS_NAMES:
            answer = http.post("/predict", json=flower(name))
            assert answer.status_code == 200, answer.text
            assert (answer.json()["class_name"], answer.json()["model_version"]) == (name, "1")
        page = http.get("/docs")
        assert page.status_code == 200
        assets = [part.split('"')[0] for part in page.text.split('"/docs/assets/')[1:]]
        assert len(assets) == 3
        for asset in assets:
            assert http.get(f"/docs/assets/{asset}").status_code == 200, asset
        assert "predicted_class_name_total" in http.get("/metrics").text
    wait_until(
        "the image's HEALTHCHECK reports healthy",
        lambda: docker.inspect("container", api.name)["State"]["Health"]["Status"] == "healthy",
        15,
    )


def test_the_charts_helm_test_pod_passes_against_the_api(
    api: Api, trained: Training, docker: Docker, manifests: Manifests, cluster: Cluster,
    pod_folders: Path,
) -> None:  # fmt: skip
    """`helm test iris`: the chart's test pod asks the API's Service for readiness and a
    setosa's class."""
    wait_until("ready", api.pod.probes["readiness"].check, POLL_S + 30)
    test_pod = k8s.one(manifests.iris, "Pod")
    pod = translate(test_pod, cluster, pod_folders / "helm-test")
    (ran,) = run_pod(docker, pod, f"iris-test-{docker.session}-helm-test", timeout_s=60)
    assert ran.code == 0, ran.logs
    assert "GET /v2/health/ready 200" in ran.logs
    assert "'class_name': 'Iris-setosa'" in ran.logs


def test_the_flow_run_jobs_run_to_completion_and_the_fifth_registers_a_version(
    finetuned: FlowRuns, services: Services
) -> None:
    assert finetuned.states == ["COMPLETED"] * 5
    assert finetuned.versions == [1, 1, 1, 1, 2]
    assert [r.diff for r in finetuned.ran] == [[]] * 5  # wrote nothing outside /tmp
    # the worker's settings and the run's id, the server at this machine's address
    assert "PREFECT__FLOW_RUN_ID" in finetuned.env
    assert finetuned.env["PREFECT_API_URL"] == services.prefect.url
    assert finetuned.env["PREFECT_API_ENABLE_HTTP2"] == "True"


def test_the_api_follows_the_new_version_and_wrote_nothing(
    api: Api, finetuned: FlowRuns, docker: Docker
) -> None:
    def served() -> str:
        answer = httpx.post(api.url + "/predict", json=flower("Iris-setosa"), timeout=10)
        return str(answer.json()["model_version"])

    wait_until("the API serves version 2", lambda: served() == "2", POLL_S + 15)
    assert api.pod.probes["liveness"].check() is True
    assert api.pod.probes["readiness"].check() is True
    assert docker.diff(api.name) == []


@pytest.mark.parametrize("member", ["api", "finetune"])
def test_the_image_opens_the_feedback_store_on_postgresql(
    member: str, docker: Docker, images: dict[str, str], services: Services
) -> None:
    """The store library with its PostgreSQL driver (psycopg, libpq) works inside the image:
    opening the store migrates its schema there."""
    name = f"iris-test-{docker.session}-store-{member}"
    container = Container(
        images[member],
        command=["python", "-c", (
            "import os; from iris_core.feedback import FeedbackStore;"
            "store = FeedbackStore.open(os.environ['IRIS_FEEDBACK_STORE_URL']);"
            "print(store.location); store.close()"
        )],
        env={"IRIS_FEEDBACK_STORE_URL": services.postgres_url},
    )  # fmt: skip
    code, logs = docker.run(container, name, timeout_s=120)
    docker.remove(name)
    assert code == 0, logs[-3000:]
    assert logs.startswith("PostgreSQL 127.0.0.1:"), logs
    assert str(urlsplit(services.postgres_url).password) not in logs
