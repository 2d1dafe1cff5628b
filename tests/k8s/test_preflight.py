"""`make k8s-preflight` (scripts/k8s-preflight.sh) and the make targets around skaffold, run
against fake tools (tests/k8s/fake_tools.py): the image list it checks is exactly what the
rendered releases pull; it passes when every tool is new enough and every image published,
and otherwise fails within seconds naming each missing or old tool and each missing image;
`make k8s-dev` and `make k8s-run` run it first, and stop there when it fails; they give
skaffold a fixed run id, so two deploys label the pod templates alike; the image tags of
MLflow and Prefect follow uv.lock."""

from __future__ import annotations

import itertools
import re
import subprocess
import time
import tomllib
import uuid
from pathlib import Path
from typing import Any

import pytest

from iris_testing import k8s
from tests.k8s import fake_tools

pytestmark = pytest.mark.integration

ROOT = k8s.ROOT
SCRIPT = ROOT / "scripts" / "k8s-preflight.sh"
IMAGES = ROOT / "k8s" / "images.txt"
#: The operator's flag naming the image of the config reloader it adds to Prometheus' and
#: Alertmanager's pods.
RELOADER_FLAG = "--prometheus-config-reloader="


def listed_images() -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in IMAGES.read_text().splitlines())
    return [line for line in lines if line]


def pulled_images(rendered: dict[str, list[k8s.Obj]]) -> set[str]:
    """Every image the cluster pulls for the rendered releases: each container's (hooks and
    test pods included), the Prometheus and Alertmanager resources' own, the config
    reloader's; not the images skaffold builds (their repositories are skaffold.yaml's)."""
    built = {a["image"] for a in k8s.skaffold_config()["build"]["artifacts"]}
    images = set()
    for objects in rendered.values():
        for obj in objects:
            images |= {c["image"] for c in k8s.containers(obj)}
            if obj["kind"] in {"Prometheus", "Alertmanager"}:
                images.add(obj["spec"]["image"])
            for container in k8s.containers(obj):
                images |= {
                    a.removeprefix(RELOADER_FLAG)
                    for a in container.get("args") or []
                    if a.startswith(RELOADER_FLAG)
                }
    return {i for i in images if i.rsplit(":", 1)[0] not in built}


def test_the_image_list_is_what_the_releases_pull(rendered: dict[str, list[k8s.Obj]]) -> None:
    listed = listed_images()
    assert len(listed) == len(set(listed)), "an image listed twice"
    pulled = pulled_images(rendered)
    assert set(listed) == pulled, (
        f"k8s/images.txt lacks {sorted(pulled - set(listed))}, "
        f"lists what no release pulls: {sorted(set(listed) - pulled)}"
    )
    assert "quay.io/prometheus/prometheus:v3.14.0-distroless" in pulled  # a resource's image


def locked_version(package: str) -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    (version,) = [p["version"] for p in lock["package"] if p["name"] == package]
    return str(version)


def test_mlflow_and_prefect_images_are_the_locked_versions() -> None:
    """The servers in the cluster run the MLflow and Prefect the clients are locked to
    (docs/kubernetes.md: moving both together)."""
    prefect, mlflow = locked_version("prefect"), locked_version("mlflow")
    for image in listed_images():
        name, tag = image.rsplit(":", 1)
        if name == "prefecthq/prefect":
            assert re.fullmatch(rf"{re.escape(prefect)}-python3\.12(-kubernetes)?", tag), image
        if name == "burakince/mlflow":
            assert tag == mlflow, image


def preflight(tmp_path: Path, tools: tuple[str, ...] = fake_tools.TOOLS[:5],
              **config: Any) -> tuple[int, str, list[dict[str, Any]], float]:  # fmt: skip
    """Exit code, output, the calls of the fake tools and the seconds it took."""
    folder = tmp_path / "bin"
    env = fake_tools.install(folder, config, tools, system=True)
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    took = time.monotonic() - started
    return done.returncode, done.stdout + done.stderr, fake_tools.calls(folder), took


def problems(out: str) -> list[str]:
    return re.findall(r"^  - (.*)$", out, re.MULTILINE)


def test_preflight_passes_with_the_tools_and_every_image(tmp_path: Path) -> None:
    code, out, calls, _ = preflight(tmp_path, published=listed_images())
    assert code == 0, out
    assert f"k8s-preflight: tools and {len(listed_images())} images ok" in out
    asked = [c["args"][-1] for c in calls if c["args"][:2] == ["manifest", "inspect"]]
    assert sorted(asked) == sorted(listed_images())  # each asked of its registry, once


def test_preflight_names_everything_missing_within_seconds(tmp_path: Path) -> None:
    images = listed_images()
    gone, local_only = images[0], images[1]
    code, out, _, took = preflight(
        tmp_path, ("kubectl", "helm", "skaffold", "docker"),  # no kind
        published=images[2:], local=[local_only], engine=False,
        versions={"skaffold": "v2.16.0", "helm": "v3.18.0+g3e1c0b2"},
    )  # fmt: skip
    assert code == 1, out
    found = problems(out)
    assert len(found) == 5, out
    assert found[0].startswith("kind: not installed (needs 0.24.0 or newer")
    assert found[1].startswith("helm 3.18.0: needs 3.18.1 or newer")
    assert found[2].startswith("skaffold 2.16.0: needs 2.19.0 or newer")
    assert found[3].startswith("docker: the engine does not answer")
    assert found[4].startswith(f"image {gone}: not found")
    assert f"ok: {local_only} (in the local Docker only" in out
    assert took < 10, f"{took:.1f} s"


def test_preflight_asks_crane_where_it_is_installed(tmp_path: Path) -> None:
    code, out, calls, _ = preflight(
        tmp_path, (*fake_tools.TOOLS[:5], "crane"), published=listed_images()
    )
    assert code == 0, out
    assert sorted(c["args"][-1] for c in calls if c["tool"] == "crane") == sorted(listed_images())
    assert not [c for c in calls if c["args"][:2] == ["manifest", "inspect"]]


def make(tmp_path: Path, target: str, **config: Any) -> tuple[int, str, list[dict[str, Any]]]:
    folder = tmp_path / "bin"
    config = {"published": listed_images(), "clusters": ["iris-mlops"], **config}
    env = fake_tools.install(folder, config)
    done = subprocess.run(
        ["make", "-s", "--no-print-directory", "-C", str(ROOT), target], env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr, fake_tools.calls(folder)


def skaffold_labels(argv: list[str], run_uuid: str) -> dict[str, str]:
    """The labels skaffold puts on pod templates (skaffold v2 pkg/skaffold/deploy/label:
    DefaultLabeller.Labels): skaffold.dev/run-id is its run's UUID; then each --label/-l
    KEY=VALUE, which wins over it."""
    labels = {"skaffold.dev/run-id": run_uuid}
    for flag, value in itertools.pairwise(argv):
        if flag in {"--label", "-l"}:
            key, _, text = value.partition("=")
            labels[key] = text
    for arg in argv:
        if arg.startswith("--label="):
            key, _, text = arg.removeprefix("--label=").partition("=")
            labels[key] = text
    return labels


@pytest.mark.parametrize("target", ["k8s-run", "k8s-dev"])
def test_make_runs_the_preflight_first_and_skaffold_with_a_fixed_run_id(
    tmp_path: Path, target: str
) -> None:
    runs = []
    for i in range(2):  # two deploys
        code, out, calls = make(tmp_path / str(i), target)
        assert code == 0, out
        asked = [i for i, c in enumerate(calls) if c["tool"] == "crane"]  # a fake crane is on PATH
        (kind_up,) = [i for i, c in enumerate(calls) if c["args"][:2] == ["get", "clusters"]]
        assert len(asked) == len(listed_images())
        assert max(asked) < kind_up  # the preflight, then the cluster, then skaffold
        assert "k8s-preflight: tools and" in out
        (skaffold,) = [c for c in calls if c["tool"] == "skaffold" and c["args"][0] != "version"]
        assert skaffold["args"][0] == target.removeprefix("k8s-")
        assert "--kube-context" in skaffold["args"]
        runs.append(skaffold_labels(skaffold["args"], str(uuid.uuid4())))
    assert runs[0] == runs[1], "two deploys label the pod templates differently: all restart"


def test_make_stops_when_the_preflight_fails(tmp_path: Path) -> None:
    code, out, calls = make(tmp_path, "k8s-run", versions={"skaffold": "v2.16.0"})
    assert code != 0
    assert "skaffold 2.16.0: needs 2.19.0 or newer" in out
    assert not [
        c for c in calls if c["args"][:2] == ["get", "clusters"] or c["args"][:1] == ["run"]
    ]


def test_preflight_without_docker_says_the_images_went_unchecked(tmp_path: Path) -> None:
    code, out, _, _ = preflight(tmp_path, ("kind", "kubectl", "helm", "skaffold"))
    assert code == 1, out
    assert [p.split(":")[0] for p in problems(out)] == ["docker", "images"]
    assert f"images: none of the {len(listed_images())} checked" in out
