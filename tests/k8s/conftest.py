"""Fixtures of the offline Kubernetes checks: every release of skaffold.yaml rendered once per
session with Helm 4 (the upstream ones from ../shared/charts), and the Job a fine-tune flow run
gets from the work pool's base job template. Tools: `make k8s-tools`."""

from __future__ import annotations

import pytest
import yaml

from iris_testing import k8s

ROOT = k8s.ROOT


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    """member -> image reference, from `make image-names`."""
    return k8s.image_names()


@pytest.fixture(scope="session")
def skaffold_values(images: dict[str, str]) -> dict[str, str]:
    """What skaffold's setValueTemplates of the iris release become for images of these names."""
    return k8s.skaffold_image_values(images)


@pytest.fixture(scope="session")
def rendered(skaffold_values: dict[str, str]) -> dict[str, list[k8s.Obj]]:
    """Release name -> its objects, as skaffold.yaml installs it."""
    out = {}
    for release in k8s.skaffold_releases():
        extra = skaffold_values if release.name == "iris" else None
        out[release.name] = k8s.render_release(release, extra)
    return out


@pytest.fixture(scope="session")
def flow_run_job(rendered: dict[str, list[k8s.Obj]], images: dict[str, str]) -> k8s.Obj:
    """The Job of a flow run of prefect.yaml's `kubernetes` deployment: its job variables (the
    image the registration Job passes), PREFECT_API_URL as the worker has it."""
    prefect_yaml = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployment = next(d for d in prefect_yaml["deployments"] if d["name"] == "kubernetes")
    variables = dict(deployment["work_pool"]["job_variables"])
    variables["image"] = images["finetune"]
    worker = k8s.one(rendered["prefect-worker"], "Deployment")
    (container,) = [c for c in k8s.containers(worker) if c["name"] == "prefect-worker"]
    env = k8s.plain_env(container)
    return k8s.render_flow_run_job(variables, env["PREFECT_API_URL"])
