"""Fixtures of the offline Kubernetes checks: every release of skaffold.yaml rendered once per
session with Helm 4 (the upstream ones from ../shared/charts), and the Job a fine-tune flow run
gets from the work pool's base job template. Tools: `make k8s-tools`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from iris_testing import k8s

ROOT = k8s.ROOT
BASE_JOB_TEMPLATE = ROOT / "k8s" / "prefect" / "base-job-template.json"


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    """member -> image reference, from `make image-names`."""
    return k8s.image_names()


@pytest.fixture(scope="session")
def skaffold_values(images: dict[str, str]) -> dict[str, str]:
    """What skaffold's setValueTemplates of the iris release become for images of these names."""
    values = {}
    for key, template in k8s.skaffold_config()["deploy"]["helm"]["releases"][-1][
        "setValueTemplates"
    ].items():
        member = key.split(".")[1]
        repository, tag = images[member].rsplit(":", 1)
        assert template in {
            f"{{{{.IMAGE_REPO_iris_mlops_{member}}}}}",
            f"{{{{.IMAGE_TAG_iris_mlops_{member}}}}}",
        }, template
        values[key] = repository if "IMAGE_REPO" in template else tag
    return values


@pytest.fixture(scope="session")
def rendered(skaffold_values: dict[str, str]) -> dict[str, list[k8s.Obj]]:
    """Release name -> its objects, as skaffold.yaml installs it."""
    out = {}
    for release in k8s.skaffold_releases():
        extra = skaffold_values if release.name == "iris" else None
        out[release.name] = k8s.render_release(release, extra)
    return out


def render_flow_run_job(variables: dict[str, object], api_url: str) -> k8s.Obj:
    """The Job the Prefect Kubernetes worker creates for a flow run with these job variables,
    by prefect-kubernetes' own code (../shared/charts/prefect-job-render.py)."""
    scratch = Path(os.environ.get("TMPDIR", "/tmp"))  # noqa: S108 (a scratch file of this test run)
    variables_file = scratch / f"iris-job-variables-{os.getpid()}.json"
    variables_file.write_text(json.dumps(variables))
    try:
        done = subprocess.run(
            [sys.executable, str(k8s.SHARED_CHARTS / "prefect-job-render.py"),
             str(BASE_JOB_TEMPLATE), str(variables_file)],
            capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "PREFECT_API_URL": api_url},
        )  # fmt: skip
    finally:
        variables_file.unlink()
    assert done.returncode == 0, done.stderr[-3000:]
    job: k8s.Obj = yaml.safe_load(done.stdout)
    return job


@pytest.fixture(scope="session")
def flow_run_job(rendered: dict[str, list[k8s.Obj]], images: dict[str, str]) -> k8s.Obj:
    """The Job of a flow run of prefect.yaml's `kubernetes` deployment: its job variables (the
    image the registration Job passes), PREFECT_API_URL as the worker has it."""
    prefect_yaml = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployment = next(d for d in prefect_yaml["deployments"] if d["name"] == "kubernetes")
    variables = dict(deployment["work_pool"]["job_variables"])
    variables["image"] = images["finetune"]
    worker = k8s.one(rendered["prefect-worker"], "Deployment")
    env = {e["name"]: e.get("value") for e in k8s.pod_spec(worker)["containers"][0]["env"]}  # type: ignore[index]
    return render_flow_run_job(variables, env["PREFECT_API_URL"])
