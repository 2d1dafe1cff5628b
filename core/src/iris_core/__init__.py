"""Shared pieces of iris-mlops: what a sample is, what the classes are called, the registry."""

from iris_core.schema import (
    CLASS_NAMES,
    EXAMPLES,
    FEATURES,
    MEASUREMENT_MAX_CM,
    N_FEATURES,
    ClassName,
)

__all__ = ["CLASS_NAMES", "EXAMPLES", "FEATURES", "MEASUREMENT_MAX_CM", "N_FEATURES", "ClassName"]
