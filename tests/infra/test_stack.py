"""`recstream stack up|status|down` against the real broker and Feast (Ray left out here:
the end-to-end test runs Ray; here only its start and scoped stop), the processes it starts
free of Feast's metrics directory, and `down` naming (and with --all stopping) a running
`recstream stream run`."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from kafka import KafkaAdminClient

from features.store import FeastConfig
from infra import monitoring, stack
from stream.kafka import KafkaConfig

pytestmark = pytest.mark.integration


FEAST_DIR = "/tmp/feast_metrics_gone"  # what a process that imported Feast unguarded exports


def _metrics_dirs(proc: psutil.Process) -> dict[str, str]:
    return {k: v for k, v in proc.environ().items() if k.startswith("PROMETHEUS_MULTIPROC")}


def test_up_creates_topics_and_feast_repo_then_down_stops(
        tmp_path: Path, free_tcp_port_factory: Callable[[], int],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", FEAST_DIR)  # the broker must not inherit it
    s = stack.StackSettings(data_dir=tmp_path, kafka_port=free_tcp_port_factory(), partitions=3,
                            prometheus_port=free_tcp_port_factory(),
                            feast=FeastConfig(data_dir=tmp_path / "feast"))
    lines: list[str] = []
    prometheus = monitoring.prometheus_binary() is not None
    try:
        stack.up(s, ray=False, log=lines.append)
        st = stack.status(s)
        assert st.kafka and st.feast and st.ready
        for pidfile in (s.broker_pidfile, s.prometheus_pidfile):
            if pidfile.exists():
                assert _metrics_dirs(psutil.Process(int(pidfile.read_text()))) == {}
        assert st.prometheus is (True if prometheus else None)
        admin = KafkaAdminClient(**s.kafka().common())
        try:
            topics = set(admin.list_topics())
            assert {"events", "events.dlq", "samples", "predictions"} <= topics
        finally:
            admin.close()
        stack.up(s, ray=False, log=lines.append)  # idempotent: a second up is harmless
        assert any("already there" in line for line in lines)
    finally:
        stack.down(s, log=lines.append)
    assert not stack.status(s).kafka
    assert not s.broker_pidfile.exists() and not s.prometheus_pidfile.exists()
    assert stack.status(s).prometheus is (False if prometheus else None)


def test_a_taken_port_is_a_clear_error(tmp_path: Path, broker: str) -> None:
    port = int(broker.rsplit(":", 1)[1])
    with pytest.raises(stack.StackError, match=r"kafka: port \d+ is already taken"):
        stack.start_broker(port, tmp_path / "tansu.log")


def test_stop_ray_stops_this_head_and_leaves_other_processes_alone(
        tmp_path: Path, free_tcp_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # an unrelated process whose command line looks like Ray's (`ray stop --force` would
    # match it by name); it must survive
    other = subprocess.Popen(["bash", "-c", "exec -a raylet sleep 120"])
    mine = tmp_path / "metrics"  # a directory the deployment chose is passed on
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", FEAST_DIR)
    monkeypatch.setenv("PROMETHEUS_MULTIPROCESS_DIR", str(mine))
    try:
        stack.start_ray(free_tcp_port, 0, tmp_path / "token", num_cpus=1)
        assert stack._port_open(free_tcp_port)
        procs = stack.ray_processes(free_tcp_port)
        assert len(procs) >= 3  # gcs, raylet and the rest of the head
        head = next(p for p in procs if stack.RAY_MARK in p.environ())
        assert _metrics_dirs(head) == {"PROMETHEUS_MULTIPROCESS_DIR": str(mine)}
        assert other.pid not in {p.pid for p in procs}
        assert stack.stop_ray(free_tcp_port) == len(procs)
        assert not stack._port_open(free_tcp_port)
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in procs)
        assert other.poll() is None
        note = Path(os.environ.get("RAY_TMPDIR", tempfile.gettempdir())) / "ray"
        note = note / "ray_current_cluster"  # a stale note would make ray.init() dial it
        assert not (note.exists() and note.read_text().strip().endswith(f":{free_tcp_port}"))
        assert stack.stop_ray(free_tcp_port) == 0  # nothing left: a second stop is a no-op
    finally:
        stack.stop_ray(free_tcp_port)
        other.kill()
        other.wait()


def test_redis_up_reads_feasts_connection_string_forms(free_tcp_port: int) -> None:
    assert not stack.redis_up(f"127.0.0.1:{free_tcp_port}")
    assert not stack.redis_up(f"127.0.0.1:{free_tcp_port},ssl=false,password=x")
    if not stack.redis_up("127.0.0.1:6379"):
        pytest.skip("no Redis server on 127.0.0.1:6379")
    assert stack.redis_up("127.0.0.1:6379,db=0")
    assert stack.redis_up("127.0.0.1")  # the port defaults to 6379


def test_up_with_an_unreachable_redis_fails_before_starting_anything(
        tmp_path: Path, free_tcp_port: int) -> None:
    dead = f"127.0.0.1:{free_tcp_port}"
    s = stack.StackSettings(data_dir=tmp_path / "stack", kafka_port=free_tcp_port,
                            feast=FeastConfig(data_dir=tmp_path / "feast", online_store="redis",
                                              redis_connection_string=dead))
    with pytest.raises(stack.StackError, match=f"redis: no server answers at {dead}"):
        stack.up(s, ray=False, log=lambda _: None)
    assert not s.data_dir.exists() and not stack.status(s).kafka
    st = stack.status(s)
    assert st.redis is False and not st.ready
    assert any(line.startswith("redis  down") for line in st.lines(s))


def test_status_leaves_redis_out_when_the_online_store_is_sqlite(tmp_path: Path) -> None:
    s = stack.StackSettings(data_dir=tmp_path, feast=FeastConfig(data_dir=tmp_path / "feast"))
    st = stack.status(s)
    assert st.redis is None
    assert not any(line.startswith("redis") for line in st.lines(s))


def test_down_names_a_running_stream_run_and_stops_it_with_all(
        tmp_path: Path, kafka_cfg: KafkaConfig, feast_cfg: FeastConfig,
        free_tcp_port_factory: Callable[[], int]) -> None:
    """A `recstream stream run` with its output in a file prints its first line at once;
    `down` names it and leaves it running; `down --all` stops it (SIGTERM: exit 0)."""
    port = int(kafka_cfg.bootstrap_servers.rsplit(":", 1)[1])
    metrics = free_tcp_port_factory()
    env = {**os.environ, "STREAM_KAFKA__BOOTSTRAP_SERVERS": kafka_cfg.bootstrap_servers,
           "STREAM_KAFKA__TOPICS__EVENTS": kafka_cfg.topics.events,
           "STREAM_KAFKA__TOPICS__DLQ": kafka_cfg.topics.dlq,
           "STREAM_KAFKA__TOPICS__SAMPLES": kafka_cfg.topics.samples,
           "STREAM_KAFKA__TOPICS__PREDICTIONS": kafka_cfg.topics.predictions,
           "STREAM_GROUP_ID": f"g-{kafka_cfg.topics.events}",
           "STREAM_FEAST__DATA_DIR": str(feast_cfg.data_dir),
           "STREAM_METRICS_PORT": str(metrics)}
    log = tmp_path / "stream.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("recstream")), "stream",
                                 "run"], cwd=tmp_path, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    # this stack: the test broker, no Ray, nothing of its own to stop (no pidfiles)
    s = stack.StackSettings(data_dir=tmp_path / "stack", kafka_port=port,
                            ray_port=free_tcp_port_factory(),
                            prometheus_port=free_tcp_port_factory())
    try:
        want = (f"stream run: consuming {kafka_cfg.topics.events} as group "
                f"g-{kafka_cfg.topics.events} from {kafka_cfg.bootstrap_servers}")
        deadline = time.monotonic() + 60
        while want not in log.read_text() and proc.poll() is None:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert f"metrics http://127.0.0.1:{metrics}/metrics" in log.read_text()
        lines: list[str] = []
        stack.down(s, log=lines.append)
        assert f"still running: stream run (pid {proc.pid}); `recstream stack down --all` " \
            "stops them" in lines, lines
        assert proc.poll() is None
        stack.down(s, stop_all=True, log=lines.append)
        assert f"stopped stream run (pid {proc.pid})" in lines
        assert proc.wait(timeout=5) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_status_hides_a_redis_password() -> None:
    s = stack.StackSettings()
    s.feast.online_store = "redis"
    s.feast.redis_connection_string = "127.0.0.1:1,password=hunter2,db=0"
    lines = "\n".join(stack.Status(kafka=False, ray=False, feast=False, redis=False).lines(s))
    assert "hunter2" not in lines and "password=***,db=0" in lines
