"""The monitoring files of infra/ as the tests read them: rule files, dashboards, their
queries. Shared by tests/infra/test_prometheus.py and tests/infra/test_e2e.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from infra import monitoring

RULES = monitoring.CONFIG_DIR / "stream_rules.yml"
SERVE_RULES = monitoring.CONFIG_DIR / "serve_rules.yml"
TRAIN_RULES = monitoring.CONFIG_DIR / "train_rules.yml"
DASHBOARD = monitoring.CONFIG_DIR.parent / "grafana" / "stream.json"
SERVE_DASHBOARD = monitoring.CONFIG_DIR.parent / "grafana" / "serve.json"
TRAIN_DASHBOARD = monitoring.CONFIG_DIR.parent / "grafana" / "train.json"


def rules_of(path: Path) -> list[dict[str, Any]]:
    """Every rule (recording and alerting) of a rule file."""
    return [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]


def records(path: Path) -> set[str]:
    """The series a rule file records."""
    return {r["record"] for r in rules_of(path) if "record" in r}


def dashboard_exprs(path: Path) -> list[str]:
    """The query of every target of every panel of a dashboard."""
    dashboard = json.loads(path.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def well_formed_dashboard(path: Path) -> None:
    """Panel ids unique, every panel placed and on the ``DS_PROMETHEUS`` data source."""
    panels = json.loads(path.read_text())["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)) and all("gridPos" in p for p in panels), path
    assert all(p["datasource"]["uid"] == "${DS_PROMETHEUS}" for p in panels), path
