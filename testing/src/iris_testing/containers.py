"""Containers for the image tests: a container described the way a pod spec describes one
(image, command, args, env, volumes, the security context), run with `docker run` and the
flags that mean the same. Every container carries a label of its session, so whatever a run
leaves behind (a test that failed half-way, a killed run) is found and removed by that label.

The hardened defaults are the chart's: user and group 10001, a read-only root filesystem with
an empty, writable /tmp (an emptyDir), every capability dropped, no privilege escalation.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The label every container of a session carries (its value: the session's id).
SESSION_LABEL = "org.iris-mlops.test-session"
#: The label the Dockerfiles put on every image of the project.
PROJECT_LABEL = "org.opencontainers.image.vendor=iris-mlops"
#: The user and group the images declare and the chart runs them as.
UID = 10001


class DockerError(RuntimeError):
    """A docker command failed; the message carries its output."""


@dataclass(frozen=True)
class Mount:
    """A host folder at `path` in the container (a volume of the pod)."""

    source: Path
    path: str
    read_only: bool = True


@dataclass(frozen=True)
class Container:
    """One container: `command` replaces the image's entrypoint and `args` its CMD, as in a
    pod spec; the rest is the security context the chart declares, the environment and the
    mounts. `network` is host by default, so the container reaches services on 127.0.0.1."""

    image: str
    args: Sequence[str] = ()
    command: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    mounts: Sequence[Mount] = ()
    user: int = UID
    read_only_root: bool = True
    tmpfs: Sequence[str] = ("/tmp",)  # noqa: S108 (a path in the container: an emptyDir)
    drop_all_capabilities: bool = True
    no_new_privileges: bool = True
    network: str = "host"
    #: docker run flags the pod spec has no word for (e.g. --health-interval).
    extra: Sequence[str] = ()

    def run_flags(self) -> list[str]:
        """The `docker run` flags, image and arguments that start this container."""
        flags = [f"--network={self.network}", f"--user={self.user}:{self.user}"]
        if self.read_only_root:
            flags.append("--read-only")
        flags += [f"--tmpfs={path}" for path in self.tmpfs]
        if self.drop_all_capabilities:
            flags.append("--cap-drop=ALL")
        if self.no_new_privileges:
            flags.append("--security-opt=no-new-privileges")
        for name, value in self.env.items():
            flags += ["--env", f"{name}={value}"]
        for mount in self.mounts:
            mode = "ro" if mount.read_only else "rw"
            flags.append(f"--volume={mount.source}:{mount.path}:{mode}")
        if self.command:
            flags.append(f"--entrypoint={self.command[0]}")
        return [*flags, *self.extra, self.image, *self.command[1:], *self.args]


@dataclass
class Docker:
    """A docker client (`binary`, default $DOCKER or `docker`) whose containers carry this
    session's label."""

    binary: str = field(default_factory=lambda: os.environ.get("DOCKER") or "docker")
    session: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __call__(self, *args: str, timeout_s: float = 120, stderr: bool = False) -> str:
        """A docker command's output (its stderr too when `stderr`); DockerError with both
        when the command fails."""
        try:
            done = subprocess.run(
                [self.binary, *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if stderr else subprocess.PIPE,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except FileNotFoundError as e:
            raise DockerError(f"{self.binary}: no docker client ({e})") from e
        if done.returncode != 0:
            raise DockerError(
                f"`docker {' '.join(args)}` failed (exit {done.returncode}):\n"
                f"{(done.stdout + (done.stderr or '')).strip()[-4000:]}"
            )
        return done.stdout

    @property
    def label(self) -> str:
        return f"{SESSION_LABEL}={self.session}"

    def start(self, container: Container, name: str) -> str:
        """Start `container` detached as `name`; its id."""
        return self("run", "--detach", f"--name={name}", f"--label={self.label}",
                    *container.run_flags()).strip()  # fmt: skip

    def run(self, container: Container, name: str, timeout_s: float) -> tuple[int, str]:
        """Run `container` as `name` to its end (kept, for `diff` and `logs`); its exit code
        and output (stdout and stderr)."""
        self.start(container, name)
        code = int(self("wait", name, timeout_s=timeout_s).strip())
        return code, self.logs(name)

    def logs(self, name: str) -> str:
        """What the container wrote to stdout and stderr."""
        return self("logs", name, stderr=True)

    def diff(self, name: str) -> list[str]:
        """What the container changed in its root filesystem (mounts and tmpfs excluded)."""
        return self("diff", name).splitlines()

    def inspect(self, kind: str, name: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = json.loads(self(kind, "inspect", name))
        return found[0]

    def remove(self, *names: str) -> None:
        if names:
            self("rm", "--force", "--volumes", *names)

    def containers(self) -> list[str]:
        """This session's containers, running or not."""
        return self("ps", "--all", "--quiet", f"--filter=label={self.label}").split()

    def remove_all(self) -> None:
        """Remove this session's containers and their anonymous volumes."""
        self.remove(*self.containers())

    def ids(self, kind: str) -> set[str]:
        """The ids of every `network` or `volume` the engine has."""
        return set(self(kind, "ls", "--quiet").split())

    def dangling_project_images(self) -> list[str]:
        """Untagged images of the project (a tag moved to a new build)."""
        return self("images", "--quiet", "--filter=dangling=true",
                    f"--filter=label={PROJECT_LABEL}").split()  # fmt: skip
