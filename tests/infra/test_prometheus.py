"""infra/prometheus and infra/grafana: the config and rules pass promtool, every alert's unit
test passes, the rules and the dashboard name only metrics the stream exports (and recorded
series), and a real Prometheus started by the stack scrapes a real /metrics endpoint,
evaluates the recording rules over it and answers every dashboard query with data."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from infra import monitoring, stack
from stream import metrics
from tests.infra.promfiles import (
    DASHBOARD,
    RULES,
    SERVE_DASHBOARD,
    SERVE_RULES,
    TRAIN_DASHBOARD,
    TRAIN_RULES,
    dashboard_exprs,
    records,
    rules_of,
    well_formed_dashboard,
)

HERE = Path(__file__).resolve().parent
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus)")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120)


@needs_promtool
def test_the_rendered_config_and_the_rules_pass_promtool(tmp_path: Path) -> None:
    config = monitoring.render_config(tmp_path / "prometheus.yml", stream_port=9201,
                                      ray_port=9202)
    res = _promtool("check", "config", str(config))
    assert res.returncode == 0, res.stdout + res.stderr
    raw = yaml.safe_load(config.read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"]
               for job in raw["scrape_configs"]}
    assert targets == {"recstream-stream": ["127.0.0.1:9201"], "recstream-ray": ["127.0.0.1:9202"],
                       "recstream-train": ["127.0.0.1:9103"]}


@needs_promtool
def test_every_alert_passes_its_unit_tests() -> None:
    res = _promtool("test", "rules", str(HERE / "prometheus_rules_test.yml"))
    assert res.returncode == 0, res.stdout + res.stderr
    tested = set(re.findall(r"alertname: (\w+)", (HERE / "prometheus_rules_test.yml").read_text()))
    alerts = {r["alert"] for rules in (RULES, SERVE_RULES, TRAIN_RULES) for r in rules_of(rules)
              if "alert" in r}
    assert alerts and alerts <= tested, f"alerts without a unit test: {alerts - tested}"
    config = yaml.safe_load((monitoring.CONFIG_DIR / "prometheus.yml").read_text())
    assert set(config["rule_files"]) == {RULES.name, SERVE_RULES.name, TRAIN_RULES.name}


def test_the_rules_name_only_metrics_the_stream_exports() -> None:
    assert metrics.EVENTS is not None  # the stream's metrics are registered on import
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"],
                "gauge": [""]}  # labelled metrics have no samples until a child is made
    exported = {m.name + end for m in REGISTRY.collect() for end in suffixes.get(m.type, [])}
    text = RULES.read_text()
    used = set(re.findall(r"\brecstream_stream_\w+", text))
    assert used, "no stream metric in the rules"
    assert used <= exported, f"not exported by stream/metrics.py: {used - exported}"


def test_the_serve_dashboard_is_well_formed_and_reads_only_its_recorded_series() -> None:
    """(The Ray metric names it and serve_rules.yml use are checked against a real Serve app
    in tests/infra/test_e2e.py.)"""
    well_formed_dashboard(SERVE_DASHBOARD)
    text = " ".join(dashboard_exprs(SERVE_DASHBOARD))
    used = set(re.findall(r"\brecstream:[\w:]+", text))
    assert used and used <= records(SERVE_RULES), used - records(SERVE_RULES)


def test_the_train_rules_and_dashboard_name_only_what_the_trainer_exports() -> None:
    from train import metrics as train_metrics

    assert train_metrics.PROMOTIONS is not None  # registered on import
    exported = {m.name + end for m in REGISTRY.collect()
                for end in ("", "_total", "_bucket", "_sum", "_count")}
    well_formed_dashboard(TRAIN_DASHBOARD)
    text = TRAIN_RULES.read_text() + " ".join(dashboard_exprs(TRAIN_DASHBOARD))
    used = set(re.findall(r"\brecstream_train_\w+", text))
    assert used and used <= exported, f"not exported by train/metrics.py: {used - exported}"
    recorded = set(re.findall(r"\brecstream:[\w:]+", " ".join(dashboard_exprs(TRAIN_DASHBOARD))))
    assert recorded and recorded <= records(TRAIN_RULES), recorded - records(TRAIN_RULES)


def test_the_dashboard_names_only_exported_metrics_and_recorded_series() -> None:
    well_formed_dashboard(DASHBOARD)
    text = " ".join(dashboard_exprs(DASHBOARD))
    exported = {m.name + end for m in REGISTRY.collect()
                for end in ("", "_total", "_bucket", "_sum", "_count")}
    used = set(re.findall(r"\brecstream_stream_\w+", text))
    assert used and used <= exported, f"not exported by stream/metrics.py: {used - exported}"
    assert set(re.findall(r"\brecstream:[\w:]+", text)) <= records(RULES)


def _feed_every_stream_metric() -> None:
    """One step of a stream that flows: every metric the dashboard reads moves."""
    metrics.EVENTS.labels("click", "ok").inc(50)
    metrics.DLQ.labels("not_json").inc()
    metrics.SAMPLES.labels("1").inc(20)
    metrics.LAG.labels("0").set(7)
    metrics.PENDING.labels("0").set(3)
    metrics.PHASE_SECONDS.labels("poll").inc(0.01)
    for hist, value in ((metrics.FRESHNESS, 0.03), (metrics.BATCH_SIZE, 40),
                        (metrics.BATCH_SECONDS, 0.02), (metrics.FEAST_WRITE, 0.004)):
        hist.observe(value)
    metrics.OFFLINE_SAMPLES.inc(20)
    metrics.OFFLINE_LAST.set(time.time())


def _query(port: int, expr: str) -> dict:
    url = f"http://127.0.0.1:{port}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        out: dict = json.load(resp)
        return out


@pytest.mark.integration
@pytest.mark.skipif(monitoring.prometheus_binary() is None,
                    reason="prometheus not installed (Debian: apt-get install prometheus)")
def test_a_real_prometheus_scrapes_the_stream_records_and_fills_the_dashboard(
        tmp_path: Path, free_tcp_port_factory: Callable[[], int]) -> None:
    free_port = free_tcp_port_factory
    metrics_port, prom_port = free_port(), free_port()
    metrics.start_metrics_server(metrics_port, addr="127.0.0.1")
    config = monitoring.render_config(tmp_path / "prometheus.yml", stream_port=metrics_port,
                                      ray_port=free_port(), interval="1s")
    proc = stack.start_prometheus(config, prom_port, tmp_path / "tsdb", tmp_path / "prom.log",
                                  die_with_parent=True)
    quiet = {'ALERTS{alertname=~"Recstream.*", alertstate="firing"}'}  # nothing fires here
    exprs = dashboard_exprs(DASHBOARD)
    try:
        deadline, answers = time.monotonic() + 60, {}
        while time.monotonic() < deadline:
            _feed_every_stream_metric()  # a stream that keeps flowing
            answers = {e: _query(prom_port, e) for e in exprs}
            if all(answers[e]["data"]["result"] for e in exprs if e not in quiet):
                break
            time.sleep(0.5)
        assert all(a["status"] == "success" for a in answers.values())
        empty = [e for e in exprs if e not in quiet and not answers[e]["data"]["result"]]
        assert not empty, f"dashboard queries without data: {empty}"
        result = _query(prom_port, "recstream:stream_events:rate1m")["data"]["result"]
        clicks = [r for r in result if r["metric"] == {"__name__": "recstream:stream_events:rate1m",
                                                      "event_type": "click", "outcome": "ok"}]
        assert clicks and float(clicks[0]["value"][1]) > 0, result
    finally:
        proc.terminate()
        proc.wait(timeout=10)
