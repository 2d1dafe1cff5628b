"""Serving benchmark, one run, one machine: this API against `mlflow models serve`, MLServer,
and the ceiling of its own server stack.

All serve the same registered model version, one uvicorn worker each, one after the other, under
the same load generators:

- this API, from its own environment (`uv sync --package iris-api --no-dev`, as in its image),
  the ONNX flavour `IrisModel`: `POST /predict` (JSON), and the Open Inference Protocol's infer
  for the identical row as JSON and as binary tensors both ways (what tritonclient sends by
  default); again with IRIS_API_FAST_PATH=false (FastAPI's routing), to show what the fast path
  is worth; with IRIS_API_INPUT_MONITORING=false on request (`--servers`);
- `mlflow models serve` of the scikit-learn flavour `IrisDev` (`--env-manager local`), from the
  development environment, on its `/invocations`;
- MLServer with mlserver-sklearn (pinned below, in a throwaway virtual environment, next to the
  scikit-learn version that trained the model), serving that same scikit-learn version: the
  estimator loaded from MLflow and written with joblib, which mlserver-sklearn reads. It runs
  with `parallel_workers: 0` (inference on its event loop), because its inference pool process
  dies at start here ("There is no current event loop"). It gets the identical V2 JSON request;
- a bare ASGI app answering a constant (bench/ceiling.py) on the API's uvicorn, uvloop and
  httptools: the ceiling of the server stack.

Load: throughput with `wrk` (Debian package) on keep-alive connections, as fast as it can; a
fixed rate with `hey -q` (Debian package) at 500 requests/s on one connection, evenly spaced
(hey's `-q` is per connection, so more connections would fire in bursts), latency per request
from its CSV output. The load generator shares the cores with the server.

With `--baseline-ref REF`, the API is also built from that git ref (`git archive` into a
temporary folder, the same `uv sync`), and every API row gets a twin from it, measured right
after it with the same settings and load, and printed with its ratio to the current API: a
before/after comparison from one run on one machine. With `--rounds N` every server runs N
times, the servers taking turns, and the medians are reported: on a machine shared with other
work, a busy moment then spoils one round, not one server's row.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from iris_core import FEATURES

if TYPE_CHECKING:
    from iris_core.params import RegistryParams
    from iris_stack.process import Service

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ROW = (5.1, 3.5, 1.4, 0.2)
#: MLServer and its scikit-learn runtime, installed at bench time next to our scikit-learn.
MLSERVER = ("mlserver==1.7.1", "mlserver-sklearn==1.7.1")
MLSERVER_NAME = "MLServer 1.7.1 (sklearn)"
CEILING = "ASGI ceiling"
MLFLOW = "mlflow models serve"


@dataclass(frozen=True)
class Load:
    """One request, sent over and over: where, its body, its headers (Content-Type included)."""

    url: str
    body: bytes
    headers: dict[str, str]


def json_load(url: str, body: object) -> Load:
    return Load(url, json.dumps(body).encode(), {"Content-Type": "application/json"})


#: The one row of every load, as each server takes it.
PREDICT = dict(zip(FEATURES, ROW, strict=True))
V2_JSON = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": list(ROW)}]}
MLFLOW_BODY = {"inputs": [list(ROW)]}


def v2_binary(url: str) -> Load:
    """The row as binary tensor data, the outputs asked for as binary (tritonclient's default)."""
    data = np.asarray([ROW], dtype="<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {"name": "input", "shape": [1, 4], "datatype": "FP32",
                 "parameters": {"binary_data_size": len(data)}}
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()  # fmt: skip
    return Load(
        url,
        header + data,
        {"Content-Type": "application/octet-stream",
         "Inference-Header-Content-Length": str(len(header))},
    )  # fmt: skip


@dataclass
class Numbers:
    rps: float
    p50_ms: float
    p99_ms: float
    #: The server's CPU time per answered request (us): what an answer costs, which other work
    #: on the machine changes far less than the rates and latencies.
    cpu_us: float = math.nan


def _wrk_ms(text: str, percent: str) -> float:
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == percent:
            value = parts[1]
            for unit, scale in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
                if value.endswith(unit):
                    return float(value.removesuffix(unit)) * scale
    raise ValueError(f"no {percent} line in wrk output:\n{text}")


def _lua_string(data: bytes) -> str:
    """`data` as a Lua string literal, bytes outside printable ASCII as 3-digit escapes."""
    printable = {ord(c) for c in " !#$%&'()*+,-./:;<=>?@[]^_`{|}~"} | set(b"0123456789")
    printable |= set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return '"' + "".join(chr(b) if b in printable else f"\\{b:03d}" for b in data) + '"'


def wrk(load: Load, connections: int, seconds: int, pid: int | None = None) -> Numbers:
    """Throughput and latency under `connections` keep-alive connections; with the server's
    `pid`, its CPU time per request too."""
    url = load.url
    cpu = cpu_s(pid) if pid else math.nan
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write('wrk.method = "POST"\n')
        for name, value in load.headers.items():
            script.write(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}\n")
        script.write(f"wrk.body = {_lua_string(load.body)}\n")
    # A 10 s timeout (wrk's is 2 s): a slow answer is measured, not dropped as an error.
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "--latency",
         "-s", script.name, url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    Path(script.name).unlink()
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors against {url}:\n{out}")
    cpu = cpu_s(pid) - cpu if pid else math.nan
    rps = float(
        next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec"))
    )
    requests = int(next(line.split()[0] for line in out.splitlines() if " requests in " in line))
    return Numbers(rps, _wrk_ms(out, "50%"), _wrk_ms(out, "99%"), cpu / requests * 1e6)


def fixed_rate(load: Load, rate: int, seconds: int, pid: int | None = None) -> Numbers:
    url = load.url
    cpu = cpu_s(pid) if pid else math.nan
    with tempfile.NamedTemporaryFile("wb", suffix=".body", delete=False) as body:
        body.write(load.body)
    headers = [
        a for k, v in load.headers.items() if k != "Content-Type" for a in ("-H", f"{k}: {v}")
    ]
    out = subprocess.run(
        ["hey", "-z", f"{seconds}s", "-c", "1", "-q", str(rate), "-m", "POST",
         "-T", load.headers["Content-Type"], *headers, "-D", body.name, "-o", "csv", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    Path(body.name).unlink()
    cpu = cpu_s(pid) - cpu if pid else math.nan
    rows = list(csv.DictReader(io.StringIO(out)))
    bad = [r for r in rows if r["status-code"] != "200"]
    if bad:
        raise RuntimeError(f"{len(bad)} of {len(rows)} answers were not 200 at {url}")
    latency = np.array([float(r["response-time"]) for r in rows]) * 1000
    return Numbers(
        len(rows) / seconds,
        float(np.percentile(latency, 50)),
        float(np.percentile(latency, 99)),
        cpu / len(rows) * 1e6,
    )


def _tree(pid: int) -> Iterator[str]:
    """/proc/PID/stat of a process and its descendants (the peer forks uvicorn)."""
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        yield stat
        pids += [int(c) for c in children]


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants."""
    # stat fields after the command's closing parenthesis: rss (pages) is field 24.
    pages = sum(int(stat.rpartition(")")[2].split()[21]) for stat in _tree(pid))
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def cpu_s(pid: int) -> float:
    """CPU time (user + system, s) a process and its descendants have used so far."""
    ticks = 0
    for stat in _tree(pid):
        fields_ = stat.rpartition(")")[2].split()
        ticks += int(fields_[11]) + int(fields_[12])  # utime, stime: fields 14 and 15
    return ticks / os.sysconf("SC_CLK_TCK")


def du_mb(path: Path) -> float:
    return (
        sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench serving",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 4, 64])
    parser.add_argument("--seconds", type=int, default=10, help="per wrk or hey run")
    parser.add_argument("--rate", type=int, default=500, help="fixed rate, requests/s")
    parser.add_argument(
        "--rounds", type=int, default=1, help="runs of every server, in turns; medians reported"
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        help="run only these (names as in the report), in this order; "
        f"{OPTIONAL!r} only when named",
    )
    parser.add_argument(
        "--baseline-ref",
        metavar="REF",
        help="also run each API row with the API of this git ref (branch, tag, commit)",
    )
    args = parser.parse_args(argv)
    missing = [tool for tool in ("wrk", "hey") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"serving benchmark needs {' and '.join(missing)}: apt-get install wrk hey")

    from iris_stack.process import running  # noqa: PLC0415
    from iris_stack.services import mlflow_server  # noqa: PLC0415
    from iris_testing.ports import free_port  # noqa: PLC0415
    from iris_testing.project import member_env  # noqa: PLC0415

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    wanted = args.servers or []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        api_bin = member_env("iris-api", tmp / "api-venv")
        installed_mb = du_mb(tmp / "api-venv")
        baseline = _baseline_env(args.baseline_ref, tmp) if args.baseline_ref else None
        with running(mlflow_server(tmp / "mlflow", free_port())) as mlflow:
            tracking = mlflow.health_url.removesuffix("/health")
            p, version = _register_model(tmp, tracking)
            port = free_port()
            servers, twins = _api_servers(port, tracking, tmp, api_bin, baseline)
            servers[MLFLOW] = _mlflow_serve(port, tracking, p, tmp)
            if not wanted or MLSERVER_NAME in wanted:
                servers[MLSERVER_NAME] = _mlserver(port, tracking, p, version, tmp)
            servers[CEILING] = _ceiling(port, tmp, api_bin)
            if wanted:
                chosen = [n for name in wanted for n in (name, twins.get(name))]
                servers = {name: servers[name] for name in chosen if name in servers}
            else:
                servers = {name: s for name, s in servers.items() if name not in OPTIONAL}
            results, started, memory = measure(
                servers, args.connections, args.seconds, args.rate, args.rounds
            )

    report(results, started, memory, installed_mb, twins)


#: The API rows: name, what is sent, the environment.
API_ROWS: dict[str, tuple[str, dict[str, str]]] = {
    "iris-api /predict": ("predict", {}),
    "iris-api V2 JSON": ("v2-json", {}),
    "iris-api V2 binary": ("v2-binary", {}),
    "iris-api /predict, no fast path": ("predict", {"IRIS_API_FAST_PATH": "false"}),
    "iris-api V2 JSON, no fast path": ("v2-json", {"IRIS_API_FAST_PATH": "false"}),
    "iris-api /predict, no input monitoring": ("predict", {"IRIS_API_INPUT_MONITORING": "false"}),
}
#: Rows run only when named with --servers.
OPTIONAL = frozenset({"iris-api /predict, no input monitoring"})


def _api_servers(
    port: int, tracking: str, tmp: Path, api_bin: Path, baseline: tuple[str, Path] | None
) -> tuple[dict[str, tuple[Service, Load]], dict[str, str]]:
    """The API rows (and their baseline twins, by the current row's name)."""
    from iris_stack.services import api_server  # noqa: PLC0415

    base = f"http://127.0.0.1:{port}"
    loads = {
        "predict": json_load(f"{base}/predict", PREDICT),
        "v2-json": json_load(f"{base}/v2/models/iris/infer", V2_JSON),
        "v2-binary": v2_binary(f"{base}/v2/models/iris/infer"),
    }
    servers: dict[str, tuple[Service, Load]] = {}
    twins: dict[str, str] = {}
    for i, (name, (load, env)) in enumerate(API_ROWS.items()):
        api = api_server(port, tracking, tmp / f"api-{i}.log", bin_dir=api_bin, env=env)
        servers[name] = (api, loads[load])
        if baseline is not None:
            twins[name] = f"{name} @{baseline[0]}"
            log = tmp / f"base-{i}.log"
            twin = api_server(port, tracking, log, bin_dir=baseline[1], env=env)
            servers[twins[name]] = (twin, loads[load])
    return servers, twins


def _mlflow_serve(port: int, tracking: str, p: RegistryParams, tmp: Path) -> tuple[Service, Load]:
    from iris_stack.process import Service  # noqa: PLC0415

    peer = Service(
        name=MLFLOW,
        argv=[str(BIN / "mlflow"), "models", "serve", "-m",
              f"models:/{p.sklearn_model_name}@{p.alias}", "--env-manager", "local",
              "-h", "127.0.0.1", "-p", str(port)],
        health_url=f"http://127.0.0.1:{port}/ping",  # answers once the model is loaded
        log_path=tmp / "peer.log",
        env={"MLFLOW_TRACKING_URI": tracking, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
    )  # fmt: skip
    return peer, json_load(f"http://127.0.0.1:{port}/invocations", MLFLOW_BODY)


def _mlserver(
    port: int, tracking: str, p: RegistryParams, version: str, tmp: Path
) -> tuple[Service, Load]:
    """MLServer in a virtual environment of its own (pinned, with our scikit-learn), serving
    the registered scikit-learn version as `iris` (joblib, which mlserver-sklearn reads)."""
    import joblib  # noqa: PLC0415
    import mlflow  # noqa: PLC0415
    import sklearn  # noqa: PLC0415

    from iris_stack.process import Service  # noqa: PLC0415
    from iris_testing.ports import free_port  # noqa: PLC0415

    venv = tmp / "mlserver-venv"
    uv = os.environ.get("UV") or shutil.which("uv") or str(ROOT / "scripts" / "uv.sh")
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), *MLSERVER,
         f"scikit-learn=={sklearn.__version__}"],
        check=True,
    )  # fmt: skip
    folder = tmp / "mlserver"
    folder.mkdir()
    mlflow.set_tracking_uri(tracking)
    estimator = mlflow.sklearn.load_model(f"models:/{p.sklearn_model_name}/{version}")
    joblib.dump(estimator, folder / "model.joblib")
    settings = {
        "host": "127.0.0.1", "http_port": port, "grpc_port": free_port(),
        "metrics_port": free_port(), "parallel_workers": 0, "debug": False,
    }  # fmt: skip
    (folder / "settings.json").write_text(json.dumps(settings))
    model = {
        "name": "iris",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": version},
    }
    (folder / "model-settings.json").write_text(json.dumps(model))
    server = Service(
        name=MLSERVER_NAME,
        argv=[str(venv / "bin" / "mlserver"), "start", str(folder)],
        health_url=f"http://127.0.0.1:{port}/v2/models/iris/ready",
        log_path=tmp / "mlserver.log",
        env={"PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"},
        cwd=folder,
    )
    return server, json_load(f"http://127.0.0.1:{port}/v2/models/iris/infer", V2_JSON)


def _ceiling(port: int, tmp: Path, api_bin: Path) -> tuple[Service, Load]:
    """bench/ceiling.py on the API environment's uvicorn, with `iris-api`'s server options."""
    from iris_stack.process import Service  # noqa: PLC0415

    server = Service(
        name=CEILING,
        argv=[str(api_bin / "python"), "-m", "uvicorn", "--app-dir", str(ROOT),
              "bench.ceiling:app", "--host", "127.0.0.1", "--port", str(port),
              "--loop", "uvloop", "--http", "httptools", "--no-access-log",
              "--no-proxy-headers", "--no-server-header", "--log-level", "warning"],
        health_url=f"http://127.0.0.1:{port}/",
        log_path=tmp / "ceiling.log",
    )  # fmt: skip
    return server, json_load(f"http://127.0.0.1:{port}/v2/models/iris/infer", V2_JSON)


def _register_model(tmp: Path, tracking: str) -> tuple[RegistryParams, str]:
    """The project's pipeline up to `prepare` in a copy, then training with its params: a
    registered version of both models at MLflow `tracking`; the names and the version."""
    from iris_core.params import load_params  # noqa: PLC0415
    from iris_testing.project import copy_pipeline  # noqa: PLC0415
    from iris_training.train import train  # noqa: PLC0415

    project = copy_pipeline(ROOT, tmp / "project")
    subprocess.run(
        [str(BIN / "dvc"), "repro", "prepare"], cwd=project, check=True,
        stdout=subprocess.DEVNULL, env={**os.environ, "DVC_NO_ANALYTICS": "1"},
    )  # fmt: skip
    loaded = load_params(ROOT / "params.yaml")
    p = loaded.registry
    outcome = train(loaded.train, p, project / "data", tmp / "m.json", tmp / "c.csv", tracking, -1)
    version = outcome.versions[p.onnx_model_name]
    print(f"model: {p.onnx_model_name} / {p.sklearn_model_name} version {version}")
    return p, outcome.versions[p.sklearn_model_name]


def measure(
    servers: dict[str, tuple[Service, Load]],
    connections: list[int],
    seconds: int,
    rate: int,
    rounds: int,
) -> tuple[dict[str, dict[str, Numbers]], dict[str, float], dict[str, float]]:
    """Each server in turn, alone: started, warmed up, loaded; `rounds` times over, the servers
    taking turns, so that other work on the machine falls on all of them alike. Per server and
    load the median of each number over the rounds; the median seconds until ready; the
    largest RSS (MB) after the load."""
    from iris_stack.process import running  # noqa: PLC0415
    from iris_stack.services import ready_url  # noqa: PLC0415

    runs: dict[str, dict[str, list[Numbers]]] = {name: {} for name in servers}
    started: dict[str, list[float]] = {name: [] for name in servers}
    memory: dict[str, float] = dict.fromkeys(servers, 0.0)
    for i in range(rounds):
        for name, (service, load) in servers.items():
            begin = time.perf_counter()
            with running(service) as server:
                if server.name == "api":
                    server.wait_healthy(120, url=ready_url(server))
                started[name].append(time.perf_counter() - begin)
                assert server.process is not None
                pid = server.process.pid
                wrk(load, 16, 3)  # warm-up, not counted
                for c in connections:
                    runs[name].setdefault(f"wrk -c{c}", []).append(wrk(load, c, seconds, pid))
                at_rate = fixed_rate(load, rate, seconds, pid)
                runs[name].setdefault(f"{rate}/s", []).append(at_rate)
                memory[name] = max(memory[name], rss_mb(pid))
            print(
                f"round {i + 1} {name}: "
                + ", ".join(f"{load} {n[-1].rps:.0f}/s" for load, n in runs[name].items()),
                flush=True,
            )
    results = {
        name: {load: _median(numbers) for load, numbers in loads.items()}
        for name, loads in runs.items()
    }
    return results, {name: statistics.median(t) for name, t in started.items()}, memory


def _median(numbers: list[Numbers]) -> Numbers:
    """Each field's median: a round disturbed by other work on the machine does not count."""
    return Numbers(
        *(statistics.median(getattr(n, f.name) for n in numbers) for f in fields(Numbers))
    )


def report(
    results: dict[str, dict[str, Numbers]],
    started: dict[str, float],
    memory: dict[str, float],
    installed_mb: float,
    twins: dict[str, str],
) -> None:
    """One row per load and server, with its req/s as a ratio to MLServer's and as a share of
    the ceiling's; a baseline row also gives its ratios to the current API's row: req/s under
    wrk (p99 at the fixed rate) and CPU time per request. Then the goals."""
    peer = results.get(MLSERVER_NAME)
    ceiling = results.get(CEILING)
    current = {twin: name for name, twin in twins.items()}
    print(
        f"\n{'load':<10} {'server':<40} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'CPU us':>7}"
        f" {'vs MLServer':>11} {'of ceiling':>10}   {'vs current' if twins else ''}"
    )
    for load in next(iter(results.values())):
        for name, numbers in results.items():
            row = numbers[load]
            wrk_load = load.startswith("wrk")
            vs_peer = f"{row.rps / peer[load].rps:.2f}x" if peer and wrk_load else ""
            share = f"{row.rps / ceiling[load].rps:.0%}" if ceiling and wrk_load else ""
            vs_current = ""
            if name in current:
                now = results[current[name]][load]
                speed = (
                    f"{row.rps / now.rps:5.2f}x req/s"
                    if wrk_load
                    else f"{row.p99_ms / now.p99_ms:5.2f}x p99"
                )
                vs_current = f"{speed:<12} {row.cpu_us / now.cpu_us:5.2f}x CPU"
            print(
                f"{load:<10} {name:<40} {row.rps:7.0f} {row.p50_ms:7.2f} {row.p99_ms:7.2f}"
                f" {row.cpu_us:7.0f} {vs_peer:>11} {share:>10}   {vs_current}"
            )
    _goals(results)
    print()
    for name in results:
        print(
            f"{name:<40} ready after {started[name]:5.1f} s, RSS after the load {memory[name]:6.0f} MB"
        )
    print(f"iris-api environment (uv sync --package iris-api --no-dev): {installed_mb:.0f} MB")


def _goals(results: dict[str, dict[str, Numbers]]) -> None:
    """The serving goals, each as measured in this run (where its rows were run)."""
    v2, predict = results.get("iris-api V2 JSON"), results.get("iris-api /predict")
    peer, ceiling = results.get(MLSERVER_NAME), results.get(CEILING)
    at_rate = next((load for load in next(iter(results.values())) if load.endswith("/s")), None)
    print("\ngoals (16 connections unless said):")
    c16 = "wrk -c16"
    if v2 and peer and c16 in v2:
        print(f"  V2 JSON infer vs MLServer:   {v2[c16].rps / peer[c16].rps:5.2f}x   (goal >= 5x)")
    if v2 and predict and c16 in v2:
        print(
            f"  V2 JSON infer vs /predict:   {v2[c16].rps / predict[c16].rps:5.0%}   (goal >= 90%)"
        )
    if predict and ceiling and c16 in predict:
        print(
            f"  /predict of the ceiling:     {predict[c16].rps / ceiling[c16].rps:5.0%}   (goal >= 30%)"
        )
    if v2 and peer and at_rate:
        print(
            f"  V2 JSON p99 at {at_rate}: {v2[at_rate].p99_ms:.2f} ms vs MLServer's p50 "
            f"{peer[at_rate].p50_ms:.2f} ms   (goal: below)"
        )
    if predict and at_rate:
        print(f"  /predict p99 at {at_rate}: {predict[at_rate].p99_ms:.2f} ms   (goal < 5 ms)")


def _baseline_env(ref: str, tmp: Path) -> tuple[str, Path]:
    """The API's own environment as committed at git `ref`: its short hash and the bin/.
    The sources come from `git archive` (the repository and its worktrees are left alone) and
    go once installed (without --editable, the environment holds its own copy)."""
    from iris_testing.project import member_env  # noqa: PLC0415

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "--verify", f"{ref}^{{commit}}"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    source = tmp / f"source-{commit}"
    source.mkdir()
    archive = subprocess.Popen(["git", "archive", commit], cwd=ROOT, stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(source)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise RuntimeError(f"git archive {commit} failed")
    try:
        return commit, member_env("iris-api", tmp / f"venv-{commit}", root=source)
    finally:
        shutil.rmtree(source)
