"""The service process: SIGKILL at random points during a replay, /metrics, SIGTERM, and
prometheus_client's mode after Feast's import (in-process unless the deployment asks)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from stream.consumer import StreamConsumer
from stream.producer import events_from_frame, produce
from stream.settings import StreamSettings
from stream.synthetic import SyntheticConfig, generate
from tests.conftest import ROOT, free_port
from tests.stream.conftest import assert_exact, drain, verify

WORLD = SyntheticConfig(n_users=60, seconds_between_events=0.2)
KILLS = 4
FAILPOINTS = "after_samples=0.02,after_changelog=0.02,after_feast=0.02,after_commit=0.02"


def start(settings: StreamSettings, tmp: Path, n: int, failpoints: str = ""
          ) -> tuple[subprocess.Popen[bytes], Path]:
    conf = tmp / "settings.json"
    conf.write_text(settings.model_dump_json())
    log = tmp / f"service-{n}.log"
    env = {**os.environ, "RECSTREAM_FAILPOINTS": failpoints, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stream.service", "--settings-json",
                                 str(conf), "--client-id", f"svc-{n}"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    return proc, log


def wait_assigned(proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if "assigned [" in log.read_text(errors="replace").replace("assigned []", ""):
            return
        time.sleep(0.1)


def test_sigkill_at_random_points_loses_and_duplicates_nothing(
    settings: StreamSettings, tmp_path: Path
) -> None:
    settings.kafka.max_poll_records = 100
    # A killed member leaves the group when its session expires: keep that short.
    settings.kafka.session_timeout_ms, settings.kafka.heartbeat_interval_ms = 3000, 500
    rng = random.Random(int(os.environ.get("RECSTREAM_CRASH_SEED", "20261122")))
    sender = threading.Thread(
        target=produce, args=(events_from_frame(generate(2000, WORLD), id_prefix="k"),
                              settings.kafka), kwargs={"rate": 300})
    sender.start()
    kills = {"external": 0, "failpoint": 0}
    for n in range(KILLS):
        proc, log = start(settings, tmp_path, n, FAILPOINTS)
        wait_assigned(proc, log)
        time.sleep(rng.uniform(0.1, 2.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills["external"] += 1
        elif proc.returncode == -signal.SIGKILL:
            kills["failpoint"] += 1
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL, log.read_text()[-2000:]
    sender.join()
    survivor = StreamConsumer(settings, client_id="survivor")
    try:
        drain([survivor], settings, timeout_s=90)
    finally:
        survivor.close()
    assert sum(kills.values()) == KILLS
    assert_exact(verify(settings))


def test_service_serves_metrics_and_stops_on_sigterm(
    settings: StreamSettings, tmp_path: Path
) -> None:
    settings.metrics_port = free_port()
    produce(events_from_frame(generate(300, WORLD), id_prefix="m"), settings.kafka)
    produce([], settings.kafka)
    proc, log = start(settings, tmp_path, 0)
    try:
        wait_assigned(proc, log)
        text = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "recstream_stream_samples_total{" not in text:
            time.sleep(0.5)
            url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
            text = urllib.request.urlopen(url, timeout=5).read().decode()
        for name in ("recstream_stream_events_total", "recstream_stream_batch_size",
                     "recstream_stream_feast_write_seconds", "recstream_stream_consumer_lag",
                     "recstream_stream_pending_impressions", "recstream_stream_samples_total"):
            assert name in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


PROBE = """
import json, os, warnings
import stream.service, stream.metrics
import feast.metrics
import prometheus_client.values as values
stream.metrics.EVENTS.labels("click", "ok").inc()
print(json.dumps({
    "value_class": values.ValueClass.__name__,
    "env": {k: v for k, v in os.environ.items() if k.upper().startswith("PROMETHEUS_MULTIPROC")},
    "feast_dir_left": os.path.isdir(feast.metrics._prometheus_mp_dir or ""),
    "once_deprecation": any(f[0] == "once" and f[2] is DeprecationWarning
                            for f in warnings.filters),
}))
"""


@pytest.mark.parametrize("case", ["unset", "inherited_feast_dir", "chosen"])
def test_metrics_stay_in_process_unless_the_deployment_chose_a_directory(
        case: str, tmp_path: Path) -> None:
    """Importing the service (and so Feast) leaves no multiprocess directory in the
    environment and prometheus_client in-process, removes the directory Feast made and its
    warning filter; a directory the deployment set before the start is kept and used."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PROMETHEUS_MULTI")}
    chosen = tmp_path / "metrics"
    chosen.mkdir()
    if case == "inherited_feast_dir":  # from a parent that imported Feast unguarded
        env["PROMETHEUS_MULTIPROC_DIR"] = env["PROMETHEUS_MULTIPROCESS_DIR"] = \
            str(tmp_path / "feast_metrics_abc123")
    elif case == "chosen":
        env["PROMETHEUS_MULTIPROC_DIR"] = str(chosen)
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, text=True,
                         capture_output=True, check=True, timeout=120).stdout
    got = json.loads(out.splitlines()[-1])
    assert not got["feast_dir_left"] and not got["once_deprecation"]
    if case == "chosen":
        assert got["env"] == {"PROMETHEUS_MULTIPROC_DIR": str(chosen)}
        assert got["value_class"] == "MmapedValue"
        assert any(f.name.startswith("counter_") for f in chosen.iterdir())
    else:
        assert got == {**got, "env": {}, "value_class": "MutexValue"}
        assert not any(chosen.iterdir())
