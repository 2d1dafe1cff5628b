"""Reading and checking Iris rows in the UCI format: `5.1,3.5,1.4,0.2,Iris-setosa`, no header.

Every problem names the file, the line and the column, so a bad row can be found and fixed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from iris_core import CLASS_NAMES, FEATURES, N_FEATURES

EXPECTED_ROWS = 150
EXPECTED_PER_CLASS = 50


class DataError(ValueError):
    """The data does not have the expected shape or content."""


@dataclass(frozen=True, slots=True)
class Row:
    line: int  # 1-based line in the source file
    features: tuple[float, float, float, float]
    class_name: str

    def to_uci(self) -> str:
        return ",".join([*(repr(v) for v in self.features), self.class_name])


def parse_rows(lines: Iterable[str], source: str) -> list[Row]:
    """Parse UCI lines; blank lines (the UCI file ends with some) are skipped.

    Raises DataError naming `source`, the line and the column of the first bad value.
    """
    rows: list[Row] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != N_FEATURES + 1:
            raise DataError(
                f"{source}:{number}: expected {N_FEATURES + 1} comma-separated fields "
                f"({', '.join(FEATURES)}, class), found {len(fields)}: {line!r}"
            )
        values: list[float] = []
        for column, (name, text) in enumerate(zip(FEATURES, fields, strict=False), start=1):
            try:
                value = float(text)
            except ValueError:
                raise DataError(
                    f"{source}:{number}: column {column} ({name}): {text!r} is not a number"
                ) from None
            if not math.isfinite(value) or value <= 0:
                raise DataError(
                    f"{source}:{number}: column {column} ({name}): {text!r} is not a positive "
                    "finite length in cm"
                )
            values.append(value)
        class_name = fields[N_FEATURES]
        if class_name not in CLASS_NAMES:
            raise DataError(
                f"{source}:{number}: column {N_FEATURES + 1} (class): unknown class "
                f"{class_name!r}, expected one of {', '.join(CLASS_NAMES)}"
            )
        rows.append(Row(number, (values[0], values[1], values[2], values[3]), class_name))
    return rows


def check_iris(rows: Sequence[Row], source: str) -> None:
    """Check the whole data set: 150 rows, 50 of each known class. Says what differs."""
    problems: list[str] = []
    if len(rows) != EXPECTED_ROWS:
        problems.append(f"{len(rows)} rows instead of {EXPECTED_ROWS}")
    counts = Counter(r.class_name for r in rows)
    problems.extend(
        f"{name}: {counts.get(name, 0)} rows instead of {EXPECTED_PER_CLASS}"
        for name in CLASS_NAMES
        if counts.get(name, 0) != EXPECTED_PER_CLASS
    )
    if problems:
        raise DataError(f"{source}: not the Iris data set: {'; '.join(problems)}")


def to_uci_text(rows: Iterable[Row]) -> str:
    return "".join(f"{r.to_uci()}\n" for r in rows)
