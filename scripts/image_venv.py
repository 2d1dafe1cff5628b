#!/usr/bin/env python3
"""Shape a member's virtual environment for its image. Runs in the build stage of
api/Dockerfile, training/Dockerfile and finetune/Dockerfile with the base image's Python
(standard library only; `strip` from binutils).

    image_venv.py slim VENV        cut what the image never runs from VENV's third-party
                                   packages (each cut below says why) and keep their code as
                                   bytecode only
    image_venv.py split VENV DEST  copy the workspace members' files (iris-*) out of VENV into
                                   DEST, same layout: the image copies the dependencies and DEST
                                   as two layers, so a source change ships a small layer

`make test-images` runs each image's job for real, which is what shows a cut was safe.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

#: The workspace members' distributions (iris-core, iris-api, ...): the image's own code.
OWN_PREFIX = "iris-"

#: The files of swagger-ui-py's assets that GET /docs loads (iris_api.routes.docs); the
#: package also ships Swagger Editor, source maps and ES-module bundles, which nothing serves.
SWAGGER_PAGE = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"})

#: Loads the libraries named in argv in a fresh interpreter and leaves without unloading them
#: (some abort when finalised by an interpreter that never imported them).
LOAD_CHECK = "import ctypes, os, sys\nfor p in sys.argv[1:]: ctypes.CDLL(p)\nos._exit(0)"


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if len(found) != 1:
        raise SystemExit(f"{venv}: expected one lib/python3*/site-packages, found {found}")
    return found[0]


def size(path: Path) -> int:
    """Bytes in `path` (a file, or every file under a folder), links not followed."""
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir() or p.is_symlink())


def remove(path: Path) -> int:
    """Delete a file or a folder; the bytes it held."""
    freed = size(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    return freed


def megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


# --- cuts: each yields what to delete ---------------------------------------------------------


def test_suites(site: Path) -> Iterator[Path]:
    """`tests` and `test` folders inside packages (pandas/tests, numpy/_core/tests, ...): the
    packages' own test suites, which nothing imports at run time (runtime helpers are called
    `testing`, such as numpy.testing, and stay)."""
    for top in sorted(p for p in site.iterdir() if p.is_dir()):
        for folder, subfolders, _ in os.walk(top):
            suites = sorted(name for name in subfolders if name in {"tests", "test"})
            yield from (Path(folder) / name for name in suites)
            subfolders[:] = [name for name in subfolders if name not in suites]


def type_stubs(site: Path) -> Iterator[Path]:
    """`*.pyi`: read by type checkers, never by the interpreter."""
    yield from sorted(site.rglob("*.pyi"))


def onnxruntime_extras(site: Path) -> Iterator[Path]:
    """onnxruntime's C API library, which the Python binding does not load (it links the
    runtime in itself), and its model-conversion tools, which an inference session never
    imports."""
    package = site / "onnxruntime"
    yield from sorted((package / "capi").glob("libonnxruntime.so*"))
    yield from (package / name for name in ("transformers", "quantization", "tools"))


def prefect_ui(site: Path) -> Iterator[Path]:
    """The Prefect server's web UI: the image runs flow runs, a Prefect client."""
    yield from (site / "prefect" / "server" / name for name in ("ui", "ui-v2"))


def unserved_swagger_assets(site: Path) -> Iterator[Path]:
    """swagger-ui-py's assets other than the ones the API's /docs page loads."""
    static = site / "swagger_ui" / "static"
    if static.is_dir():
        yield from sorted(p for p in static.iterdir() if p.name not in SWAGGER_PAGE)


CUTS: dict[str, Callable[[Path], Iterator[Path]]] = {
    "test suites inside packages": test_suites,
    "type stubs": type_stubs,
    "onnxruntime's C API library and conversion tools": onnxruntime_extras,
    "the Prefect server's UI": prefect_ui,
    "Swagger UI assets /docs does not load": unserved_swagger_assets,
}


# --- debug sections ---------------------------------------------------------------------------


def load(libraries: list[Path]) -> bool:
    """True when the dynamic loader accepts every one of `libraries` (an extension module's
    Python symbols come from the interpreter that loads it)."""
    argv = [sys.executable, "-c", LOAD_CHECK, *map(str, libraries)]
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def strip_debug_info(site: Path) -> tuple[int, int]:
    """Remove the debug sections of extension modules built with them (uvloop, asyncpg,
    SQLAlchemy's Cython modules, ...) with `strip --strip-debug`, which keeps every symbol the
    loader needs; a stripped copy replaces a module only once it loads. The libraries auditwheel
    vendors (`*.libs/`) are left as they are: they were patched to be found, and rewriting them
    risks that. Returns (modules stripped, bytes freed)."""
    strip = shutil.which("strip")
    if strip is None:
        raise SystemExit("strip not found: install binutils in the build stage")
    trials: dict[Path, Path] = {}
    for module in sorted(site.rglob("*.so")):
        if module.is_symlink() or any(part.endswith(".libs") for part in module.parts):
            continue
        trial = module.with_name(module.name + ".stripped")
        run = subprocess.run([strip, "--strip-debug", "-o", str(trial), str(module)], check=False)
        if run.returncode == 0 and 0 < trial.stat().st_size < module.stat().st_size:
            trials[module] = trial
        else:
            trial.unlink(missing_ok=True)
    if not load(list(trials.values())):  # rare: find the ones that do not load
        for module, trial in list(trials.items()):
            if not load([trial]):
                trial.unlink()
                del trials[module]
    freed = 0
    for module, trial in trials.items():
        freed += module.stat().st_size - trial.stat().st_size
        shutil.copymode(module, trial)
        trial.replace(module)
    return len(trials), freed


# --- bytecode only ----------------------------------------------------------------------------


def bytecode_only(site: Path) -> tuple[int, int]:
    """Keep each third-party module once, as the bytecode compiled at install: `x.py` goes and
    `__pycache__/x.<tag>.pyc` becomes `x.pyc` beside it, which Python imports as it is (no
    source to check it against). Imports stay as fast; tracebacks inside these packages show
    file, line and function without the source line. A module with no bytecode (one that did
    not compile for this Python) keeps its source. Returns (modules, bytes freed)."""
    tag = sys.implementation.cache_tag
    modules = freed = 0
    for source in sorted(site.rglob("*.py")):
        compiled = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        if compiled.is_file():
            freed += remove(source)
            compiled.replace(source.with_suffix(".pyc"))
            modules += 1
    for cache in sorted(site.rglob("__pycache__"), reverse=True):
        freed += remove(cache)  # what is left there has no source: never imported
    return modules, freed


def slim(venv: Path) -> None:
    site = site_packages(venv)
    before = size(venv)
    for what, find in CUTS.items():
        paths = [p for p in find(site) if p.exists() or p.is_symlink()]
        freed = sum(remove(p) for p in paths)
        print(f"slim: {what}: {len(paths)} removed, {megabytes(freed)}")
    count, freed = strip_debug_info(site)
    print(f"slim: debug sections: {count} extension modules, {megabytes(freed)}")
    count, freed = bytecode_only(site)
    print(f"slim: sources kept as bytecode only: {count} modules, {megabytes(freed)}")
    print(f"slim: {venv}: {megabytes(before)} -> {megabytes(size(venv))}")


# --- our own files ----------------------------------------------------------------------------


def own_files(venv: Path) -> list[Path]:
    """The files the workspace members installed into `venv` (their RECORDs, plus the
    bytecode compiled beside each module), relative to `venv`."""
    site = site_packages(venv)
    root = venv.resolve()
    files: set[Path] = set()
    for dist in importlib.metadata.distributions(path=[str(site)]):
        if not dist.metadata["Name"].lower().replace("_", "-").startswith(OWN_PREFIX):
            continue
        for entry in dist.files or []:
            path = Path(str(dist.locate_file(entry))).resolve()
            if not path.is_file():
                continue
            files.add(path.relative_to(root))
            if path.suffix == ".py":
                cache = path.parent / "__pycache__"
                files.update(p.relative_to(root) for p in cache.glob(f"{path.stem}.*.pyc"))
    if not files:
        raise SystemExit(f"{venv}: no {OWN_PREFIX}* distribution installed")
    return sorted(files)


def split(venv: Path, dest: Path) -> None:
    files = own_files(venv)
    for relative in files:
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(venv / relative, target)
    print(f"split: {len(files)} files of {OWN_PREFIX}* into {dest} ({megabytes(size(dest))})")


def main(argv: list[str]) -> None:
    match argv:
        case ["slim", venv]:
            slim(Path(venv))
        case ["split", venv, dest]:
            split(Path(venv), Path(dest))
        case _:
            raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
