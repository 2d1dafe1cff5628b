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
OURS_BODY = json.dumps(dict(zip(FEATURES, ROW, strict=True)))
PEER_BODY = json.dumps({"inputs": [list(ROW)]})


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


def wrk(url: str, body: str, connections: int, seconds: int, pid: int | None = None) -> Numbers:
    """Throughput and latency under `connections` keep-alive connections; with the server's
    `pid`, its CPU time per request too."""
    cpu = cpu_s(pid) if pid else math.nan
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(body)}\n"
        )
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


def fixed_rate(url: str, body: str, rate: int, seconds: int, pid: int | None = None) -> Numbers:
    cpu = cpu_s(pid) if pid else math.nan
    out = subprocess.run(
        ["hey", "-z", f"{seconds}s", "-c", "1", "-q", str(rate), "-m", "POST",
         "-T", "application/json", "-d", body, "-o", "csv", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
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
    parser = argparse.ArgumentParser(prog="python -m bench serving", description=__doc__)
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 4, 64])
    parser.add_argument("--seconds", type=int, default=10, help="per wrk or hey run")
    parser.add_argument("--rate", type=int, default=500, help="fixed rate, requests/s")
    parser.add_argument(
        "--rounds", type=int, default=1, help="runs of every server, in turns; medians reported"
    )
    parser.add_argument(
        "--servers", nargs="+", help="run only these (names as in the report), in this order"
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

    from iris_stack.process import Service, running  # noqa: PLC0415
    from iris_stack.services import api_server, mlflow_server  # noqa: PLC0415
    from iris_testing.ports import free_port  # noqa: PLC0415
    from iris_testing.project import member_env  # noqa: PLC0415

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        api_bin = member_env("iris-api", tmp / "api-venv")
        installed_mb = du_mb(tmp / "api-venv")
        baseline = _baseline_env(args.baseline_ref, tmp) if args.baseline_ref else None
        with running(mlflow_server(tmp / "mlflow", free_port())) as mlflow:
            tracking = mlflow.health_url.removesuffix("/health")
            p = _register_model(tmp, tracking)

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
            variants = {
                "iris-api": {},
                "iris-api, no fast path": {"IRIS_API_FAST_PATH": "false"},
                "iris-api, no input monitoring": {"IRIS_API_INPUT_MONITORING": "false"},
            }
            servers: dict[str, tuple[Service, str, str]] = {}
            #: The baseline twin of each API row, by the current row's name.
            twins: dict[str, str] = {}
            for i, (name, env) in enumerate(variants.items()):
                api = api_server(port, tracking, tmp / f"api-{i}.log", bin_dir=api_bin, env=env)
                servers[name] = (api, ours, OURS_BODY)
                if baseline is not None:
                    twins[name] = f"{name} @{baseline[0]}"
                    log = tmp / f"base-{i}.log"
                    twin = api_server(port, tracking, log, bin_dir=baseline[1], env=env)
                    servers[twins[name]] = (twin, ours, OURS_BODY)
            servers["mlflow models serve"] = (
                peer, f"http://127.0.0.1:{port}/invocations", PEER_BODY
            )  # fmt: skip
            if args.servers:
                chosen = [n for name in args.servers for n in (name, twins.get(name))]
                servers = {name: servers[name] for name in chosen if name in servers}
            results, started, memory = measure(
                servers, args.connections, args.seconds, args.rate, args.rounds
            )

    report(results, started, memory, installed_mb, twins)


def _register_model(tmp: Path, tracking: str) -> RegistryParams:
    """The project's pipeline up to `prepare` in a copy, then training with its params: a
    registered version of both models at MLflow `tracking`; the names registered."""
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
    return p


def measure(
    servers: dict[str, tuple[Service, str, str]],
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
        for name, (service, url, body) in servers.items():
            begin = time.perf_counter()
            with running(service) as server:
                if server.name == "api":
                    server.wait_healthy(120, url=ready_url(server))
                started[name].append(time.perf_counter() - begin)
                assert server.process is not None
                pid = server.process.pid
                wrk(url, body, 16, 3)  # warm-up, not counted
                for c in connections:
                    runs[name].setdefault(f"wrk -c{c}", []).append(wrk(url, body, c, seconds, pid))
                at_rate = fixed_rate(url, body, rate, seconds, pid)
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
    """One row per load and server; a baseline row also gives its ratios to the current API's
    row: req/s under wrk (p99 at the fixed rate) and CPU time per request."""
    peer = results.get("mlflow models serve")
    current = {twin: name for name, twin in twins.items()}
    print(
        f"\n{'load':<12} {'server':<40} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us':>7}"
        f"   {'vs peer':>7}   {'vs current' if twins else ''}"
    )
    for load in next(iter(results.values())):
        for name, numbers in results.items():
            row = numbers[load]
            wrk_load = load.startswith("wrk")
            vs_peer = (
                f"{row.rps / peer[load].rps:6.2f}x"
                if peer and wrk_load and name != "mlflow models serve"
                else ""
            )
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
                f"{load:<12} {name:<40} {row.rps:9.0f} {row.p50_ms:8.2f} {row.p99_ms:8.2f}"
                f" {row.cpu_us:7.0f}   {vs_peer:>7}   {vs_current}"
            )
    print("\ngoals: req/s >= 5x the peer's; p99 < 5 ms at 500 req/s")
    for name in results:
        print(
            f"{name:<40} ready after {started[name]:5.1f} s, RSS after the load {memory[name]:6.0f} MB"
        )
    print(f"iris-api environment (uv sync --package iris-api --no-dev): {installed_mb:.0f} MB")


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
