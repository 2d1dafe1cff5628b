"""The three images as they will run in Kubernetes (`make test-images`: built first by `make
images`), against real services on this machine: MLflow, a Prefect server and PostgreSQL.

Every container runs hardened as the chart will declare it (user 10001, read-only root
filesystem, /tmp an empty tmpfs, every capability dropped, no privilege escalation) on the
host's network. In order: the API starts before any model exists (live, not ready); the
training image trains and registers version 1; the API becomes ready and answers; the finetune
image executes five flow runs of the `kubernetes` deployment of prefect.yaml, each started the
way Prefect's Kubernetes worker starts one, and the fifth registers version 2; the API follows
it. Nothing is left behind: no container, network, volume or untagged project image.
"""

from __future__ import annotations

import contextlib
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
from iris_testing.containers import UID, Container, Docker, DockerError, Mount
from iris_testing.ports import free_port
from iris_testing.prefect_rest import PrefectRest

pytestmark = [pytest.mark.integration, pytest.mark.images]

ROOT = Path(__file__).resolve().parents[1]
#: The API's registry poll period here (seconds).
POLL_S = 1.0
#: The probes the chart declares on the API's port (HTTP GET).
LIVENESS, READINESS = "/v2/health/live", "/v2/health/ready"
#: Growth over the base image (MB) no image may exceed: the API under 180 MB; training and
#: finetune a third under what they were before any cut (687 and 851 MB above their base).
BUDGET_MB = {"api": 180, "training": 458, "finetune": 567}
#: The deployment of prefect.yaml whose runs are a pod each, from the finetune image.
DEPLOYMENT = "kubernetes"
#: Five feedback rows, a flower of each class in turn.
FEEDBACK = [CLASS_NAMES[i % 3] for i in range(5)]
#: The feedback database's role (its password is made per run).
ROLE = "feedback"


def feedback_store_env(services: Services) -> dict[str, str]:
    """The feedback store the API and finetune containers are given: the PostgreSQL database
    on this machine, by the one URL setting both read."""
    return {STORE_URL: services.postgres_url}


@dataclass(frozen=True)
class Services:
    mlflow: str
    prefect: PrefectRest
    postgres_url: str
    data: Path  # prepared data, readable by the containers' user


@dataclass
class Api:
    url: str
    name: str
    #: What the probes answered before any model was registered.
    live_before: int
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
    listed = subprocess.run(
        ["make", "--no-print-directory", "-s", "image-names"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    names = dict(line.split() for line in listed.splitlines())
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
def services(images: dict[str, str], data_dir: Path) -> Iterator[Services]:
    """MLflow and a Prefect server on free loopback ports, with the `kubernetes` work pool and
    deployment of prefect.yaml (its image: the finetune image); PostgreSQL with a database for
    the feedback store; prepared data the containers' user can read."""
    with contextlib.ExitStack() as stack:
        folder = Path(tempfile.mkdtemp(prefix="iris-images-"))
        stack.callback(shutil.rmtree, folder, ignore_errors=True)
        folder.chmod(0o755)
        data = folder / "data"
        shutil.copytree(data_dir, data)
        for path in [data, *data.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)

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
        deploy_kubernetes(prefect_url, folder / "prefect-client", images["finetune"])
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
            data,
        )


def deploy_kubernetes(api_url: str, home: Path, finetune_image: str) -> None:
    """The work pool (type kubernetes) and the deployment `kubernetes` of prefect.yaml, made
    with the Prefect CLI as a user would; the image name comes in through IRIS_FINETUNE_IMAGE."""
    project = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (spec,) = [d for d in project["deployments"] if d["name"] == DEPLOYMENT]
    env = prefect_env(api_url, home)
    pool = spec["work_pool"]["name"]
    run_prefect("work-pool", "create", pool, "--type", "kubernetes", "--overwrite", env=env)
    run_prefect(
        "deploy", "--prefect-file", str(ROOT / "prefect.yaml"), "--name", DEPLOYMENT,
        env={**env, "IRIS_FINETUNE_IMAGE": finetune_image}, cwd=ROOT,
    )  # fmt: skip


@pytest.fixture(scope="module")
def api(docker: Docker, images: dict[str, str], services: Services) -> Iterator[Api]:
    """The API container, started before any model is registered; what its probes answered
    then. Docker runs the image's HEALTHCHECK every second here."""
    port = free_port()
    name = f"iris-test-{docker.session}-api"
    container = Container(
        images["api"],
        env={
            "IRIS_API_PORT": str(port),
            "IRIS_API_TRACKING_URI": services.mlflow,
            "IRIS_API_POLL_INTERVAL_S": str(POLL_S),
            "IRIS_API_PREFECT_API_URL": services.prefect.url,
            **feedback_store_env(services),
        },
        extra=["--health-interval=1s"],
    )
    docker.start(container, name)
    url = f"http://127.0.0.1:{port}"

    def live() -> int | None:
        if not docker.inspect("container", name)["State"]["Running"]:
            pytest.fail(f"the API container stopped:\n{docker.logs(name)}")
        return status(url + LIVENESS)

    live_before = wait_until("the API answers its liveness probe", live, 60)
    yield Api(
        url,
        name,
        live_before,
        status(url + READINESS),
        docker.inspect("container", name)["State"]["Health"]["Status"],
    )
    docker.remove(name)


@pytest.fixture(scope="module")
def trained(api: Api, docker: Docker, images: dict[str, str], services: Services) -> list[str]:
    """The training image run once (its own command) on the prepared data, after the API
    started (so the API saw no model first); the diff of its root filesystem."""
    name = f"iris-test-{docker.session}-training"
    container = Container(
        images["training"],
        env={"MLFLOW_TRACKING_URI": services.mlflow, "IRIS_TRAIN_N_JOBS": "2"},
        mounts=[Mount(services.data, "/data")],
    )
    code, logs = docker.run(container, name, timeout_s=600)
    assert code == 0, f"training exited with {code}:\n{logs[-4000:]}"
    diff = docker.diff(name)
    docker.remove(name)
    return diff


@dataclass
class FlowRuns:
    versions: list[int]  # registered versions of the served model after each run
    states: list[str]
    diffs: list[list[str]]
    env: dict[str, str]  # the first container's environment


@pytest.fixture(scope="module")
def finetuned(
    trained: list[str], docker: Docker, services: Services, images: dict[str, str]
) -> FlowRuns:
    """Five flow runs of the `kubernetes` deployment, created with a flower and its class as
    parameters, each executed by a finetune container as the Kubernetes worker starts one:
    the deployment's image, `prefect flow-run execute` as the arguments, the run's job
    environment plus PREFECT_API_URL and PREFECT__FLOW_RUN_ID."""
    prefect = services.prefect
    deployment = prefect.deployment(f"{FLOW_NAME}/{DEPLOYMENT}")
    job = deployment["job_variables"]
    # The deployment's environment with this machine's MLflow and feedback store, as the
    # cluster's values would give them.
    env = job["env"] | {"MLFLOW_TRACKING_URI": services.mlflow} | feedback_store_env(services)
    client, model = MlflowClient(services.mlflow), registry().onnx_model_name
    runs = FlowRuns([], [], [], {})
    for i, class_name in enumerate(FEEDBACK):
        run = prefect.request(
            "POST",
            f"/deployments/{deployment['id']}/create_flow_run",
            json={"parameters": feedback_row(class_name), "job_variables": {"env": env}},
        ).json()
        container = Container(
            job["image"],
            args=["prefect", "flow-run", "execute"],
            env={
                **run["job_variables"]["env"],
                "PREFECT_API_URL": prefect.url,
                "PREFECT__FLOW_RUN_ID": run["id"],
            },
        )
        runs.env = runs.env or dict(container.env)
        name = f"iris-test-{docker.session}-flow-run-{i + 1}"
        code, logs = docker.run(container, name, timeout_s=300)
        assert code == 0, f"flow run {i + 1} exited with {code}:\n{logs[-4000:]}"
        runs.diffs.append(docker.diff(name))
        docker.remove(name)
        runs.states.append(prefect.request("GET", f"/flow_runs/{run['id']}").json()["state_type"])
        runs.versions.append(len(client.search_model_versions(f"name = '{model}'")))
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


def test_the_api_is_live_at_once_and_not_ready_before_a_model_exists(api: Api) -> None:
    assert api.live_before == 200
    assert api.ready_before == 503
    assert api.health_before != "healthy"


def test_the_training_image_trains_and_registers_the_champion(
    trained: list[str], services: Services
) -> None:
    names = registry()
    client = MlflowClient(services.mlflow)
    for model in (names.onnx_model_name, names.sklearn_model_name):
        assert client.get_model_version_by_alias(model, names.alias).version == "1"
    assert trained == []  # wrote nothing outside /tmp


def test_the_api_becomes_ready_answers_every_class_and_serves_its_own_docs(
    api: Api, trained: list[str], docker: Docker
) -> None:
    wait_until("ready once a model is registered", lambda: status(api.url + READINESS) == 200,
               POLL_S + 30)  # fmt: skip
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


def test_the_finetune_image_executes_flow_runs_and_the_fifth_registers_a_version(
    finetuned: FlowRuns,
) -> None:
    assert finetuned.states == ["COMPLETED"] * 5
    assert finetuned.versions == [1, 1, 1, 1, 2]
    assert finetuned.diffs == [[]] * 5  # wrote nothing outside /tmp
    assert "PREFECT__FLOW_RUN_ID" in finetuned.env


def test_the_api_follows_the_new_version_and_wrote_nothing(
    api: Api, finetuned: FlowRuns, docker: Docker
) -> None:
    def served() -> str:
        answer = httpx.post(api.url + "/predict", json=flower("Iris-setosa"), timeout=10)
        return str(answer.json()["model_version"])

    wait_until("the API serves version 2", lambda: served() == "2", POLL_S + 15)
    assert status(api.url + LIVENESS) == status(api.url + READINESS) == 200
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
