"""Serving benchmark, one run, one machine: this API against `mlflow models serve`.

Both serve the same registered model version (ours the ONNX flavour `IrisModel`, the peer the
scikit-learn flavour `IrisDev` with `--env-manager local` and its defaults otherwise), one
uvicorn worker each, one after the other, under the same load generators:

- throughput: `wrk` (Debian package) with keep-alive connections, as fast as it can;
- the API again with IRIS_API_FAST_PATH=false (FastAPI's routing for /predict), to show what
  the fast path is worth, and with IRIS_API_INPUT_MONITORING=false (no input histograms, no
  drift window), to show what input monitoring costs;
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
import subprocess
import sys
import tempfile
import time
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench serving", description=__doc__)
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 4, 64])
    parser.add_argument("--seconds", type=int, default=10, help="per wrk or hey run")
    parser.add_argument("--rate", type=int, default=500, help="fixed rate, requests/s")
    parser.add_argument(
        "--servers", nargs="+", help="run only these (names as in the report), in this order"
    )
    args = parser.parse_args(argv)
    missing = [tool for tool in ("wrk", "hey") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"serving benchmark needs {' and '.join(missing)}: apt-get install wrk hey")

    from iris_core.params import load_params  # noqa: PLC0415
    from iris_stack.process import Service, running  # noqa: PLC0415
    from iris_stack.services import api_server, mlflow_server, ready_url  # noqa: PLC0415
    from iris_testing.ports import free_port  # noqa: PLC0415
    from iris_testing.project import copy_pipeline, member_env  # noqa: PLC0415
    from iris_training.train import train  # noqa: PLC0415

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        api_bin = member_env("iris-api", tmp / "api-venv")
        installed_mb = du_mb(tmp / "api-venv")
        with running(mlflow_server(tmp / "mlflow", free_port())) as mlflow:
            tracking = mlflow.health_url.removesuffix("/health")
            project = copy_pipeline(ROOT, tmp / "project")
            subprocess.run(
                [str(BIN / "dvc"), "repro", "prepare"], cwd=project, check=True,
                stdout=subprocess.DEVNULL, env={**os.environ, "DVC_NO_ANALYTICS": "1"},
            )  # fmt: skip
            loaded = load_params(ROOT / "params.yaml")
            p = loaded.registry
            outcome = train(
                loaded.train, p, project / "data", tmp / "m.json", tmp / "c.csv", tracking, -1
            )
            print(
                f"model: {p.onnx_model_name} / {p.sklearn_model_name} version {outcome.versions[p.onnx_model_name]}"
            )

            results: dict[str, dict[str, Numbers]] = {}
            memory: dict[str, float] = {}
            started: dict[str, float] = {}
            port = free_port()
            ours = f"http://127.0.0.1:{port}/predict"
            peer = Service(
                name="mlflow models serve",
                argv=[str(BIN / "mlflow"), "models", "serve", "-m",
                      f"models:/{p.sklearn_model_name}@{p.alias}", "--env-manager", "local",
                      "-h", "127.0.0.1", "-p", str(port)],
                health_url=f"http://127.0.0.1:{port}/ping",  # answers once the model is loaded
                log_path=tmp / "peer.log",
                env={"MLFLOW_TRACKING_URI": tracking,
                     "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
            )  # fmt: skip
            servers = {
                "iris-api": (api_server(port, tracking, tmp / "api.log", bin_dir=api_bin),
                             ours, OURS_BODY),
                "iris-api, no fast path": (
                    api_server(port, tracking, tmp / "api-route.log", bin_dir=api_bin,
                               env={"IRIS_API_FAST_PATH": "false"}),
                    ours, OURS_BODY,
                ),
                "iris-api, no input monitoring": (
                    api_server(port, tracking, tmp / "api-plain.log", bin_dir=api_bin,
                               env={"IRIS_API_INPUT_MONITORING": "false"}),
                    ours, OURS_BODY,
                ),
                "mlflow models serve": (peer, f"http://127.0.0.1:{port}/invocations", PEER_BODY),
            }  # fmt: skip
            if args.servers:
                servers = {k: v for k, v in servers.items() if k in args.servers}
            for name, (service, url, body) in servers.items():
                begin = time.perf_counter()
                with running(service) as server:
                    if server.name == "api":
                        server.wait_healthy(120, url=ready_url(server))
                    started[name] = time.perf_counter() - begin
                    wrk(url, body, 16, 3)  # warm-up, not counted
                    results[name] = {
                        f"wrk -c{c}": wrk(url, body, c, args.seconds) for c in args.connections
                    }
                    results[name][f"{args.rate}/s"] = fixed_rate(url, body, args.rate, args.seconds)
                    assert server.process is not None
                    memory[name] = rss_mb(server.process.pid)

    report(results, started, memory, installed_mb)


def report(
    results: dict[str, dict[str, Numbers]],
    started: dict[str, float],
    memory: dict[str, float],
    installed_mb: float,
) -> None:
    peer = results.get("mlflow models serve")
    print(
        f"\n{'load':<12} {'server':<30} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}   vs peer (req/s)"
    )
    for load in next(iter(results.values())):
        for name, numbers in results.items():
            row = numbers[load]
            ratio = (
                f"{row.rps / peer[load].rps:5.2f}x"
                if peer and load.startswith("wrk") and name != "mlflow models serve"
                else ""
            )
            print(
                f"{load:<12} {name:<30} {row.rps:9.0f} {row.p50_ms:8.2f} {row.p99_ms:8.2f}   {ratio}"
            )
    print("\ngoals: req/s >= 5x the peer's; p99 < 5 ms at 500 req/s")
    for name in results:
        print(
            f"{name:<30} ready after {started[name]:5.1f} s, RSS after the load {memory[name]:6.0f} MB"
        )
    print(f"iris-api environment (uv sync --package iris-api --no-dev): {installed_mb:.0f} MB")
