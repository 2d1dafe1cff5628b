"""The names every part shares (experiment, registered models, alias) have one source,
params.yaml, and every DVC stage lists the code it runs."""

from __future__ import annotations

import ast
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from iris_api.settings import ApiSettings
from iris_core.feedback import STORE_URL
from iris_core.params import load_params, packaged, registry
from iris_finetune.settings import FinetuneSettings
from iris_stack.settings import StackSettings

ROOT = Path(__file__).resolve().parents[1]

#: Files that may spell the names: the source itself, DVC's record of the parameters it ran
#: with, prose (documentation reads better with real names) and test data.
NOT_SOURCES = ("params.yaml", "dvc.lock", "uv.lock")


def tracked() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return [ROOT / line for line in out.splitlines()]


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (prose, not values)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def literals(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every place a value could be spelled: a Python file's string constants
    other than docstrings (comments are not values); every line of any other text file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".py":
        return list(enumerate(text.splitlines(), start=1))
    tree = ast.parse(text)
    skip = _docstrings(tree)
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
    ]


def test_shared_names_are_spelled_only_in_params_yaml() -> None:
    reg = registry()
    names = {reg.experiment, reg.onnx_model_name, reg.sklearn_model_name, reg.alias}
    pattern = re.compile(
        "|".join(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])" for n in sorted(names))
    )
    found = []
    for path in tracked():
        rel = path.relative_to(ROOT).as_posix()
        if (
            rel in NOT_SOURCES
            or rel.startswith(("tests/", "docs/"))
            or path.suffix in {".md", ".png"}
            or path.is_symlink()
        ):
            continue
        try:
            places = literals(path)
        except UnicodeDecodeError:
            continue
        found += [f"{rel}:{line}: {text!r}" for line, text in places if pattern.search(text)]
    assert found == [], "spell these names only in params.yaml (registry):\n" + "\n".join(found)


def test_the_packaged_parameters_are_the_repository_file() -> None:
    link = ROOT / "core" / "src" / "iris_core" / "params.yaml"
    assert link.is_symlink()
    assert link.resolve() == (ROOT / "params.yaml").resolve()
    assert packaged() == load_params(ROOT / "params.yaml")


def test_service_settings_take_their_defaults_from_params(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("MLFLOW_TRACKING_URI", "IRIS_API_MODEL_NAME", "IRIS_API_MODEL_ALIAS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(STORE_URL, f"sqlite:///{tmp_path / 'feedback.db'}")
    reg = registry()
    api = ApiSettings()
    assert (api.model_name, api.model_alias) == (reg.onnx_model_name, reg.alias)
    tune = FinetuneSettings()
    assert (tune.onnx_model_name, tune.sklearn_model_name, tune.alias, tune.experiment) == (
        reg.onnx_model_name,
        reg.sklearn_model_name,
        reg.alias,
        reg.experiment,
    )
    assert tune.accuracy_above == reg.accuracy_above
    # ... and the environment still overrides them.
    monkeypatch.setenv("IRIS_API_MODEL_ALIAS", "staging")
    monkeypatch.setenv("IRIS_FINETUNE_ALIAS", "staging")
    assert ApiSettings().model_alias == FinetuneSettings().alias == "staging"


#: Where our packages' sources live, by import name.
PACKAGES = {"iris_core": ROOT / "core" / "src", "iris_training": ROOT / "training" / "src"}


def _module_file(module: str) -> Path | None:
    top = module.split(".", maxsplit=1)[0]
    if top not in PACKAGES:
        return None
    base = PACKAGES[top].joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _imported_sources(module: str) -> set[str]:
    """Our source files that importing `module` can load (read from the import statements,
    function-level ones included, and the packages' __init__ files on the way)."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # a package's __init__ runs first
            found = _module_file(".".join(parts[:i]))
            if found is None or found in seen:
                continue
            seen.add(found)
            for node in ast.walk(ast.parse(found.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    todo += [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    todo.append(node.module)
                    todo += [f"{node.module}.{alias.name}" for alias in node.names]
    return {path.relative_to(ROOT).as_posix() for path in seen}


@pytest.mark.parametrize("stage", ["fetch", "prepare", "train"])
def test_every_stage_depends_on_the_code_it_runs(stage: str) -> None:
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    entry = _console_script_module(spec["cmd"].split()[0])
    deps = set(spec["deps"])
    missing = sorted(
        f
        for f in _imported_sources(entry)
        if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)
    )
    assert missing == [], f"dvc.yaml stage {stage} does not list: {missing}"


def _console_script_module(name: str) -> str:
    """The module of a training console script (`iris-train` -> `iris_training.train`)."""
    project = tomllib.loads((ROOT / "training" / "pyproject.toml").read_text())["project"]
    module: str = project["scripts"][name].split(":")[0]
    return module


def test_every_setting_is_documented() -> None:
    """docs/configuration.md lists every environment variable of every settings class."""
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = [
        f"{settings.__name__}: {name}"
        for settings in (StackSettings, ApiSettings, FinetuneSettings)
        for name in env_names(settings)
        if f"`{name}`" not in page
    ]
    missing += [f"iris-train: {n}" for n in ("MLFLOW_TRACKING_URI", "IRIS_TRAIN_N_JOBS")
                if f"`{n}`" not in page]  # fmt: skip
    assert missing == [], "document these in docs/configuration.md:\n" + "\n".join(missing)


def env_names(settings: type[BaseSettings]) -> list[str]:
    """The variable each field is read from: its own name if it has one (an alias), else the
    class's prefix and the field's name."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    names = []
    for name, field in settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            alias = alias.choices[0]
        names.append(alias if isinstance(alias, str) else (prefix + name).upper())
    return names
