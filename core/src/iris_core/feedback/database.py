"""The two backends of the feedback store behind one URL: engines, transactions, locks, errors
and schema migrations. The store's logic (`iris_core.feedback.store`) is the same on both.

SQLite (`sqlite:////absolute/path.db`): WAL (readers never wait for the writer), synchronous=
FULL (a committed row survives a power cut), a busy timeout, and writes in `BEGIN IMMEDIATE`
transactions (SQLAlchemy's recipe for the sqlite3 driver), which serialise writers across
processes: a claim made in one is complete before the next reads.

PostgreSQL (`postgresql://` or `postgresql+psycopg://`, psycopg 3): READ COMMITTED, so each
statement sees what committed before it; writers that must not interleave take a transaction
advisory lock (`pg_advisory_xact_lock`), released at commit or when the session dies. Pooled
connections are pinged before use, so the store works again after a database restart, and a
short connect timeout makes a database that is down fail fast.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    URL,
    Connection,
    Engine,
    create_engine,
    event,
    func,
    inspect,
    make_url,
    select,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import ConnectionPoolEntry

from iris_core.feedback.schema import VERSION_TABLE

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory

log = logging.getLogger(__name__)

SQLITE_DRIVERS = frozenset({"sqlite", "sqlite+pysqlite"})
POSTGRES_DRIVERS = frozenset({"postgresql", "postgresql+psycopg"})

#: Advisory lock keys (one database-wide 64-bit namespace): taken shared by every `add`,
#: exclusively by a claim of pending rows, so a claim sees every row whose insert began
#: before it (acceptance order = id order); the fine-tune claims; schema migrations.
ROWS_LOCK = 0x1815_F33D_0001
FINETUNES_LOCK = 0x1815_F33D_0002
MIGRATIONS_LOCK = 0x1815_F33D_0003

#: The newest schema revision: the last of migrations/versions (a test checks that they agree).
HEAD = "4"

#: PostgreSQL ends a session that stays this long inside a transaction without a statement.
IDLE_IN_TRANSACTION_S = 60

#: Execution option that makes a SQLite transaction begin with BEGIN IMMEDIATE.
_IMMEDIATE = "iris_sqlite_immediate"


class StoreError(Exception):
    """An error of the feedback store itself (not a programming error)."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or used right now: the database is down or refuses the
    connection, the file cannot be opened, or it stayed busy beyond the timeout. Worth a
    retry later (the API answers 503 with this message); names the backend, never a password."""


#: The environment variable holding the store's URL: one for the API and the flow, which must
#: share the store.
STORE_URL = "IRIS_FEEDBACK_STORE_URL"


@dataclass(frozen=True, slots=True)
class Location:
    """Where a store lives, checked and described without its password."""

    url: URL
    postgres: bool

    @classmethod
    def parse(cls, url: str) -> Location:
        try:
            parsed = make_url(url)
        except sa_exc.ArgumentError as e:
            raise ValueError(
                "feedback store URL: expected sqlite:////absolute/path.db or "
                "postgresql://user:password@host:port/database"
            ) from e
        if parsed.drivername in SQLITE_DRIVERS:
            path = parsed.database or ""
            if not path or path == ":memory:" or not Path(path).is_absolute():
                raise ValueError(
                    f"feedback store URL {parsed.render_as_string()}: a SQLite store needs an "
                    "absolute file path (sqlite:////absolute/path.db); flow runs work in "
                    "temporary folders, and memory is not shared between processes"
                )
            return cls(parsed.set(drivername="sqlite"), postgres=False)
        if parsed.drivername in POSTGRES_DRIVERS:
            if not parsed.database:
                raise ValueError(
                    f"feedback store URL {parsed.render_as_string()}: name the database"
                )
            return cls(parsed.set(drivername="postgresql+psycopg"), postgres=True)
        raise ValueError(
            f"feedback store URL scheme {parsed.drivername!r}: use sqlite or postgresql "
            "(postgresql+psycopg)"
        )

    def __str__(self) -> str:
        u = self.url
        if not self.postgres:
            return f"SQLite {u.database}"
        user = f", user {u.username}" if u.username else ""
        return f"PostgreSQL {u.host or 'localhost'}:{u.port or 5432}/{u.database}{user}"


class Database:
    """An engine for one store with the transactions the store needs."""

    def __init__(
        self, location: Location, busy_timeout_s: float = 15.0, connect_timeout_s: int = 5
    ) -> None:
        self.location = location
        self.busy_timeout_s = busy_timeout_s
        self.engine = (
            _postgres_engine(location.url, busy_timeout_s, connect_timeout_s)
            if location.postgres
            else _sqlite_engine(location.url, busy_timeout_s)
        )
        self._writer = self.engine.execution_options(**{_IMMEDIATE: True})

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def write(self, lock: int | None = None, shared: bool = False) -> Iterator[Connection]:
        """One transaction that may write, committed when the block ends (rolled back on an
        error). SQLite: BEGIN IMMEDIATE, the database's one write lock. PostgreSQL: takes the
        advisory `lock` (shared or exclusive) first, if one is given."""
        with self._errors(), self._writer.begin() as conn:
            if self.location.postgres and lock is not None:
                take = func.pg_advisory_xact_lock_shared if shared else func.pg_advisory_xact_lock
                conn.execute(select(take(lock)))
            yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """One read-only transaction that sees a single snapshot on both backends."""
        with self._errors(), self.engine.connect() as conn:
            if self.location.postgres:
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Connection and availability errors as StoreUnavailable; others unchanged."""
        try:
            yield
        except sa_exc.TimeoutError as e:  # every pooled connection in use
            raise StoreUnavailable(
                f"feedback store ({self.location}): no free connection ({e})"
            ) from e
        except sa_exc.DBAPIError as e:
            unavailable = isinstance(e, sa_exc.OperationalError | sa_exc.InterfaceError)
            if not (unavailable or e.connection_invalidated):
                raise
            detail = (
                str(e.orig).strip().splitlines()[0] if str(e.orig).strip() else type(e).__name__
            )
            if "database is locked" in detail or "lock timeout" in detail:
                detail += f" (busy for more than {self.busy_timeout_s:g} s)"
            raise StoreUnavailable(f"feedback store ({self.location}) unavailable: {detail}") from e

    def migrate(self, target: str = HEAD) -> tuple[str, ...]:
        """Bring the schema to `target` (the newest by default); the revisions applied, none
        when it was there already. Concurrent callers migrate once: the first holds the lock
        (SQLite's write lock, PostgreSQL's advisory lock) and the others find it done."""
        with self.read() as conn:
            if _revision(conn) == target:
                return ()
        # Alembic only when there is something to migrate: it costs about 0.3 s to import.
        from alembic import command  # noqa: PLC0415
        from alembic.config import Config  # noqa: PLC0415

        scripts = migration_scripts()
        with self.write(lock=MIGRATIONS_LOCK) as conn:
            current = _revision(conn)
            if current == target:
                return ()
            if current is not None and current not in {
                s.revision for s in scripts.walk_revisions()
            }:
                raise StoreError(
                    f"feedback store ({self.location}) has schema revision {current!r}, "
                    "which this code does not know: newer code has migrated it"
                )
            config = Config()
            config.set_main_option("script_location", str(scripts.dir))
            config.attributes["connection"] = conn
            command.upgrade(config, target)
            applied = tuple(
                s.revision for s in reversed(list(scripts.iterate_revisions(target, current)))
            )
        log.info("feedback store (%s): schema migrated through %s", self.location, applied)
        return applied


def migration_scripts() -> ScriptDirectory:
    """The migrations shipped in this package."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415 (see Database.migrate)

    return ScriptDirectory(str(files("iris_core.feedback") / "migrations"))


def _revision(conn: Connection) -> str | None:
    """The schema revision recorded in the database (None for a new database)."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    found = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()  # noqa: S608
    if len(found) > 1:
        raise StoreError(f"schema version table {VERSION_TABLE} has several rows: {found}")
    return found[0] if found else None


def _sqlite_engine(url: URL, busy_timeout_s: float) -> Engine:
    assert url.database is not None  # noqa: S101 (Location.parse checked it)
    try:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreUnavailable(f"feedback store (SQLite {url.database}): {e}") from e
    engine = create_engine(
        url, connect_args={"timeout": busy_timeout_s, "check_same_thread": False}
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        # The driver's own transaction handling off: SQLAlchemy emits BEGIN (below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # stored in the file: a no-op once set
        cursor.execute("PRAGMA synchronous=FULL")  # a committed row survives a power cut
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _postgres_engine(url: URL, busy_timeout_s: float, connect_timeout_s: int) -> Engine:
    # lock_timeout: a write waits for another's lock as long as SQLite's busy timeout, then
    # fails (StoreUnavailable) instead of hanging a request. A session idle inside a
    # transaction (a client stalled or cut off without the connection closing) is ended by
    # the server, so its locks cannot block the store for long; the store's own transactions
    # never wait on their client.
    settings = {
        "lock_timeout": f"{round(busy_timeout_s * 1000)}ms",
        "idle_in_transaction_session_timeout": f"{IDLE_IN_TRANSACTION_S}s",
    }
    given = url.query.get("options") or ""  # a URL may bring its own (search_path, say)
    options = [given] if isinstance(given, str) else list(given)
    options += [f"-c {name}={value}" for name, value in settings.items()]
    return create_engine(
        url.update_query_dict({"options": " ".join(options).strip()}),
        pool_pre_ping=True,
        isolation_level="READ COMMITTED",
        connect_args={
            "connect_timeout": connect_timeout_s,
            "application_name": "iris-feedback-store",
        },
    )
