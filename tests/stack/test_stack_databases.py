"""The stack's databases without a server: the switch, the secrets `up` generates and keeps
(roles' passwords, the /suggest token), the URLs and settings each service gets, what the
summary shows. tests/stack/test_pipeline.py runs the stack on a real PostgreSQL cluster."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from iris_core.feedback.database import Location
from iris_stack import cli
from iris_stack.databases import (
    ROLES,
    feedback_token,
    postgres_databases,
    role_passwords,
    sqlite_databases,
)
from iris_stack.postgres import Postgres
from iris_stack.process import ServiceError, alive
from iris_stack.services import mlflow_server, prefect_server
from iris_stack.settings import StackSettings


def cli_result(command: str, state: Path, **env: str) -> Result:
    return CliRunner().invoke(cli.app, [command], env={"IRIS_STATE_DIR": str(state), **env})


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_sqlite_is_the_default_and_postgres_gets_its_own_port() -> None:
    settings = StackSettings()
    assert (settings.database, settings.postgres_port) == ("sqlite", 5433)


def test_a_feedback_token_is_made_once_for_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "feedback.token"
    token = feedback_token(path)
    assert len(token) >= 40
    assert mode(path) == 0o600
    assert path.read_text() == token + "\n"
    assert feedback_token(path) == token


def test_a_token_file_others_can_read_is_narrowed_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "feedback.token"
    path.write_text("a-token-of-my-own-choosing\n")
    path.chmod(0o644)
    assert feedback_token(path) == "a-token-of-my-own-choosing"
    assert mode(path) == 0o600


@pytest.mark.parametrize("text", ["", "two words of a token", "short\n"])
def test_a_token_file_that_holds_no_token_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "feedback.token"
    path.write_text(text)
    with pytest.raises(ServiceError, match=r"feedback.token: expected one token .* delete"):
        feedback_token(path)


def test_role_passwords_are_made_once_in_a_password_file(tmp_path: Path) -> None:
    path = tmp_path / "postgres.pgpass"
    passwords = role_passwords(path, "127.0.0.1", 5433)
    assert list(passwords) == list(ROLES)
    assert len(set(passwords.values())) == 3
    assert mode(path) == 0o600
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert lines == [f"127.0.0.1:5433:{r}:{r}:{passwords[r]}" for r in ROLES]
    written = path.stat().st_mtime_ns
    assert role_passwords(path, "127.0.0.1", 5433) == passwords
    assert path.stat().st_mtime_ns == written  # unchanged: not written again


def test_role_passwords_follow_the_port_and_fill_in_a_missing_role(tmp_path: Path) -> None:
    path = tmp_path / "postgres.pgpass"
    path.write_text("127.0.0.1:5433:mlflow:mlflow:kept-password\n")
    passwords = role_passwords(path, "127.0.0.1", 5544)
    assert passwords["mlflow"] == "kept-password"
    assert set(passwords) == set(ROLES)
    assert "127.0.0.1:5544:mlflow:mlflow:kept-password\n" in path.read_text()
    assert ":5433:" not in path.read_text()
    assert mode(path) == 0o600


@pytest.mark.parametrize(
    "line", ["no colons", "h:1:mlflow:other:pw", "h:1:grafana:grafana:pw", "h:1:prefect:prefect:"]
)
def test_a_password_file_line_that_is_not_ours_is_refused_by_number(
    tmp_path: Path, line: str
) -> None:
    path = tmp_path / "postgres.pgpass"
    path.write_text(f"# comment\n{line}\n")
    with pytest.raises(ServiceError, match=r"postgres.pgpass, line 2: expected host:port"):
        role_passwords(path, "127.0.0.1", 5433)


def cluster(tmp_path: Path) -> Postgres:
    """A cluster object to name URLs with (no binaries needed, nothing started)."""
    return Postgres(tmp_path / "postgres", 5433, bin_dir=tmp_path)


def test_each_client_gets_the_url_form_it_can_use(tmp_path: Path) -> None:
    passwords = dict.fromkeys(ROLES, "pw")
    urls = postgres_databases(cluster(tmp_path), passwords)
    assert urls.mlflow == "postgresql+psycopg://mlflow:pw@127.0.0.1:5433/mlflow"
    assert urls.prefect == "postgresql+asyncpg://prefect:pw@127.0.0.1:5433/prefect"
    assert urls.feedback == "postgresql://feedback:pw@127.0.0.1:5433/feedback"
    # The feedback store's own parser takes it, and describes it without the password.
    assert str(Location.parse(urls.feedback)) == "PostgreSQL 127.0.0.1:5433/feedback, user feedback"


def test_with_sqlite_the_store_url_is_the_absolute_file(tmp_path: Path) -> None:
    settings = StackSettings(state_dir=tmp_path / "state")
    urls = sqlite_databases(settings)
    assert (urls.mlflow, urls.prefect) == (None, None)  # their own files, as before
    assert urls.feedback == f"sqlite:///{tmp_path}/state/feedback.db"
    assert urls.feedback.startswith("sqlite:////")
    assert str(Location.parse(urls.feedback)) == f"SQLite {tmp_path}/state/feedback.db"


def test_the_api_and_the_worker_get_the_store_and_the_api_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IRIS_API_PREFECT_CONCURRENCY", raising=False)
    settings = StackSettings(state_dir=tmp_path)
    urls = sqlite_databases(settings)
    token = "a-token-for-the-test"  # noqa: S105
    api = cli.api_env(settings, urls, token)
    assert api["IRIS_FEEDBACK_STORE_URL"] == urls.feedback
    assert api["IRIS_API_FEEDBACK_TOKEN"] == token
    assert "IRIS_API_PREFECT_CONCURRENCY" not in api  # SQLite: the API's default, 1
    assert cli.worker_env(urls) == {"IRIS_FEEDBACK_STORE_URL": urls.feedback}
    pg = StackSettings(state_dir=tmp_path, database="postgres")
    pg_urls = postgres_databases(cluster(tmp_path), dict.fromkeys(ROLES, "pw"))
    api = cli.api_env(pg, pg_urls, token)
    assert api["IRIS_API_PREFECT_CONCURRENCY"] == "4"
    assert api["IRIS_FEEDBACK_STORE_URL"] == pg_urls.feedback
    assert cli.worker_env(pg_urls)["IRIS_FEEDBACK_STORE_URL"] == pg_urls.feedback
    monkeypatch.setenv("IRIS_API_PREFECT_CONCURRENCY", "2")  # the user's choice stands
    assert "IRIS_API_PREFECT_CONCURRENCY" not in cli.api_env(pg, pg_urls, token)


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


def summary(settings: StackSettings) -> str:
    rows = cli.summary_rows(settings, [], prometheus=False)
    assert max(len(key) for key, _ in rows) <= len("API (Swagger)")  # the column stays put
    return "\n".join(f"{key}  {value}" for key, value in rows)


def test_the_summary_says_where_the_token_is_and_how_to_send_it(tmp_path: Path) -> None:
    text = summary(StackSettings(state_dir=tmp_path))
    token = tmp_path / "feedback.token"
    assert f"Suggest token  {token} " in text
    assert f'curl -H "Authorization: Bearer $(cat {token})" --json ' in text
    assert '"class_name":"Iris-setosa"}\' http://127.0.0.1:8000/suggest' in text
    assert f"Feedback DB  {tmp_path}/feedback.db" in text
    assert "PostgreSQL" not in text


def test_the_summary_names_the_databases_and_the_password_file_never_a_password(
    tmp_path: Path,
) -> None:
    settings = StackSettings(state_dir=tmp_path, database="postgres", postgres_port=5544)
    passwords = role_passwords(settings.postgres_credentials, settings.host, 5544)
    text = summary(settings)
    assert "Databases  PostgreSQL 127.0.0.1:5544: mlflow, prefect, feedback" in text
    assert f"DB passwords  {tmp_path}/postgres.pgpass (PGPASSFILE=" in text
    assert "Feedback DB  PostgreSQL 127.0.0.1:5544/feedback" in text
    assert not [p for p in passwords.values() if p in text]


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


def test_down_with_a_stale_postgres_pid_file_stops_nothing(tmp_path: Path) -> None:
    (tmp_path / "postgres.pid").write_text("999999\n")
    result = cli_result("down", tmp_path)
    assert result.exit_code == 0, result.output
    assert "nothing to stop" in result.stdout
    assert not (tmp_path / "postgres.pid").exists()


def test_a_bad_database_setting_names_its_variable(tmp_path: Path) -> None:
    result = cli_result("up", tmp_path, IRIS_DATABASE="mysql")
    assert result.exit_code == 2, result.exception
    assert "IRIS_DATABASE='mysql': Input should be 'sqlite' or 'postgres'" in result.stderr
