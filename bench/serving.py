"""Serving benchmark, one run, one machine: this API against `mlflow models serve`.

Both serve the same registered model version (ours the ONNX flavour `IrisModel`, the peer the
scikit-learn flavour `IrisDev` with `--env-manager local` and its defaults otherwise), one
uvicorn worker each, one after the other, under the same load generators:

- throughput: `wrk` (Debian package) with keep-alive connections, as fast as it can;
- the API again with IRIS_API_FAST_PATH=false (FastAPI's routing for /predict), to show what
  the fast path is worth;
- fixed rate: `hey -q` (Debian package) at 500 requests/s on one connection, evenly spaced
  (hey's `-q` is per connection, so more connections would fire in bursts), latency per request
  from its CSV output.

The API runs from its own environment (`uv sync --package iris-api --no-dev`), as in its image;
the peer from the development environment, where MLflow is installed.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iris_core import FEATURES

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ROW = (5.1, 3.5, 1.4, 0.2)
OURS_BODY = json.dumps(dict(zip(FEATURES, ROW, strict=True)))
PEER_BODY = json.dumps({"inputs": [list(ROW)]})


@dataclass
class Numbers:
    rps: float
    p50_ms: float
    p99_ms: float


def _wrk_ms(text: str, percent: str) -> float:
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == percent:
            value = parts[1]
            for unit, scale in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
                if value.endswith(unit):
                    return float(value.removesuffix(unit)) * scale
    raise ValueError(f"no {percent} line in wrk output:\n{text}")


def wrk(url: str, body: str, connections: int, seconds: int) -> Numbers:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(body)}\n"
        )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name, url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    Path(script.name).unlink()
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors against {url}:\n{out}")
    rps = float(
        next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec"))
    )
    return Numbers(rps, _wrk_ms(out, "50%"), _wrk_ms(out, "99%"))


def fixed_rate(url: str, body: str, rate: int, seconds: int) -> Numbers:
    out = subprocess.run(
        ["hey", "-z", f"{seconds}s", "-c", "1", "-q", str(rate), "-m", "POST",
         "-T", "application/json", "-d", body, "-o", "csv", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(out)))
    bad = [r for r in rows if r["status-code"] != "200"]
    if bad:
        raise RuntimeError(f"{len(bad)} of {len(rows)} answers were not 200 at {url}")
    latency = np.array([float(r["response-time"]) for r in rows]) * 1000
    return Numbers(
        len(rows) / seconds, float(np.percentile(latency, 50)), float(np.percentile(latency, 99))
    )


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants (the peer forks uvicorn)."""
    total = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        total += int(next(x.split()[1] for x in status.splitlines() if x.startswith("VmRSS")))
        pids += [int(c) for c in children]
    return total / 1024


def du_mb(path: Path) -> float:
    return (
        sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20
    )


def wait_for(url: str, timeout_s: float, body: str | None = None) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        try:
            request = urllib.request.Request(  # noqa: S310 (loopback)
                url,
                data=body.encode() if body else None,
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=2) as r:  # noqa: S310 (loopback)
                if r.status == 200:
                    return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as f:
        return subprocess.Popen(
            argv, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench serving", description=__doc__)
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 4, 64])
    parser.add_argument("--seconds", type=int, default=10, help="per wrk or hey run")
    parser.add_argument("--rate", type=int, default=500, help="fixed rate, requests/s")
    args = parser.parse_args(argv)
    missing = [tool for tool in ("wrk", "hey") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"serving benchmark needs {' and '.join(missing)}: apt-get install wrk hey")

    from iris_stack.services import free_port, mlflow_server, running  # noqa: PLC0415
    from iris_training.params import load_params  # noqa: PLC0415
    from iris_training.train import train  # noqa: PLC0415
    from tests.support import copy_pipeline  # noqa: PLC0415

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    uv = os.environ.get("UV") or shutil.which("uv") or str(ROOT / ".tools" / "uv" / "bin" / "uv")
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        venv = tmp / "api-venv"
        subprocess.run(
            [uv, "sync", "--frozen", "--no-dev", "--package", "iris-api", "--no-editable", "-q"],
            cwd=ROOT, env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_COMPILE_BYTECODE": "1"},
            check=True,
        )  # fmt: skip
        installed_mb = du_mb(venv)
        with running(mlflow_server(tmp / "mlflow", free_port())) as mlflow:
            tracking = mlflow.health_url.removesuffix("/health")
            project = copy_pipeline(ROOT, tmp / "project")
            subprocess.run(
                [str(BIN / "dvc"), "repro", "prepare"], cwd=project, check=True,
                stdout=subprocess.DEVNULL, env={**os.environ, "DVC_NO_ANALYTICS": "1"},
            )  # fmt: skip
            p = load_params(ROOT / "params.yaml").train
            outcome = train(p, project / "data", tmp / "m.json", tmp / "c.csv", tracking, n_jobs=-1)
            print(
                f"model: {p.onnx_model_name} / {p.sklearn_model_name} version {outcome.versions[p.onnx_model_name]}"
            )

            results: dict[str, dict[str, Numbers]] = {}
            memory: dict[str, float] = {}
            started: dict[str, float] = {}
            port = free_port()
            env = {**os.environ, "IRIS_API_PORT": str(port), "IRIS_API_TRACKING_URI": tracking,
                   "ORT_DISABLE_TELEMETRY": "1"}  # fmt: skip
            servers = {
                "iris-api": (
                    [str(venv / "bin" / "iris-api")], env,
                    f"http://127.0.0.1:{port}/predict", OURS_BODY,
                ),
                "iris-api, no fast path": (
                    [str(venv / "bin" / "iris-api")], {**env, "IRIS_API_FAST_PATH": "false"},
                    f"http://127.0.0.1:{port}/predict", OURS_BODY,
                ),
                "mlflow models serve": (
                    [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{p.sklearn_model_name}@{p.alias}",
                     "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                    {**os.environ, "MLFLOW_TRACKING_URI": tracking,
                     "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
                    f"http://127.0.0.1:{port}/invocations", PEER_BODY,
                ),
            }  # fmt: skip
            for name, (cmd, server_env, url, body) in servers.items():
                process = start(cmd, server_env, tmp / f"{name}.log")
                try:
                    started[name] = wait_for(url, 120, body)
                    wrk(url, body, 16, 3)  # warm-up, not counted
                    results[name] = {
                        f"wrk -c{c}": wrk(url, body, c, args.seconds) for c in args.connections
                    }
                    results[name][f"{args.rate}/s"] = fixed_rate(url, body, args.rate, args.seconds)
                    memory[name] = rss_mb(process.pid)
                finally:
                    stop(process)

    report(results, started, memory, installed_mb)


def report(
    results: dict[str, dict[str, Numbers]],
    started: dict[str, float],
    memory: dict[str, float],
    installed_mb: float,
) -> None:
    peer = results["mlflow models serve"]
    print(
        f"\n{'load':<12} {'server':<24} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}   vs peer (req/s)"
    )
    for load in results["iris-api"]:
        for name, numbers in results.items():
            row = numbers[load]
            ratio = (
                f"{row.rps / peer[load].rps:5.2f}x"
                if load.startswith("wrk") and name != "mlflow models serve"
                else ""
            )
            print(
                f"{load:<12} {name:<24} {row.rps:9.0f} {row.p50_ms:8.2f} {row.p99_ms:8.2f}   {ratio}"
            )
    print("\ngoals: req/s >= 5x the peer's; p99 < 5 ms at 500 req/s")
    for name in results:
        print(
            f"{name:<24} ready after {started[name]:5.1f} s, RSS after the load {memory[name]:6.0f} MB"
        )
    print(f"iris-api environment (uv sync --package iris-api --no-dev): {installed_mb:.0f} MB")
