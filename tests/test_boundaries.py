"""What may import what: production packages never import the development helpers
(iris_testing), the tests or the benchmarks, and never depend on them; the benchmarks import
no test module. The helpers may import production code, not the other way round."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Workspace members that only the root project's dev group installs.
DEV_MEMBERS = {"testing"}
#: Import names production code must not reach.
DEV_ONLY = {"iris_testing", "tests", "bench"}


def production_members() -> list[str]:
    """Every workspace member but the dev-only ones (a new member is covered at once)."""
    workspace = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]
    members: list[str] = workspace["members"]
    assert set(members) >= DEV_MEMBERS
    return [m for m in members if m not in DEV_MEMBERS]


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in `path`: top-level, in functions, under TYPE_CHECKING,
    and `importlib.import_module("...")` with a literal name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def reaching(paths: list[Path], forbidden: set[str]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in paths
        for line, module in imports(path)
        if module.split(".")[0] in forbidden
    ]


def test_the_import_reader_sees_imports_inside_functions_and_type_checking_blocks() -> None:
    # bench/feedback.py imports the Prefect helper under TYPE_CHECKING and inside main().
    modules = [module for _, module in imports(ROOT / "bench" / "feedback.py")]
    assert modules.count("iris_testing.prefect_rest") == 2


def test_production_packages_import_no_helper_test_or_benchmark() -> None:
    sources: list[Path] = []
    for member in production_members():
        files = sorted((ROOT / member / "src").rglob("*.py"))
        assert files, f"no sources under {member}/src"
        sources += files
    found = reaching(sources, DEV_ONLY)
    assert found == [], "production code must not import development helpers:\n" + "\n".join(found)


def test_the_benchmarks_import_no_test_module() -> None:
    found = reaching(sorted((ROOT / "bench").rglob("*.py")), {"tests"})
    assert found == [], "benchmarks take their helpers from iris_testing:\n" + "\n".join(found)


def test_no_production_member_depends_on_the_helpers() -> None:
    for member in production_members():
        project = tomllib.loads((ROOT / member / "pyproject.toml").read_text())["project"]
        required = [*project.get("dependencies", [])]
        for extra in project.get("optional-dependencies", {}).values():
            required += extra
        assert not [r for r in required if r.startswith("iris-testing")], member
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "iris-testing" not in root["project"]["dependencies"]
    assert "iris-testing" in root["dependency-groups"]["dev"]


#: Training's library seam: what the fine-tune may import from training. The commands
#: (`train`, `fetch`, `prepare`, `cli`) are not part of it.
TRAINING_LIBRARY = {"data", "dataset", "search", "export", "tracking", "io"}


def test_the_fine_tune_uses_training_s_library_seam_not_its_commands() -> None:
    sources = sorted((ROOT / "finetune" / "src").rglob("*.py"))
    found = [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in sources
        for line, module in imports(path)
        if module.startswith("iris_training")
        and module.removeprefix("iris_training.").split(".")[0] not in TRAINING_LIBRARY
    ]
    assert found == [], "import training's library modules, not its commands:\n" + "\n".join(found)
