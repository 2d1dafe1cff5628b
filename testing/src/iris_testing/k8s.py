"""The Kubernetes side, checked offline: charts rendered with the pinned Helm 4, the releases
skaffold.yaml deploys (the upstream ones from the packaged charts in ../shared/charts), objects
validated with kubernetes-validate (its own environment) and custom resources with the shared
CRD schemas. The tools are installed by `make k8s-tools` (scripts/k8s-tools.sh) into .tools/.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from iris_stack.process import ServiceError, run_checked

ROOT = Path(__file__).resolve().parents[3]
TOOLS = ROOT / ".tools"
HELM = TOOLS / "helm" / "helm"
VALIDATE_PYTHON = TOOLS / "kubernetes-validate" / "bin" / "python"
CHECKOV = TOOLS / "checkov" / "bin" / "checkov"
#: The upstream charts (pinned), the CRD schemas and the skaffold schema, which `make
#: k8s-tools` puts there (scripts/k8s_offline.py: linked from a folder of packaged charts, or
#: pulled from the charts' repositories).
SHARED_CHARTS = TOOLS / "charts"
#: The oldest Kubernetes the project supports, and the newest kubernetes-validate knows.
KUBE_VERSIONS = ("1.31.0", "1.37.0")
#: The API group/version that gates ServiceMonitor and PrometheusRule templates.
MONITORING_API = "monitoring.coreos.com/v1"
#: The work pool's base job template (the prefect-worker release gives it to the worker).
BASE_JOB_TEMPLATE = ROOT / "k8s" / "prefect" / "base-job-template.json"

Obj = dict[str, Any]


#: A tool failed; the message carries its command, exit code and output.
ToolError = ServiceError


def run_tool(
    args: Sequence[str | Path],
    stdin: str | None = None,
    timeout_s: float = 120,
    env: Mapping[str, str] | None = None,
) -> str:
    return run_checked(args, env, stdin=stdin, timeout_s=timeout_s)


def load_all(text: str) -> list[Obj]:
    """The objects of a multi-document YAML text (empty documents dropped)."""
    return [doc for doc in yaml.safe_load_all(text) if isinstance(doc, dict)]


@dataclass(frozen=True)
class Release:
    """One Helm release as skaffold.yaml's helm deployer installs it."""

    name: str
    namespace: str
    chart: Path  # a chart folder of ours, or the packaged upstream chart
    values_files: tuple[Path, ...] = ()
    set_values: Mapping[str, Any] = field(default_factory=dict)
    set_files: Mapping[str, Path] = field(default_factory=dict)
    remote: str | None = None  # repository chart name and version, for an upstream chart
    version: str | None = None

    @property
    def upstream(self) -> bool:
        return self.remote is not None


def skaffold_config() -> Obj:
    config: Obj = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    return config


def skaffold_releases(config: Obj | None = None) -> list[Release]:
    """The releases of skaffold.yaml, in its order; an upstream one (remoteChart, version)
    points at ../shared/charts/<remoteChart>-<version>.tgz."""
    config = config or skaffold_config()
    releases = []
    for r in config["deploy"]["helm"]["releases"]:
        if "remoteChart" in r:
            chart = SHARED_CHARTS / f"{r['remoteChart']}-{r['version']}.tgz"
        else:
            chart = ROOT / r["chartPath"]
        releases.append(
            Release(
                name=r["name"],
                namespace=r.get("namespace", "default"),
                chart=chart,
                values_files=tuple(ROOT / f for f in r.get("valuesFiles", [])),
                set_values=r.get("setValues", {}),
                set_files={k: ROOT / v for k, v in r.get("setFiles", {}).items()},
                remote=r.get("remoteChart"),
                version=r.get("version"),
            )
        )
    return releases


def skaffold_image_values(images: Mapping[str, str]) -> dict[str, str]:
    """What the setValueTemplates of skaffold.yaml's iris release become for these images
    (member -> repository:tag, `image_names()`): images.<member>.repository and .tag."""
    values = {}
    (iris,) = [r for r in skaffold_config()["deploy"]["helm"]["releases"] if r["name"] == "iris"]
    for key, template in iris["setValueTemplates"].items():
        member = key.split(".")[1]
        repository, tag = images[member].rsplit(":", 1)
        if template not in {
            f"{{{{.IMAGE_REPO_iris_mlops_{member}}}}}",
            f"{{{{.IMAGE_TAG_iris_mlops_{member}}}}}",
        }:
            raise ValueError(f"skaffold.yaml: {key}: unexpected template {template}")
        values[key] = repository if "IMAGE_REPO" in template else tag
    return values


def namespace_services(rendered: Mapping[str, Sequence[Obj]], namespace: str) -> list[Obj]:
    """The Services the rendered releases (name -> objects) of skaffold.yaml make in
    `namespace`, in its order: what the kubelet turns into a pod's service links there."""
    return [
        service
        for release in skaffold_releases()
        if release.namespace == namespace and release.name in rendered
        for service in by_kind(rendered[release.name], "Service")
    ]


def helm_template(
    chart: Path,
    release: str,
    namespace: str,
    values_files: Iterable[Path] = (),
    set_values: Mapping[str, Any] | None = None,
    set_files: Mapping[str, Path] | None = None,
    api_versions: Iterable[str] = (),
    kube_version: str = KUBE_VERSIONS[0],
    extra: Sequence[str] = (),
    set_strings: Mapping[str, str] | None = None,
) -> list[Obj]:
    """`helm template` with Helm 4 (.tools/helm): the rendered objects, hooks and tests
    included; `set_values` with --set, `set_strings` with --set-string (kept strings)."""
    args: list[str | Path] = [HELM, "template", release, chart, "--namespace", namespace]
    args += ["--kube-version", kube_version]
    for f in values_files:
        args += ["--values", f]
    for key, value in (set_values or {}).items():
        args += ["--set", f"{key}={value}"]
    for key, text in (set_strings or {}).items():
        args += ["--set-string", f"{key}={text}"]
    for key, path in (set_files or {}).items():
        args += ["--set-file", f"{key}={path}"]
    for api in api_versions:
        args += ["--api-versions", api]
    return load_all(run_tool([*args, *extra]))


def render_release(
    release: Release,
    set_values: Mapping[str, Any] | None = None,
    set_strings: Mapping[str, str] | None = None,
) -> list[Obj]:
    """A release as skaffold installs it, on a cluster with the monitoring CRDs (kube-prometheus-
    stack is the second release); `set_values` stands for skaffold's templated values,
    `set_strings` for values that must stay strings."""
    return helm_template(
        release.chart,
        release.name,
        release.namespace,
        release.values_files,
        {**release.set_values, **(set_values or {})},
        release.set_files,
        api_versions=[MONITORING_API],
        set_strings=set_strings,
    )


@dataclass(frozen=True)
class Failure:
    obj: Obj
    version: str
    error: str

    def __str__(self) -> str:
        return f"{kind_name(self.obj)} (Kubernetes {self.version}): {self.error}"


def kind_name(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('name') or meta.get('generateName')}"


def kubernetes_validate(
    objects: Sequence[Obj], versions: Sequence[str] = KUBE_VERSIONS
) -> tuple[list[Failure], list[Obj]]:
    """Strict validation of every object for each version, in one process: the failures, and
    the objects kubernetes-validate has no schema for (custom resources)."""
    out = run_tool(
        [VALIDATE_PYTHON, ROOT / "scripts" / "k8s_validate.py", *versions],
        stdin=json.dumps(objects),
        timeout_s=300,
    )
    failures, unknown = [], {}
    for index, version, error in json.loads(out):
        if error == "no schema":
            unknown[index] = objects[index]
        else:
            failures.append(Failure(objects[index], version, error))
    return failures, list(unknown.values())


def validate_crs(objects: Sequence[Obj]) -> tuple[int, str]:
    """The custom resources among `objects` against their CRD's schema (closed to unknown
    fields; CEL rules not evaluated): 0 and a line each when all pass, 1 naming each problem.
    A kind whose group has a schema but not for its version fails (the CRD does not serve it)."""
    import jsonschema  # noqa: PLC0415 (the dev environment's; only these checks need it)

    schemas: dict[tuple[str, str], dict[str, Path]] = {}
    for path in (SHARED_CHARTS / "crd-schemas").glob("*.json"):
        kind, group, version = path.stem.rsplit("-", 2)
        schemas.setdefault((kind, group), {})[version] = path
    lines, checked, failed = [], 0, 0
    for obj in objects:
        group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
        versions = schemas.get((str(obj.get("kind", "")).lower(), group.split(".")[0].lower()))
        if not group or versions is None:
            continue
        checked += 1
        where = kind_name(obj)
        if version.lower() not in versions:
            failed += 1
            lines.append(f"FAIL {where}: no schema for {obj['apiVersion']}")
            continue
        validator = jsonschema.Draft7Validator(json.loads(versions[version.lower()].read_text()))
        errors = sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
        failed += bool(errors)
        lines += [
            f"FAIL {where}: {'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in errors
        ] or [f"ok   {where}"]
    lines.append(f"{checked} custom resource(s) checked, {failed} failed")
    return (1 if failed else 0), "\n".join(lines)


def containers(obj: Obj) -> Iterator[Obj]:
    """Every container and init container of a workload, Job, Pod or CronJob."""
    spec = obj.get("spec") or {}
    if obj.get("kind") == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod = spec.get("template", {}).get("spec") if obj.get("kind") != "Pod" else spec
    if not pod:
        return
    yield from pod.get("initContainers") or []
    yield from pod.get("containers") or []


def pod_spec(obj: Obj) -> Obj | None:
    if obj.get("kind") == "Pod":
        spec: Obj = obj["spec"]
        return spec
    template = (obj.get("spec") or {}).get("template")
    return template["spec"] if template else None


def pod_labels(obj: Obj) -> dict[str, str]:
    if obj.get("kind") == "Pod":
        labels: dict[str, str] = obj["metadata"].get("labels") or {}
        return labels
    return obj["spec"]["template"]["metadata"].get("labels") or {}


def selected(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """A matchLabels selector matches these labels."""
    return all(labels.get(k) == v for k, v in selector.items())


def by_kind(objects: Iterable[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o.get("kind") == kind]


def one(objects: Iterable[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    if len(found) != 1:
        raise LookupError(f"{len(found)} {kind} named {name!r}")
    return found[0]


def plain_env(container: Obj) -> dict[str, str]:
    """A container's environment variables that have a value (not from a Secret or ConfigMap)."""
    return {e["name"]: str(e["value"]) for e in container.get("env") or [] if "value" in e}


def render_flow_run_job(variables: Mapping[str, object], api_url: str) -> Obj:
    """The Job the Prefect Kubernetes worker creates for a flow run with these job variables,
    from the base job template, by prefect-kubernetes' own code and offline (an example flow
    run, no server: `python -m iris_testing.prefect_worker --offline`); `api_url` is the
    worker's PREFECT_API_URL."""
    with tempfile.TemporaryDirectory(prefix="iris-job-variables-") as scratch:
        variables_file = Path(scratch) / "variables.json"
        variables_file.write_text(json.dumps(variables))
        out = run_tool(
            [sys.executable, "-m", "iris_testing.prefect_worker", "--offline",
             BASE_JOB_TEMPLATE, variables_file],
            env={**os.environ, "PREFECT_API_URL": api_url},
        )  # fmt: skip
    job: Obj = json.loads(out)
    return job


def flow_run_jobs(
    server_api_url: str,
    flow_run_ids: Sequence[str],
    worker_env: Mapping[str, str],
    worker_name: str = "prefect-worker",
) -> list[Obj]:
    """The Jobs the Prefect Kubernetes worker creates for these flow runs of a real server,
    made by the worker's own code in a process of their own (iris_testing.prefect_worker):
    the runs, their deployments and the work pool (its base job template) are read from
    `server_api_url`; the Prefect settings among `worker_env` (the worker pod's environment,
    PREFECT_API_URL the cluster's address) are that process's, and each Job carries them as
    a worker's Jobs do."""
    with tempfile.TemporaryDirectory(prefix="iris-prefect-worker-") as home:
        env = {k: v for k, v in worker_env.items() if k.startswith("PREFECT_")}
        out = run_tool(
            [sys.executable, "-m", "iris_testing.prefect_worker", server_api_url, worker_name,
             *flow_run_ids],
            env={"PATH": os.environ.get("PATH", ""), "HOME": home, **env},
        )  # fmt: skip
    jobs: list[Obj] = json.loads(out)
    return jobs


def image_names() -> dict[str, str]:
    """`make image-names`: member -> image (repository:tag), the one place they are written."""
    out = run_tool(["make", "-s", "--no-print-directory", "-C", ROOT, "image-names"])
    return dict(line.split() for line in out.splitlines() if line.strip())


def flat_keys(values: Any, prefix: str = "") -> Iterator[str]:
    """Dotted paths of every leaf (and empty map) of a values tree; a dot within a key is
    escaped as `--set` writes it (`grafana.grafana\\.ini.server`)."""
    if isinstance(values, dict) and values:
        for key, value in values.items():
            escaped = str(key).replace(".", "\\.")
            yield from flat_keys(value, f"{prefix}{escaped}.")
    else:
        yield prefix.removesuffix(".")


def key_path(key: str) -> list[str]:
    """The keys of a dotted path (`flat_keys`, `--set`): split at dots not escaped."""
    return [part.replace("\\.", ".") for part in re.split(r"(?<!\\)\.", key)]
