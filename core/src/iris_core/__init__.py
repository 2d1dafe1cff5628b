"""Shared pieces of iris-mlops: what a sample is and what the classes are called."""

from iris_core.schema import CLASS_NAMES, FEATURES, N_FEATURES

__all__ = ["CLASS_NAMES", "FEATURES", "N_FEATURES"]
