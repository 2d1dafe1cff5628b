"""Stand-ins for the cluster tools (kind, kubectl, helm, skaffold, docker, crane, skopeo), so
the shell scripts and make targets around the cluster run here, where no cluster exists.
`install` puts one small launcher per tool into a folder for the front of PATH; each runs
this file, which logs the call (one JSON line: tool, arguments, a few environment variables)
and answers as the configuration (JSON) says. `kubectl port-forward` serves a fake of the
Service on the local port, in the same process, as the real kubectl does: the API, Prometheus
and the Prefect server, with just the answers scripts/k8s-e2e.sh asks for."""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
import time
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

TOOLS = ("kind", "kubectl", "helm", "skaffold", "docker", "crane", "skopeo")
#: `sleep` is faked too where a script's waits are to run fast: it sleeps 0.02 s, whatever it is asked.
#: What each tool prints for its version, by default (all new enough for the project).
VERSIONS = {
    "kind": "kind v0.27.0 go1.23.4 linux/amd64",
    "kubectl": "Client Version: v1.33.1\nKustomize Version: v5.6.0",
    "helm": "v4.1.4+g05fa379",
    "skaffold": "v2.19.0",
    "docker": "28.3.2",
    "buildx": "github.com/docker/buildx v0.29.1 5d2ec6a",
}
#: Environment variables a call's log line keeps.
LOGGED_ENV = ("BUILDX_NO_DEFAULT_ATTESTATIONS", "DOCKER_BUILDKIT")


#: The programs a script may use besides the fakes, for a PATH of nothing else (`system`).
SYSTEM = ("bash", "sh", "cat", "grep", "head", "mktemp", "rm", "timeout", "dirname", "env")


def install(
    folder: Path, config: Mapping[str, Any], tools: Iterable[str] = TOOLS, system: bool = False
) -> dict[str, str]:
    """Launchers for `tools` in `folder`, the configuration beside them; the environment
    (PATH first) under which the scripts find them. Keys of `config`: versions (tool ->
    output), published and local (image references the registry, the local Docker has),
    clusters (kind's), engine (false: Docker's engine does not answer), api_up ("1" or "0").
    `system`: PATH holds the fakes and SYSTEM only, so a tool left out is not installed (not
    one of this machine's)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fake-tools.json").write_text(json.dumps(config))
    real_sleep = shutil.which("sleep")
    for tool in tools:
        launcher = folder / tool
        if tool == "sleep":
            launcher.write_text(f"#!/bin/sh\nexec {real_sleep} 0.02\n")
        else:
            launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{__file__}" {tool} "$@"\n')
        launcher.chmod(0o755)
    python = folder / "python3"  # this interpreter: no version manager's shim in between
    if not python.exists():
        python.symlink_to(sys.executable)
    state = folder / "state"
    (state / "forwards").mkdir(parents=True, exist_ok=True)
    path = f"{folder}{os.pathsep}{os.environ['PATH']}"
    if system:
        (folder / "system").mkdir(exist_ok=True)
        for name in SYSTEM:
            found = shutil.which(name)
            if found and not (folder / "system" / name).exists():
                (folder / "system" / name).symlink_to(found)
        path = f"{folder}{os.pathsep}{folder / 'system'}"
    return {**os.environ, "PATH": path, "FAKE_TOOLS": str(folder)}


def calls(folder: Path) -> list[dict[str, Any]]:
    """The logged calls, in order."""
    log = folder / "state" / "calls.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def forward_pids(folder: Path) -> dict[int, str]:
    """pid -> Service of every `kubectl port-forward` that started serving."""
    forwards = folder / "state" / "forwards"
    return {int(p.name): p.read_text() for p in forwards.iterdir()}


def alive(pid: int) -> bool:
    """The process runs (a zombie, ended but not yet reaped, does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# --- the fake tools -----------------------------------------------------------------------


def _config() -> dict[str, Any]:
    config: dict[str, Any] = json.loads((_folder() / "fake-tools.json").read_text())
    return config


def _folder() -> Path:
    return Path(os.environ["FAKE_TOOLS"])


def _log(tool: str, args: list[str]) -> None:
    env = {k: os.environ[k] for k in LOGGED_ENV if k in os.environ}
    with (_folder() / "state" / "calls.jsonl").open("a") as log:
        log.write(json.dumps({"tool": tool, "args": args, "env": env}) + "\n")


def _version(tool: str) -> int:
    print(_config().get("versions", {}).get(tool, VERSIONS[tool]))
    return 0


def _image(ref: str, where: str) -> int:
    if ref in _config().get(where, []):
        print(json.dumps({"schemaVersion": 2}))
        return 0
    print(f"no such manifest: {ref}", file=sys.stderr)
    return 1


def docker(args: list[str]) -> int:
    config = _config()
    if args[:1] == ["version"]:
        if "{{.Server.Version}}" in " ".join(args) and config.get("engine") is False:
            print("Cannot connect to the Docker daemon", file=sys.stderr)
            return 1
        return _version("docker")
    if args[:2] == ["buildx", "version"]:
        return _version("buildx")
    if args[:2] == ["manifest", "inspect"]:
        return _image(args[-1], "published")
    if args[:2] == ["image", "inspect"]:
        return _image(args[-1], "local")
    return 0


def kubectl(args: list[str]) -> int:
    while args[:1] in (["--context"], ["-n"]):
        args = args[2:]
    if args[:1] == ["version"]:
        return _version("kubectl")
    if args[:1] == ["port-forward"]:
        service = args[1].removeprefix("svc/")
        local = int(args[2].split(":")[0])
        return _serve(service, local)
    if args[:2] == ["get", "deploy"]:
        print("deployment.apps/fake")
    elif args[:2] == ["get", "secret"]:
        print(base64.b64encode(f"{args[2]}-value".encode()).decode())
    elif args[:2] == ["get", "pods"]:
        print("pod/flow-run-1")
    return 0


def kind(args: list[str]) -> int:
    if args[:2] == ["get", "clusters"]:
        print("\n".join(_config().get("clusters", [])))
        return 0
    return _version("kind") if args[:1] == ["version"] else 0


def main(tool: str, args: list[str]) -> int:
    _log(tool, args)
    if tool in {"helm", "skaffold"}:
        return _version(tool) if args[:1] == ["version"] else 0
    if tool in {"crane", "skopeo"}:  # crane digest REF, skopeo inspect --raw docker://REF
        return _image(args[-1].removeprefix("docker://"), "published")
    handler = {"docker": docker, "kubectl": kubectl, "kind": kind}[tool]
    return handler(args)


# --- the Services behind a port-forward ----------------------------------------------------


class _Service(BaseHTTPRequestHandler):
    service = ""
    suggestions = 0

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = self.path
        if self.service == "iris-api" and path == "/v2/health/ready":
            self._answer(200, {"ready": True})
        elif self.service == "iris-api" and path == "/model":
            self._answer(200, {"version": "2" if _Service.suggestions >= 5 else "1"})
        elif self.service == "kps-prometheus" and path.startswith("/api/v1/query?"):
            value = str(_config().get("api_up", "1"))
            result = [{"metric": {"job": "api"}, "value": [time.time(), value]}]
            self._answer(200, {"status": "success", "data": {"result": result}})
        elif (
            self.service == "prefect-server"
            and path == "/api/deployments/name/iris-finetune/kubernetes"
        ):
            self._answer(200, {"id": "deployment-1"})
        elif self.service == "prefect-server" and path == "/api/flow_runs/run-1":
            self._answer(200, {"state": {"type": "COMPLETED"}})
        else:
            self._answer(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        bearer = self.headers.get("authorization") == f"Bearer {'iris-feedback-token-value'}"
        if self.service == "iris-api" and self.path == "/predict":
            self._answer(200, {"class_name": "Iris-setosa"})
        elif self.service == "iris-api" and self.path == "/suggest" and bearer:
            _Service.suggestions += 1
            self._answer(202, {"accepted": True})
        elif (
            self.service == "prefect-server"
            and self.path == "/api/deployments/deployment-1/create_flow_run"
        ):
            self._answer(201, {"id": "run-1", "name": "fake-run"})
        else:
            self._answer(404, {"detail": "Not Found"})


def _serve(service: str, port: int) -> int:
    handler = type("Handler", (_Service,), {"service": service})
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as e:  # as kubectl says it
        print(f"Unable to listen on port {port}: {e}", file=sys.stderr)
        print(
            f"error: unable to listen on any of the requested ports: [{{{port}}}]", file=sys.stderr
        )
        return 1
    (_folder() / "state" / "forwards" / str(os.getpid())).write_text(service)
    print(f"Forwarding from 127.0.0.1:{port} -> {service}")
    sys.stdout.flush()
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
