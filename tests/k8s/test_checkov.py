"""checkov (its own environment, .tools/checkov) over our charts, offline: it ran (resources
scanned; it exits 0 when helm is missing), no failed check, and every skip has its reason
written next to it (charts/checkov.yaml, or the object's checkov.io/skip annotation)."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from iris_testing import k8s

pytestmark = pytest.mark.integration

CONFIG = k8s.ROOT / "charts" / "checkov.yaml"


@pytest.mark.parametrize("chart", ["iris", "iris-postgres"])
def test_checkov_passes(chart: str) -> None:
    env = {
        **os.environ,
        "PATH": f"{k8s.CHECKOV.parent.parent / 'helm'}:{os.environ['PATH']}",
        "BC_SKIP_MAPPING": "TRUE",
    }
    done = subprocess.run(
        [str(k8s.CHECKOV), "--config-file", str(CONFIG), "-d", f"charts/{chart}", "--quiet", "-o", "json"],
        cwd=k8s.ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    report = json.loads(done.stdout)
    summary = report["summary"]
    assert summary["resource_count"] > 5, f"checkov scanned nothing: {done.stderr[-2000:]}"
    assert summary["passed"] > 50
    failed = [(f["check_id"], f["resource"]) for f in report["results"]["failed_checks"]]
    assert not failed
    assert done.returncode == 0
    # the checks skipped for one object: annotations that carry their reason
    annotations = re.findall(
        r"checkov\.io/skip\d+: (CKV_\w+)=(.*)",
        "".join(p.read_text() for p in (k8s.ROOT / "charts" / chart / "templates").rglob("*.yaml")),
    )
    assert summary["skipped"] == len(annotations)
    assert all(reason.strip() for _, reason in annotations)


def test_every_global_skip_has_its_reason() -> None:
    lines = CONFIG.read_text().splitlines()
    start = lines.index("skip-check:")
    skips = [i for i, line in enumerate(lines) if re.fullmatch(r"  - CKV_\w+", line)]
    assert skips
    for i in skips:
        assert i > start
        assert lines[i - 1].strip().startswith("#"), f"{lines[i]}: no reason above it"
