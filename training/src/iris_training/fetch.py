"""DVC stage `fetch`: the UCI Iris archive -> data/data.csv (UCI format), offline fallback.

The content is checked (150 rows, 4 numbers and a known class each, 50 per class) before anything
is written. When UCI cannot be reached, scikit-learn's copy (Fisher's corrected values) is
rewritten in the UCI format; the log says which source was used.
"""

from __future__ import annotations

import io
import logging
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Annotated

import typer

from iris_core import CLASS_NAMES
from iris_core.params import load_params
from iris_training.cli import exits_cleanly
from iris_training.data import DataError, Row, check_iris, parse_rows, to_uci_text
from iris_training.io import atomic_write_text

log = logging.getLogger(__name__)

app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False, help=__doc__)


class Unreachable(Exception):
    """The source could not be reached (no network, DNS failure, time-out, server error)."""


def download(url: str, timeout_s: float) -> bytes:
    if not url.startswith(("https://", "http://")):
        raise DataError(f"{url}: only http(s) URLs are supported")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as e:
        if e.code >= 500:
            raise Unreachable(f"HTTP {e.code}") from e
        raise DataError(f"{url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        raise Unreachable(str(getattr(e, "reason", e))) from e


def rows_from_zip(archive: bytes, member: str, source: str) -> list[Row]:
    try:
        with zipfile.ZipFile(io.BytesIO(archive)) as zf:
            text = zf.read(member).decode("utf-8")
    except zipfile.BadZipFile as e:
        raise DataError(f"{source}: not a zip archive") from e
    except KeyError as e:
        raise DataError(f"{source}: the archive has no member {member!r}") from e
    return parse_rows(text.splitlines(), f"{source}!{member}")


def rows_from_sklearn() -> list[Row]:
    """scikit-learn's bundled copy (Fisher's values, errata already corrected) as UCI rows."""
    from sklearn.datasets import load_iris  # noqa: PLC0415  # only on the offline path

    iris = load_iris()
    text = "".join(
        ",".join([*(f"{v:.1f}" for v in x), CLASS_NAMES[int(t)]]) + "\n"
        for x, t in zip(iris.data, iris.target, strict=True)
    )
    return parse_rows(text.splitlines(), "scikit-learn load_iris()")


def fetch(url: str, member: str, timeout_s: float, out: Path) -> str:
    """Write the checked data set to `out`; return the source used ("uci" or "scikit-learn")."""
    try:
        archive = download(url, timeout_s)
    except Unreachable as e:
        log.warning("%s unreachable (%s): using scikit-learn's copy instead", url, e)
        rows, source = rows_from_sklearn(), "scikit-learn"
        check_iris(rows, "scikit-learn load_iris()")
    else:
        rows, source = rows_from_zip(archive, member, url), "uci"
        check_iris(rows, url)
    atomic_write_text(out, to_uci_text(rows))
    log.info("source=%s: wrote %d rows to %s", source, len(rows), out)
    return source


@app.command()
@exits_cleanly
def main(
    params: Annotated[Path, typer.Option(help="Parameters file (reads the `data` keys).")] = Path(
        "params.yaml"
    ),
    out: Annotated[Path, typer.Option(help="Where to write the data set.")] = Path("data/data.csv"),
) -> None:
    """Fetch the Iris data set into OUT (UCI format), falling back to scikit-learn's copy."""
    p = load_params(params).data
    fetch(p.url, p.member, p.timeout_s, out)
