"""The image build's helpers without Docker: what `scripts/image_venv.py` cuts from and keeps in
an environment, how it splits our files out, and which Debian mirror
`scripts/local-base-image.sh` takes from apt's sources. `tests/images/test_images.py` runs the images."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
TAG = sys.implementation.cache_tag


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("image_venv", ROOT / "scripts" / "image_venv.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


image_venv = _load()


def touch(path: Path, text: str = "x = 1\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def compiled(source: Path) -> Path:
    return touch(source.parent / "__pycache__" / f"{source.stem}.{TAG}.pyc", "bytecode")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return tmp_path / "venv" / "lib" / "python3.11" / "site-packages"


def relative(site: Path, paths: Iterable[Path]) -> list[str]:
    """The paths that exist, relative to `site`, sorted (what `slim` removes)."""
    return sorted(str(p.relative_to(site)) for p in paths if p.exists())


def test_test_suites_inside_packages_go_and_runtime_testing_helpers_stay(site: Path) -> None:
    for name in (
        "numpy/_core/tests/test_a.py",
        "numpy/_core/tests/data/test/b.txt",  # inside a suite: goes with it
        "numpy/testing/__init__.py",
        "pandas/tests/frame/test_c.py",
        "joblib/test/test_d.py",
        "jinja2/tests.py",  # a module, not a folder
    ):
        touch(site / name)
    touch(site / "tests" / "top_level.py")  # a top-level package is never a package's suite

    assert relative(site, image_venv.test_suites(site)) == [
        "joblib/test",
        "numpy/_core/tests",
        "pandas/tests",
    ]


def test_package_specific_cuts_keep_what_runs(site: Path) -> None:
    capi = site / "onnxruntime" / "capi"
    for name in ("libonnxruntime.so.1.32.0", "onnxruntime_pybind11_state.so", "_pybind_state.py"):
        touch(capi / name)
    touch(site / "onnxruntime" / "transformers" / "x.py")
    touch(site / "onnxruntime" / "quantization" / "x.py")
    touch(site / "prefect" / "server" / "ui" / "index.html")
    touch(site / "prefect" / "server" / "api" / "x.py")
    static = site / "swagger_ui" / "static"
    for name in (*image_venv.SWAGGER_PAGE, "swagger-editor-bundle.js", "swagger-ui.js.map"):
        touch(static / name)
    touch(site / "pandas" / "__init__.pyi")

    cut = {what: relative(site, find(site)) for what, find in image_venv.CUTS.items()}
    assert cut["onnxruntime's C API library and conversion tools"] == [
        "onnxruntime/capi/libonnxruntime.so.1.32.0",
        "onnxruntime/quantization",
        "onnxruntime/transformers",
    ]
    assert cut["the Prefect server's UI"] == ["prefect/server/ui"]
    assert cut["Swagger UI assets /docs does not load"] == [
        "swagger_ui/static/swagger-editor-bundle.js",
        "swagger_ui/static/swagger-ui.js.map",
    ]
    assert cut["type stubs"] == ["pandas/__init__.pyi"]


def test_dependencies_keep_their_bytecode_only(site: Path) -> None:
    module = touch(site / "pkg" / "mod.py")
    compiled(module)
    init = touch(site / "pkg" / "__init__.py")
    compiled(init)
    newer_syntax = touch(site / "pkg" / "_typing_313.py")  # did not compile for this Python
    touch(site / "pkg" / "__pycache__" / f"gone.{TAG}.pyc", "orphan")

    modules, freed = image_venv.bytecode_only(site)

    assert (modules, freed > 0) == (2, True)
    assert sorted(str(p.relative_to(site)) for p in site.rglob("*") if p.is_file()) == [
        "pkg/__init__.pyc",
        "pkg/_typing_313.py",
        "pkg/mod.pyc",
    ]
    assert (site / "pkg" / "mod.pyc").read_text() == "bytecode"
    assert newer_syntax.exists()


def test_debug_sections_are_stripped_and_the_module_still_loads(tmp_path: Path) -> None:
    """On a real extension module built with debug sections (uvloop's, from this
    environment), and the same file in a vendored `.libs` folder, which stays as it is."""
    uvloop = next(Path(sysconfig.get_paths()["purelib"]).glob("uvloop/loop.*.so"))
    site = tmp_path / "site-packages"
    module = site / "uvloop" / uvloop.name
    vendored = site / "uvloop.libs" / "libx.so"
    for path in (module, vendored):
        path.parent.mkdir(parents=True)
        shutil.copy2(uvloop, path)

    count, freed = image_venv.strip_debug_info(site)

    assert count == 1
    assert module.stat().st_size == uvloop.stat().st_size - freed < uvloop.stat().st_size
    assert vendored.stat().st_size == uvloop.stat().st_size
    assert image_venv.load([module])
    assert os.access(module, os.X_OK) == os.access(uvloop, os.X_OK)


def test_split_copies_the_members_files_with_their_bytecode_and_scripts(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    site = venv / "lib" / "python3.11" / "site-packages"
    own = touch(site / "iris_api" / "app.py")
    compiled(own)
    touch(site / "iris_api" / "py.typed", "")
    touch(venv / "bin" / "iris-api", "#!/opt/venv/bin/python\n")
    touch(site / "numpy" / "__init__.py")
    for dist, files in {
        "iris_api-0.1.0": ["iris_api/app.py", "iris_api/py.typed", "../../../bin/iris-api"],
        "numpy-2.0": ["numpy/__init__.py"],
    }.items():
        name, version = dist.split("-")
        info = site / f"{dist}.dist-info"
        touch(info / "METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        record = [*files, f"{dist}.dist-info/METADATA", f"{dist}.dist-info/RECORD"]
        touch(info / "RECORD", "".join(f"{f},,\n" for f in record))

    dest = tmp_path / "own"
    image_venv.split(venv, dest)

    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == [
        "bin/iris-api",
        "lib/python3.11/site-packages/iris_api-0.1.0.dist-info/METADATA",
        "lib/python3.11/site-packages/iris_api-0.1.0.dist-info/RECORD",
        f"lib/python3.11/site-packages/iris_api/__pycache__/app.{TAG}.pyc",
        "lib/python3.11/site-packages/iris_api/app.py",
        "lib/python3.11/site-packages/iris_api/py.typed",
    ]


# --- the base image's mirror --------------------------------------------------------------------


def mirror(tmp_path: Path, files: dict[str, str], **env: str) -> subprocess.CompletedProcess[str]:
    """`local-base-image.sh --mirror` with apt reading its sources from `files` only."""
    etc = tmp_path / "etc"
    (etc / "apt.conf.d").mkdir(parents=True)
    (etc / "sources.list.d").mkdir()
    for name, text in files.items():
        (etc / name).write_text(text)
    conf = tmp_path / "apt.conf"
    conf.write_text(f'Dir::Etc "{etc}";\n')
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "local-base-image.sh"), "--mirror"],
        env={"PATH": os.environ["PATH"], "APT_CONFIG": str(conf), **env},
        capture_output=True,
        text=True,
        check=False,
    )


DEB822 = """\
Types: deb
URIs: http://off.example/debian
Suites: bookworm
Enabled: no

Types: deb-src
URIs: http://sources.example/debian
Suites: bookworm

Types: deb deb-src
# a comment inside a stanza
URIs: https://mirror.example/debian/ http://second.example/debian
Suites: bookworm bookworm-updates
Components: main
"""


def test_the_mirror_is_the_first_enabled_deb_source_for_bookworm_in_deb822(
    tmp_path: Path,
) -> None:
    found = mirror(tmp_path, {"sources.list.d/debian.sources": DEB822})
    assert (found.returncode, found.stdout) == (0, "https://mirror.example/debian\n")


def test_one_line_sources_count_in_the_order_apt_reads_them(tmp_path: Path) -> None:
    files = {
        "sources.list": "# none here\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://security.example/debian-security "
        "bookworm-security main\n",
        "sources.list.d/b.sources": DEB822,
        "sources.list.d/a.list": "deb [ trusted=yes ] http://list.example/debian bookworm main\n",
    }
    assert mirror(tmp_path, files).stdout == "http://list.example/debian\n"


def test_no_bookworm_source_fails_and_says_how_to_name_one(tmp_path: Path) -> None:
    files = {"sources.list": "deb http://archive.ubuntu.com/ubuntu noble main\n"}
    found = mirror(tmp_path, files)
    assert found.returncode == 1
    assert "IRIS_BASE_MIRROR" in found.stderr
    named = mirror(tmp_path / "again", files, IRIS_BASE_MIRROR="http://here.example/debian")
    assert named.stdout == "http://here.example/debian\n"
