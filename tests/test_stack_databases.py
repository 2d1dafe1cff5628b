"""The stack's databases without a server: the URLs MLflow and Prefect get, the cluster's own
server told from a stale lock file's pid."""

from __future__ import annotations

import subprocess
from pathlib import Path

from iris_stack.postgres import Postgres
from iris_stack.process import alive
from iris_stack.services import mlflow_server, prefect_server


def cluster(tmp_path: Path) -> Postgres:
    """A cluster object to name URLs with (no binaries needed, nothing started)."""
    return Postgres(tmp_path / "postgres", 5433, bin_dir=tmp_path)


def test_a_backend_store_url_stays_out_of_the_process_list(tmp_path: Path) -> None:
    url = "postgresql+psycopg://mlflow:secret@127.0.0.1:5433/mlflow"
    with_pg = mlflow_server(tmp_path / "mlflow", 5000, backend_store_uri=url)
    assert not any("secret" in a for a in with_pg.argv)
    assert with_pg.env["MLFLOW_BACKEND_STORE_URI"] == url
    prefect = prefect_server(
        tmp_path / "prefect", 4200, database_url=url.replace("psycopg", "asyncpg")
    )
    assert prefect.env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg:")


def test_without_a_store_url_mlflow_and_prefect_keep_their_sqlite_files(tmp_path: Path) -> None:
    mlflow = mlflow_server(tmp_path / "mlflow", 5000)
    store = mlflow.argv[mlflow.argv.index("--backend-store-uri") + 1]
    assert store == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    assert "MLFLOW_BACKEND_STORE_URI" not in mlflow.env
    prefect = prefect_server(tmp_path / "prefect", 4200)
    assert prefect.env["PREFECT_API_DATABASE_CONNECTION_URL"] == (
        f"sqlite+aiosqlite:///{tmp_path}/prefect/prefect.db"
    )


def test_a_lock_file_naming_another_live_process_is_not_a_running_server(
    tmp_path: Path,
) -> None:
    """After a crash the pid in postmaster.pid may belong to another process by now: it is not
    taken for the server, and `stop` leaves it alone."""
    pg = cluster(tmp_path)
    pg.data_dir.mkdir(parents=True)
    other = subprocess.Popen(["sleep", "60"])
    try:
        (pg.data_dir / "postmaster.pid").write_text(f"{other.pid}\n{pg.data_dir}\n")
        assert pg.postmaster_pid() == other.pid
        assert pg.running_pid() is None
        assert pg.stop(grace_s=1) is False
        assert alive(other.pid)
    finally:
        other.kill()
        other.wait()
    (pg.data_dir / "postmaster.pid").write_text(f"{other.pid}\n")  # dead now
    assert pg.running_pid() is None
