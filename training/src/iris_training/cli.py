"""What every console script of this member shares: logging and turning known errors into exits."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from iris_core.params import ParamsError
from iris_training.data import DataError

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("iris_training")


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def exits_cleanly(func: Callable[P, R]) -> Callable[P, R]:
    """Known errors (bad data, bad params) end the command with their message and exit 1,
    never with a stack trace."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        setup_logging()
        try:
            return func(*args, **kwargs)
        except (DataError, ParamsError) as e:
            log.error("%s", e)
            raise SystemExit(1) from e

    return wrapper
