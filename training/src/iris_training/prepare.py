"""DVC stage `prepare`: validate every row, repair the UCI errata, label-encode, split.

Outputs (all or none): `train.csv` and `test.csv` (no header, 4 features then the label index)
and `classes.json` (class names in label order). The split is stratified and seeded, and keeps
identical rows on one side, so no row is in both train and test.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.preprocessing import LabelEncoder

from iris_core import CLASS_NAMES, FEATURES
from iris_core.params import Erratum, load_params
from iris_training.cli import exits_cleanly
from iris_training.data import DataError, Row, parse_rows
from iris_training.io import atomic_write_text

log = logging.getLogger(__name__)

app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False, help=__doc__)


def repair(rows: list[Row], errata: list[Erratum], source: str) -> list[Row]:
    """Set each erratum's feature of sample N (1-based, in file order) to its documented value."""
    fixed = list(rows)
    for e in errata:
        if e.sample > len(fixed):
            raise DataError(f"{source}: erratum for sample {e.sample}, but only {len(fixed)} rows")
        row = fixed[e.sample - 1]
        column = FEATURES.index(e.feature)
        old = row.features[column]
        if old == e.value:
            log.info("sample %d %s is already %s", e.sample, e.feature, e.value)
            continue
        values = list(row.features)
        values[column] = e.value
        fixed[e.sample - 1] = replace(row, features=(values[0], values[1], values[2], values[3]))
        log.info(
            "repaired sample %d (line %d): %s %s -> %s", e.sample, row.line, e.feature, old, e.value
        )
    return fixed


def split(
    x: np.ndarray, y: np.ndarray, test_size: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded train/test indices; identical rows stay on the same side."""
    n_splits = round(1 / test_size)
    if n_splits < 2:
        raise DataError(f"test_size {test_size} leaves no room for a train set")
    _, groups = np.unique(np.column_stack([x, y]), axis=0, return_inverse=True)
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train_idx, test_idx = next(folds.split(x, y, groups.ravel()))
    return train_idx, test_idx


def _csv(x: np.ndarray, y: np.ndarray) -> str:
    return "".join(
        ",".join([*(repr(float(v)) for v in features), str(int(label))]) + "\n"
        for features, label in zip(x, y, strict=True)
    )


def prepare(
    data: Path, out_dir: Path, errata: list[Erratum], test_size: float, seed: int
) -> dict[str, int]:
    """Run the stage; return the number of rows written per output."""
    try:
        lines = data.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{data}: cannot read: {e}") from e
    rows = repair(parse_rows(lines, str(data)), errata, str(data))
    if not rows:
        raise DataError(f"{data}: no rows")

    encoder = LabelEncoder().fit(list(CLASS_NAMES))
    x = np.array([r.features for r in rows], dtype=np.float64)
    y = encoder.transform([r.class_name for r in rows])
    train_idx, test_idx = split(x, y, test_size, seed)

    # Everything is validated and computed: only now do outputs appear, each atomically.
    atomic_write_text(out_dir / "train.csv", _csv(x[train_idx], y[train_idx]))
    atomic_write_text(out_dir / "test.csv", _csv(x[test_idx], y[test_idx]))
    atomic_write_text(
        out_dir / "classes.json", json.dumps([str(c) for c in encoder.classes_], indent=2) + "\n"
    )
    counts = {"train": len(train_idx), "test": len(test_idx)}
    log.info("wrote %d train and %d test rows to %s", counts["train"], counts["test"], out_dir)
    return counts


@app.command()
@exits_cleanly
def main(
    params: Annotated[
        Path, typer.Option(help="Parameters file (reads the `prepare` keys).")
    ] = Path("params.yaml"),
    data: Annotated[Path, typer.Option(help="Input in the UCI format.")] = Path("data/data.csv"),
    out_dir: Annotated[Path, typer.Option(help="Folder for train/test/classes.")] = Path("data"),
) -> None:
    """Validate DATA, repair the errata, label-encode and split into OUT_DIR."""
    p = load_params(params).prepare
    prepare(data, out_dir, p.errata, p.test_size, p.seed)
