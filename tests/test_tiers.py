"""The unit tier holds: tests/conftest.py marks every test not marked `integration` as `unit`,
stops the collection when a unit test uses a fixture that starts a server, and fails a unit test
that starts a server program. Checked on small test files run by pytest in this process."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import POPEN

pytest_plugins = ["pytester"]

#: The inner runs use the project's conftest, its markers and --strict-markers.
CONFTEST = """
from tests.conftest import (
    INTEGRATION_FIXTURES,
    _unit_tests_start_no_server,
    mlflow_url,
    pytest_collection_modifyitems,
)
"""
INI = """
[pytest]
addopts = --strict-markers -p no:cacheprovider
markers =
    unit: unit
    integration: integration
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    # Lift this (unit) test's own guard: the inner runs set theirs.
    monkeypatch.setattr(subprocess, "Popen", POPEN)
    pytester.makeconftest(CONFTEST)
    pytester.makeini(INI)
    return pytester


def test_tests_not_marked_integration_are_unit(inner: pytest.Pytester) -> None:
    path = inner.makepyfile(
        test_a="""
        import pytest

        def test_plain():
            pass

        @pytest.mark.integration
        def test_marked():
            pass
        """
    )
    inner.runpytest_inprocess(path, "-m", "unit").assert_outcomes(passed=1, deselected=1)
    inner.runpytest_inprocess(path, "-m", "integration").assert_outcomes(passed=1, deselected=1)


def test_a_unit_test_starting_a_server_program_fails_and_an_integration_test_may(
    inner: pytest.Pytester,
) -> None:
    path = inner.makepyfile(
        test_b="""
        import subprocess
        import pytest

        def test_unit_starts_mlflow():
            subprocess.run(["/somewhere/bin/mlflow", "server"], check=False)

        def test_unit_starts_one_of_ours():
            subprocess.Popen(["iris-not-installed"])

        def test_unit_runs_a_small_tool():
            assert subprocess.run(["true"], check=False).returncode == 0

        @pytest.mark.integration
        def test_integration_may():
            with pytest.raises(FileNotFoundError):  # not stopped by the guard: it ran
                subprocess.run(["iris-no-such-command"], check=False)
        """
    )
    result = inner.runpytest_inprocess(path)
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*a unit test started `mlflow`: mark the test `integration`*",
            "*a unit test started `iris-not-installed`: mark the test `integration`*",
        ]
    )


def test_a_unit_test_using_a_server_fixture_stops_the_collection(inner: pytest.Pytester) -> None:
    path = inner.makepyfile(
        test_c="""
        def test_needs_mlflow(mlflow_url):
            pass
        """
    )
    result = inner.runpytest_inprocess(path)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*mark these tests `integration`*", "*test_c.py::test_needs_mlflow uses mlflow_url*"]
    )
