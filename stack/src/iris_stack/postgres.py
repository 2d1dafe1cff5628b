"""A local PostgreSQL server for the embedded stack and the tests: one cluster under one folder.

The binaries come from the distribution's package (Debian: `postgresql`). The server listens on
one address and port (127.0.0.1 by default) and keeps its Unix socket, log and data under the
folder. PostgreSQL refuses to run as root: when root, every server command runs as the `postgres`
system user (the folder is handed over to it); otherwise as the calling user.

Connections over TCP need a role's password (scram-sha-256); the superuser logs in only through
the Unix socket in the folder, which only the folder's owner (and root) can reach. That is how
roles and databases are created here, with `psql` from the same binaries.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from iris_stack.process import Service, ServiceError, alive, gone_within
from iris_stack.services import LOOPBACK

#: Where Debian's packages put each major version's server binaries (<version>/bin).
DEBIAN_ROOT = Path("/usr/lib/postgresql")
#: Role and database names this helper accepts: plain SQL identifiers, no quoting surprises.
NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
#: The longest Unix socket path Linux accepts (sun_path, without the final NUL).
MAX_SOCKET_PATH = 107


def find_bin_dir() -> Path:
    """The folder holding `postgres`, `initdb`, `pg_isready` and `psql` of one major version:
    the one on PATH (links resolved), else the newest Debian package's."""
    for name in ("postgres", "pg_ctl"):  # Debian links pg_ctl, not postgres, into PATH
        found = shutil.which(name)
        if found and (Path(found).resolve().parent / "postgres").exists():
            return Path(found).resolve().parent
    installed = [p.parent for p in DEBIAN_ROOT.glob("*/bin/postgres")]
    if installed:
        return max(installed, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    raise ServiceError(
        "PostgreSQL server binaries not found (looked on PATH and in /usr/lib/postgresql/*/bin): "
        "install them (Debian: apt-get install postgresql) or pass bin_dir"
    )


def _check_name(kind: str, name: str) -> str:
    if not NAME.match(name):
        raise ValueError(f"{kind} name {name!r}: use lower-case letters, digits and _")
    return name


@dataclass
class PostgresService(Service):
    """The server process of a `Postgres` cluster: healthy once it accepts connections; stopped
    with a fast shutdown (sessions ended, a clean checkpoint) before any SIGKILL."""

    cluster: Postgres | None = None

    def healthy(self, url: str) -> bool:
        """Whether the server accepts connections (`url` names it: PostgreSQL does not speak
        HTTP)."""
        assert self.cluster is not None  # noqa: S101 (set by Postgres.service)
        return self.cluster.ready()

    def stop(self, grace_s: float = 30.0) -> None:
        if self.cluster is not None:
            self.cluster.stop(grace_s)
        super().stop(grace_s=1.0)  # reaps the process; kills the group only if it still runs


@dataclass
class Postgres:
    """One PostgreSQL cluster: data in `folder`/data; socket, log and pid under `folder`."""

    folder: Path
    port: int
    host: str = LOOPBACK
    superuser: str = "iris"
    #: The system user the server runs as; default `postgres` when root, else the caller.
    os_user: str | None = None
    bin_dir: Path = field(default_factory=find_bin_dir)

    def __post_init__(self) -> None:
        self.folder = self.folder.resolve()
        _check_name("superuser", self.superuser)
        if self.os_user is None and os.geteuid() == 0:
            self.os_user = "postgres"
        socket = self.folder / f".s.PGSQL.{self.port}"
        if len(str(socket)) > MAX_SOCKET_PATH:
            raise ServiceError(f"{socket}: a Unix socket path is limited to 107 bytes")

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def log_path(self) -> Path:
        return self.folder / "postgres.log"

    def _as_owner(self, argv: list[str]) -> list[str]:
        """`argv` run as the system user owning the cluster (dropping root's privileges)."""
        if self.os_user is None:
            return argv
        user = self.os_user
        return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--", *argv]

    def _run(self, argv: list[str], what: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, check=False, cwd=self.folder
        )
        if result.returncode != 0:
            raise ServiceError(
                f"{what} failed (exit {result.returncode}): "
                f"{(result.stdout + result.stderr).strip()[-2000:]}"
            )
        return result.stdout

    def _prepare_folder(self) -> None:
        """The folder exists, belongs to the server's system user, who can reach it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.os_user is None:
            return
        entry = pwd.getpwnam(self.os_user)
        os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        self.folder.chmod(0o700)
        probe = subprocess.run(
            self._as_owner(["test", "-w", str(self.folder), "-a", "-x", str(self.folder)]),
            check=False,
        )
        if probe.returncode != 0:
            raise ServiceError(
                f"the {self.os_user} user cannot reach {self.folder} (a parent folder is "
                "closed to it): put the cluster where it can, such as under /tmp or /var/lib"
            )

    def init(self, sync: bool = True) -> bool:
        """Create the cluster unless it exists (True when created). `sync=False` skips the
        final fsync (about 2 s): for throwaway clusters such as the tests'."""
        if (self.data_dir / "PG_VERSION").exists():
            return False
        self._prepare_folder()
        pwfile = self.folder / ".superuser-password"
        # initdb wants a superuser password to enable password authentication; nobody needs
        # it afterwards (the superuser connects through the socket), so it is not kept.
        pwfile.write_text(secrets.token_urlsafe(24) + "\n")
        pwfile.chmod(0o600)
        if self.os_user is not None:
            entry = pwd.getpwnam(self.os_user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        try:
            self._run(
                self._as_owner([
                    str(self.bin_dir / "initdb"), "-D", str(self.data_dir),
                    "-U", self.superuser, f"--pwfile={pwfile}",
                    "--auth-local=trust", "--auth-host=scram-sha-256",
                    "-E", "UTF8", "--locale=C", *([] if sync else ["--no-sync"]),
                ]),
                f"initdb {self.data_dir}",
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        return True

    def service(self, settings: Mapping[str, str] | None = None) -> PostgresService:
        """The server as a `Service` (start, wait_healthy, stop); `settings` are extra server
        parameters (`-c name=value`)."""
        extra = [f"-c{name}={value}" for name, value in (settings or {}).items()]
        return PostgresService(
            name="postgres",
            argv=self._as_owner([
                str(self.bin_dir / "postgres"), "-D", str(self.data_dir),
                "-p", str(self.port), "-k", str(self.folder),
                f"-clisten_addresses={self.host}", *extra,
            ]),
            health_url=f"postgresql://{self.host}:{self.port}",
            log_path=self.log_path,
            cluster=self,
        )  # fmt: skip

    def ready(self) -> bool:
        """True when the server accepts connections on its address and port."""
        argv = [str(self.bin_dir / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port)]
        return subprocess.run(argv, check=False, timeout=10).returncode == 0

    def postmaster_pid(self) -> int | None:
        """The running server's pid from its lock file, if any."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def running_pid(self) -> int | None:
        """The pid of this cluster's server if it runs. A lock file left by a server that
        crashed names a dead process, or one that reused its pid: neither counts (the server
        itself replaces such a file when it starts)."""
        pid = self.postmaster_pid()
        if pid is None or not alive(pid):
            return None
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return pid  # no /proc to ask: trust the lock file
        return pid if os.fsencode(self.data_dir) in argv else None

    def stop(self, grace_s: float = 30.0) -> bool:
        """A fast shutdown (what `pg_ctl stop -m fast` sends), waiting up to `grace_s` for the
        server to exit; works whichever process started it. False if none was running."""
        pid = self.running_pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        if gone_within(pid, grace_s, poll_s=0.05):
            return True
        raise ServiceError(f"postgres (pid {pid}) still runs {grace_s:g} s after a fast shutdown")

    def psql(self, sql: str, variables: Mapping[str, str] | None = None) -> str:
        """Run `sql` as the superuser through the socket (psql variables: `:'name'` quotes a
        value); its output, or ServiceError with psql's message."""
        argv = [
            str(self.bin_dir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-h", str(self.folder), "-p", str(self.port), "-U", self.superuser, "-d", "postgres",
        ]  # fmt: skip
        for name, value in (variables or {}).items():
            argv += ["-v", f"{name}={value}"]
        return self._run(argv, "psql", stdin=sql)

    def create_role(self, name: str, password: str) -> None:
        """A role that logs in with `password` (created, or its password set again)."""
        self.psql(
            "SELECT format(CASE WHEN EXISTS (SELECT FROM pg_roles WHERE rolname = :'role')"
            " THEN 'ALTER ROLE %I LOGIN PASSWORD %L' ELSE 'CREATE ROLE %I LOGIN PASSWORD %L'"
            " END, :'role', :'password') \\gexec\n",
            {"role": _check_name("role", name), "password": password},
        )

    def create_database(self, name: str, owner: str) -> None:
        """A database owned by role `owner`, unless it exists."""
        self.psql(
            "SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner') "
            "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \\gexec\n",
            {"db": _check_name("database", name), "owner": _check_name("role", owner)},
        )

    def drop_database(self, name: str) -> None:
        """Drop a database if it exists, ending its sessions."""
        self.psql(
            "SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', :'db') \\gexec\n",
            {"db": _check_name("database", name)},
        )

    def url(self, database: str, user: str, password: str, driver: str = "postgresql") -> str:
        """A client URL for `database` as `user` over TCP (`driver`: e.g. postgresql+psycopg
        for SQLAlchemy, postgresql+asyncpg for Prefect)."""
        credentials = f"{quote(user, safe='')}:{quote(password, safe='')}"
        return f"{driver}://{credentials}@{self.host}:{self.port}/{quote(database, safe='')}"
