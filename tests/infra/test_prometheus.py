"""infra/prometheus: the config and rules pass promtool, every alert's unit test passes, the
rules name only metrics the stream exports, and a real Prometheus started by the stack
scrapes a real /metrics endpoint and evaluates the recording rules over it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from infra import monitoring, stack
from stream import metrics

HERE = Path(__file__).resolve().parent
RULES = monitoring.CONFIG_DIR / "stream_rules.yml"
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
    assert targets == {"recstream-stream": ["127.0.0.1:9201"], "recstream-ray": ["127.0.0.1:9202"]}


@needs_promtool
def test_every_alert_passes_its_unit_tests() -> None:
    res = _promtool("test", "rules", str(HERE / "prometheus_rules_test.yml"))
    assert res.returncode == 0, res.stdout + res.stderr
    tested = set(re.findall(r"alertname: (\w+)", (HERE / "prometheus_rules_test.yml").read_text()))
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"]
              for r in g["rules"] if "alert" in r}
    assert alerts and alerts <= tested, f"alerts without a unit test: {alerts - tested}"


def test_the_rules_name_only_metrics_the_stream_exports() -> None:
    assert metrics.EVENTS is not None  # the stream's metrics are registered on import
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"],
                "gauge": [""]}  # labelled metrics have no samples until a child is made
    exported = {m.name + end for m in REGISTRY.collect() for end in suffixes.get(m.type, [])}
    text = RULES.read_text()
    used = set(re.findall(r"\brecstream_stream_\w+", text))
    assert used, "no stream metric in the rules"
    assert used <= exported, f"not exported by stream/metrics.py: {used - exported}"


@pytest.mark.integration
@pytest.mark.skipif(monitoring.prometheus_binary() is None,
                    reason="prometheus not installed (Debian: apt-get install prometheus)")
def test_a_real_prometheus_scrapes_the_stream_and_records(
        tmp_path: Path, free_tcp_port_factory: Callable[[], int]) -> None:
    free_port = free_tcp_port_factory
    metrics_port, prom_port = free_port(), free_port()
    metrics.start_metrics_server(metrics_port, addr="127.0.0.1")
    metrics.EVENTS.labels("click", "ok").inc(10)
    config = monitoring.render_config(tmp_path / "prometheus.yml", stream_port=metrics_port,
                                      ray_port=free_port(), interval="1s")
    proc = stack.start_prometheus(config, prom_port, tmp_path / "tsdb", tmp_path / "prom.log",
                                  die_with_parent=True)
    try:
        url = (f"http://127.0.0.1:{prom_port}/api/v1/query?query="
               "recstream:stream_events:rate1m")
        deadline, result = time.monotonic() + 60, []
        while time.monotonic() < deadline and not result:
            metrics.EVENTS.labels("click", "ok").inc(50)  # a stream that keeps flowing
            with urllib.request.urlopen(url, timeout=5) as resp:
                result = json.load(resp)["data"]["result"]
            time.sleep(0.5)
        clicks = [r for r in result if r["metric"] == {"__name__": "recstream:stream_events:rate1m",
                                                      "event_type": "click", "outcome": "ok"}]
        assert clicks and float(clicks[0]["value"][1]) > 0, result
    finally:
        proc.terminate()
        proc.wait(timeout=10)
