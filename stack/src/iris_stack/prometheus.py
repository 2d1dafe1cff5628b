"""Prometheus' configuration for a local run: the repository's prometheus.yml pointed at the
API's address."""

from __future__ import annotations

from pathlib import Path

import yaml


def prometheus_config(
    source: Path, api_target: str, dest: Path, scrape_interval: str | None = None
) -> Path:
    """`source` (the repository's prometheus.yml) with the API at `api_target` (host:port),
    rule files made absolute and, if given, another scrape interval; written to `dest`."""
    config = yaml.safe_load(source.read_text())
    config["rule_files"] = [str((source.parent / f).resolve()) for f in config["rule_files"]]
    for job in config["scrape_configs"]:
        if job["job_name"] == "api":
            job["static_configs"] = [{"targets": [api_target]}]
            if scrape_interval:
                job["scrape_interval"] = scrape_interval
    if scrape_interval:
        config["global"]["scrape_interval"] = scrape_interval
        config["global"]["evaluation_interval"] = scrape_interval
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(config, sort_keys=False))
    return dest
