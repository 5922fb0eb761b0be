"""Prometheus for recstream: the scrape config rendered for this stack's ports, and its rules.

Run: ``recstream stack up`` starts Prometheus (Debian's ``prometheus`` package, when
installed) on ``STACK_PROMETHEUS_PORT`` (9090) with :func:`render_config`'s file; its UI
lists the stream's and the ranking service's alerts under Alerts, and the recording rules
(``recstream:*``) are the series to graph. In production, take ``infra/prometheus/`` into
your own Prometheus.

The rules live in ``infra/prometheus/stream_rules.yml`` (the stream consumers),
``serve_rules.yml`` (the ranking service) and ``train_rules.yml`` (the incremental
trainer); ``promtool test rules
tests/infra/prometheus_rules_test.yml`` unit-tests every alert (docs/metrics.md).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parent / "prometheus"
STREAM_JOB, RAY_JOB, TRAIN_JOB = "recstream-stream", "recstream-ray", "recstream-train"


def prometheus_binary() -> str | None:
    """The ``prometheus`` server on PATH (Debian's package), or None."""
    return shutil.which("prometheus")


def render_config(out: Path, *, stream_port: int, ray_port: int, train_port: int = 9103,
                  interval: str | None = None) -> Path:
    """Write ``infra/prometheus/prometheus.yml`` to ``out`` with the scrape targets on these
    ports of 127.0.0.1, the rule files by absolute path and, if given, another scrape and
    evaluation ``interval`` (for example ``"1s"`` in tests); return ``out``."""
    raw: dict[str, Any] = yaml.safe_load((CONFIG_DIR / "prometheus.yml").read_text())
    raw["rule_files"] = [str(CONFIG_DIR / name) for name in raw["rule_files"]]
    ports = {STREAM_JOB: stream_port, RAY_JOB: ray_port, TRAIN_JOB: train_port}
    for job in raw["scrape_configs"]:
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[job['job_name']]}"]}]
    if interval is not None:
        raw["global"].update(scrape_interval=interval, evaluation_interval=interval)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def server_command(binary: str, config: Path, port: int, tsdb: Path) -> list[str]:
    """The command line of a local Prometheus on 127.0.0.1:``port`` keeping two days."""
    return [binary, f"--config.file={config}", f"--storage.tsdb.path={tsdb}",
            f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=2d"]
