"""The README's "where to change what" points at things that exist (every path, the files and
folders named in parentheses after a folder, the keys named after a YAML file, the modules
named by their dotted name), and `make screenshots` makes every picture docs/ shows."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from iris_testing.screenshots import PICTURES

ROOT = Path(__file__).resolve().parents[1]
CELL = re.compile(r"`([^`]+)`(?:\s*\(([^)]*)\))?")


def where_to_change_what() -> list[tuple[str, str]]:
    """(what, where) of each row of the README's table."""
    text = (ROOT / "README.md").read_text()
    table = text.split("## Where to change what", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[1] and not set(cells[1]) <= set("-") and cells[1] != "look at":
            rows.append((cells[0], cells[1]))
    return rows


def module(dotted: str) -> Path | None:
    """The source file of `iris_x.y` in its member, if it exists."""
    package, _, rest = dotted.partition(".")
    for candidate in ROOT.glob(f"*/src/{package}"):
        path = candidate.joinpath(*rest.split(".")).with_suffix(".py")
        if path.is_file():
            return path
    return None


def missing(where: str) -> list[str]:
    """What a table cell names that does not exist."""
    gone = []
    for name, inside in CELL.findall(where):
        named = re.findall(r"`([^`]+)`", inside)
        if name.startswith("iris_") and "/" not in name:
            if module(name) is None:
                gone.append(name)
            continue
        path = ROOT / name
        if not path.exists():
            gone.append(name)
            continue
        keys = yaml.safe_load(path.read_text()) or {} if path.suffix in (".yaml", ".yml") else None
        for item in named:
            if keys is not None and item not in keys:
                gone.append(f"{name}: {item}")
            elif path.is_dir() and not any((path / f).exists() for f in (item, f"{item}.py")):
                gone.append(f"{name}{item}")
    return gone


def test_the_table_has_rows_and_the_check_finds_what_is_missing() -> None:
    rows = where_to_change_what()
    assert len(rows) >= 10
    assert missing("`no/such/place.py`, `params.yaml` (`no_such_key`), `iris_core.nope`") == [
        "no/such/place.py",
        "params.yaml: no_such_key",
        "iris_core.nope",
    ]


def test_every_place_the_readme_points_at_exists() -> None:
    gone = {what: missing(where) for what, where in where_to_change_what()}
    assert {what: names for what, names in gone.items() if names} == {}


def test_make_screenshots_makes_every_picture_of_the_docs() -> None:
    """So that one `make screenshots` renews them all from a real run, and none goes stale."""
    assert sorted(p.name for p in (ROOT / "docs").glob("*.png")) == sorted(PICTURES)
