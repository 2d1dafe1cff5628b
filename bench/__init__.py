"""Benchmarks of iris-mlops: `make bench` (or `python -m bench`) prints numbers, no pass/fail."""
