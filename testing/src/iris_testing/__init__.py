"""What the tests, the benchmarks and developer commands share: free ports, UCI-like data and
its archive server, small training set-ups, a real API process, member-only environments, the
Prefect REST calls that drive flow runs, fine-tuning set-ups.

A dev-only workspace member: the root project's dev group installs it; no production package
depends on it or imports it.
"""
