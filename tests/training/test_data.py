"""Data tests: the fetch and prepare stages on real files, a real HTTP server and the CLI."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris

from iris_core import CLASS_NAMES, FEATURES
from iris_core.params import Erratum, Feature
from iris_testing.data import Archive, make_zip, uci_lines
from iris_testing.ports import free_port
from iris_training.data import DataError
from iris_training.fetch import fetch
from iris_training.prepare import prepare

BIN = Path(sys.executable).parent


def read_split(path: Path) -> np.ndarray:
    return np.loadtxt(path, delimiter=",", ndmin=2)


def fisher_rows() -> Counter[tuple[float, ...]]:
    iris = load_iris()
    return Counter(
        (*tuple(round(v, 1) for v in x), float(t))
        for x, t in zip(iris.data, iris.target, strict=True)
    )


def test_feature_names_agree_with_core() -> None:
    assert Feature.__args__ == FEATURES  # type: ignore[attr-defined]


# --- fetch ---------------------------------------------------------------------------------------


def test_fetch_downloads_checks_and_writes_the_uci_file(
    uci_server: Archive, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "data.csv"
    with caplog.at_level(logging.INFO):
        source = fetch(uci_server.url, "iris.data", 5, out)
    assert source == "uci"
    assert "source=uci" in caplog.text
    assert out.read_text().splitlines() == uci_lines()  # content kept, trailing blanks dropped
    assert out.read_text().splitlines()[34] == "4.9,3.1,1.5,0.1,Iris-setosa"  # errata still there


def test_fetch_falls_back_to_scikit_learn_without_network(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "data.csv"
    closed = f"http://127.0.0.1:{free_port()}/iris.zip"  # nothing listens there
    with caplog.at_level(logging.INFO):
        source = fetch(closed, "iris.data", 5, out)
    assert source == "scikit-learn"
    assert "using scikit-learn's copy" in caplog.text
    lines = out.read_text().splitlines()
    assert len(lines) == 150
    assert lines[0] == "5.1,3.5,1.4,0.2,Iris-setosa"
    assert lines[34] == "4.9,3.1,1.5,0.2,Iris-setosa"  # Fisher's corrected sample 35


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (uci_lines(n=149), ["149 rows instead of 150", "Iris-virginica: 49 rows instead of 50"]),
        (
            [
                *uci_lines(n=100),
                *(line.replace("virginica", "versicolor") for line in uci_lines()[100:]),
            ],
            ["Iris-versicolor: 100 rows instead of 50", "Iris-virginica: 0 rows instead of 50"],
        ),
        ([*uci_lines()[:10], "5.1,3.5,1.4,Iris-setosa"], ["!iris.data:11: expected 5"]),
    ],
    ids=["missing-row", "wrong-class-counts", "short-row"],
)
def test_fetch_stops_on_unexpected_content(
    uci_server: Archive, tmp_path: Path, lines: list[str], expected: list[str]
) -> None:
    uci_server.payload = make_zip(lines)
    out = tmp_path / "data.csv"
    with pytest.raises(DataError) as error:
        fetch(uci_server.url, "iris.data", 5, out)
    for text in expected:
        assert text in str(error.value)
    assert not out.exists()


def test_fetch_names_a_missing_member_and_a_non_zip(uci_server: Archive, tmp_path: Path) -> None:
    uci_server.payload = make_zip(uci_lines(), member="other.data")
    with pytest.raises(DataError, match=r"no member 'iris\.data'"):
        fetch(uci_server.url, "iris.data", 5, tmp_path / "a.csv")
    uci_server.payload = b"<html>moved</html>"
    with pytest.raises(DataError, match="not a zip archive"):
        fetch(uci_server.url, "iris.data", 5, tmp_path / "b.csv")
    with pytest.raises(DataError, match="HTTP 404"):
        fetch(uci_server.url.replace("iris.zip", "nope.zip"), "iris.data", 5, tmp_path / "c.csv")


# --- prepare -------------------------------------------------------------------------------------


def test_prepared_data_has_150_rows_3_x_50_and_the_errata_fixed(data_dir: Path) -> None:
    train, test = read_split(data_dir / "train.csv"), read_split(data_dir / "test.csv")
    assert (len(train), len(test)) == (120, 30)
    both = np.vstack([train, test])
    assert Counter(both[:, 4].astype(int).tolist()) == {0: 50, 1: 50, 2: 50}
    assert Counter(test[:, 4].astype(int).tolist()) == {0: 10, 1: 10, 2: 10}  # stratified
    # With samples 35 and 38 repaired, the rows are exactly Fisher's (scikit-learn's copy).
    assert Counter(tuple(r) for r in both.round(1).tolist()) == fisher_rows()
    assert json.loads((data_dir / "classes.json").read_text()) == list(CLASS_NAMES)


def test_no_row_is_in_both_train_and_test(data_dir: Path) -> None:
    train = {tuple(r) for r in read_split(data_dir / "train.csv").tolist()}
    test = {tuple(r) for r in read_split(data_dir / "test.csv").tolist()}
    assert not train & test


def test_prepare_is_seeded(data_dir: Path, tmp_path: Path, params_errata: list[Erratum]) -> None:
    prepare(data_dir / "data.csv", tmp_path, params_errata, test_size=0.2, seed=42)
    for name in ("train.csv", "test.csv", "classes.json"):
        assert (tmp_path / name).read_bytes() == (data_dir / name).read_bytes()
    prepare(data_dir / "data.csv", tmp_path, params_errata, test_size=0.2, seed=7)
    assert (tmp_path / "test.csv").read_bytes() != (data_dir / "test.csv").read_bytes()


def test_errata_repair_logs_each_change(
    tmp_path: Path, params_errata: list[Erratum], caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "data.csv").write_text("\n".join(uci_lines()) + "\n")
    with caplog.at_level(logging.INFO):
        prepare(tmp_path / "data.csv", tmp_path, params_errata, test_size=0.2, seed=42)
    assert "repaired sample 35 (line 35): petal_width 0.1 -> 0.2" in caplog.text
    assert "repaired sample 38 (line 38): sepal_width 3.1 -> 3.6" in caplog.text
    assert "repaired sample 38 (line 38): petal_length 1.5 -> 1.4" in caplog.text


@pytest.mark.integration  # iris-prepare as a process
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("5.1,3.5,1.4,Iris-setosa", "data.csv:7: expected 5 comma-separated fields"),
        (
            "5.1,abc,1.4,0.2,Iris-setosa",
            "data.csv:7: column 2 (sepal_width): 'abc' is not a number",
        ),
        (
            "5.1,3.5,nan,0.2,Iris-setosa",
            "data.csv:7: column 3 (petal_length): 'nan' is not a positive",
        ),
        (
            "5.1,3.5,1.4,-0.2,Iris-setosa",
            "data.csv:7: column 4 (petal_width): '-0.2' is not a positive",
        ),
        (
            "5.1,3.5,1.4,0.2,Iris-setosum",
            "data.csv:7: column 5 (class): unknown class 'Iris-setosum'",
        ),
    ],
    ids=["too-few-fields", "not-a-number", "nan", "negative", "unknown-class"],
)
def test_a_bad_row_stops_prepare_with_file_line_and_column(
    tmp_path: Path, line: str, expected: str
) -> None:
    lines = uci_lines()
    lines[6] = line
    (tmp_path / "data.csv").write_text("\n".join(lines) + "\n")
    result = subprocess.run(
        [
            BIN / "iris-prepare",
            "--params",
            Path(__file__).parents[2] / "params.yaml",
            "--data",
            tmp_path / "data.csv",
            "--out-dir",
            tmp_path / "out",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()  # no partial outputs


@pytest.mark.integration  # iris-prepare as a process
def test_a_bad_params_file_is_named_with_its_key(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(
        (Path(__file__).parents[2] / "params.yaml")
        .read_text()
        .replace("test_size: 0.2", "test_size: 2")
    )
    result = subprocess.run(
        [
            BIN / "iris-prepare",
            "--params",
            params,
            "--data",
            tmp_path / "x.csv",
            "--out-dir",
            tmp_path,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert f"{params}: prepare.test_size: Input should be less than 1" in result.stderr
    assert "Traceback" not in result.stderr
