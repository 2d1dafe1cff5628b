"""The offline Kubernetes checks' upstream material, in `.tools/charts/` (`make k8s-tools`):

    charts:  <chart>-<version>.tgz for every remote release of skaffold.yaml, pinned
    crd-schemas/<kind>-<group prefix>-<version>.json: the custom resources we render, strict
    skaffold-schema/v4beta14.json: skaffold.yaml's schema

From a folder that already holds them (IRIS_SHARED_CHARTS, default ../shared/charts: packaged
for machines without the chart repositories), linked; else pulled: the charts with `helm pull`
from the repositories skaffold.yaml names, the CRD schemas made from the pulled charts' own
CRDs (every object closed to unknown fields, as `kubectl apply` with strict field validation
treats them), the skaffold schema from its repository. Without either, it stops and says where
it looked.

    python scripts/k8s_offline.py HELM TOOLS_DIR
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SKAFFOLD_SCHEMA = (
    "https://raw.githubusercontent.com/GoogleContainerTools/skaffold/"
    "359a940c1b26e9aecfad508c1e87a679ec86e49b/"
    "docs-v2/content/en/schemas/v4beta14.json"
)
#: The custom resources the releases render: kind, API group.
CUSTOM_RESOURCES = {
    ("ServiceMonitor", "monitoring.coreos.com"),
    ("PodMonitor", "monitoring.coreos.com"),
    ("PrometheusRule", "monitoring.coreos.com"),
    ("IngressRoute", "traefik.io"),
    ("Middleware", "traefik.io"),
}


def pinned() -> list[tuple[str, str, str]]:
    """(repository, chart, version) of every remote release of skaffold.yaml."""
    config = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    return [
        (r["repo"], r["remoteChart"], str(r["version"]))
        for r in config["deploy"]["helm"]["releases"]
        if "remoteChart" in r
    ]


def complete(folder: Path) -> bool:
    charts = all((folder / f"{c}-{v}.tgz").is_file() for _, c, v in pinned())
    schemas = (folder / "skaffold-schema" / "v4beta14.json").is_file()
    return charts and schemas and (folder / "crd-schemas").is_dir()


def strict(schema: Any) -> Any:
    """The CRD's schema with every object closed to fields it does not name."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            out.get("type") == "object"
            and "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def crd_schemas(charts: list[Path], out: Path) -> list[str]:
    """The schemas of the custom resources we render, from the CRDs inside `charts`."""
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for chart in charts:
        with tarfile.open(chart) as tar:
            for member in tar.getmembers():
                # plain CRD files ship in a chart's crds/ folders (templates are not YAML yet)
                if not member.name.endswith((".yaml", ".yml")) or "/crds/" not in member.name:
                    continue
                extracted = tar.extractfile(member)
                if extracted is None:
                    continue
                try:
                    docs = list(yaml.safe_load_all(extracted.read()))
                except yaml.YAMLError:
                    continue
                for doc in docs:
                    if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                        continue
                    spec = doc["spec"]
                    kind, group = spec["names"]["kind"], spec["group"]
                    if (kind, group) not in CUSTOM_RESOURCES:
                        continue
                    for version in spec["versions"]:
                        schema = strict(version["schema"]["openAPIV3Schema"])
                        name = f"{kind}-{group.split('.')[0]}-{version['name']}.json".lower()
                        (out / name).write_text(json.dumps(schema, indent=1))
                        made.append(name)
    return made


def pull(helm: str, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for repo, chart, version in pinned():
        if not (target / f"{chart}-{version}.tgz").is_file():
            subprocess.run(
                [helm, "pull", chart, "--repo", repo, "--version", version, "-d", str(target)],
                check=True, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
    crd_schemas(sorted(target.glob("*.tgz")), target / "crd-schemas")
    with urllib.request.urlopen(SKAFFOLD_SCHEMA, timeout=60) as answer:
        schema = answer.read()
    (target / "skaffold-schema").mkdir(exist_ok=True)
    (target / "skaffold-schema" / "v4beta14.json").write_bytes(schema)


def main() -> None:
    helm, tools = sys.argv[1], Path(sys.argv[2])
    link = tools / "charts"
    shared = Path(os.environ.get("IRIS_SHARED_CHARTS", ROOT.parent / "shared" / "charts"))
    if complete(shared):
        if link.is_symlink() or not link.exists():
            link.unlink(missing_ok=True)
            link.symlink_to(shared.resolve(), target_is_directory=True)
        return
    if link.exists() and complete(link):
        return
    try:
        with tempfile.TemporaryDirectory(dir=tools) as scratch:
            pull(helm, Path(scratch) / "charts")
            link.unlink(missing_ok=True)
            (Path(scratch) / "charts").rename(link)
    except (subprocess.CalledProcessError, OSError, ValueError) as e:
        detail = getattr(e, "stderr", None) or str(e)
        sys.exit(
            "k8s-tools: the pinned charts are neither in a folder of packaged charts "
            f"({shared}; set IRIS_SHARED_CHARTS to another) nor reachable at their "
            f"repositories ({', '.join(sorted({r for r, _, _ in pinned()}))}): {detail.strip()}"
        )


if __name__ == "__main__":
    main()
