"""The prepared data a model is trained and tested on: `train.csv`, `test.csv` (4 measurements
and the label index per row, no header) and `classes.json` (label index -> class name), as the
`prepare` stage writes them.

Training reads them from the data folder; a fine-tune reads the same files from its champion's
MLflow run, so both load them here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iris_core import N_FEATURES
from iris_training.data import DataError

#: The files of a prepared data folder.
DATA_FILES = ("train.csv", "test.csv", "classes.json")


@dataclass(frozen=True, slots=True)
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    md5: dict[str, str]  # file name -> md5 of its bytes: DVC's hash of that file


def _read_split(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        table = np.loadtxt(path, delimiter=",", ndmin=2)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read: {e}") from e
    if table.shape[1] != N_FEATURES + 1:
        raise DataError(f"{path}: expected {N_FEATURES + 1} columns, found {table.shape[1]}")
    return table[:, :N_FEATURES], table[:, N_FEATURES].astype(np.int64)


def load_dataset(data_dir: Path) -> Dataset:
    """The three files of `data_dir`, with their md5 (so runs can be tagged with DVC's hashes).
    Raises DataError naming the file that is missing or malformed."""
    x_train, y_train = _read_split(data_dir / "train.csv")
    x_test, y_test = _read_split(data_dir / "test.csv")
    try:
        classes = json.loads((data_dir / "classes.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{data_dir / 'classes.json'}: cannot read: {e}") from e
    md5 = {
        name: hashlib.md5((data_dir / name).read_bytes(), usedforsecurity=False).hexdigest()
        for name in DATA_FILES
    }
    return Dataset(x_train, y_train, x_test, y_test, classes, md5)
