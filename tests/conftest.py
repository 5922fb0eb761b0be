"""Shared fixtures: a real Tansu broker on a free port and a Feast repo in a temp dir.

No mocks stand in for Kafka or Feast: tests that need them get the real thing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from features.store import FeastConfig, FeatureAccess, apply_definitions, open_store
from infra.stack import start_broker
from stream.kafka import KafkaConfig, Topics, ensure_topics

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return free_port()


@pytest.fixture
def free_tcp_port_factory() -> Callable[[], int]:
    """Call it for as many free TCP ports on 127.0.0.1 as a test needs."""
    return free_port


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """bootstrap_servers of a real Tansu broker, started once per test session."""
    port = free_port()
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    proc = start_broker(port, log, die_with_parent=True)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def kafka_cfg(broker: str) -> KafkaConfig:
    """A KafkaConfig with fresh, unique topic names on the session broker."""
    tag = uuid.uuid4().hex[:8]
    topics = Topics(events=f"events-{tag}", dlq=f"events.dlq-{tag}",
                    samples=f"samples-{tag}", predictions=f"predictions-{tag}")
    cfg = KafkaConfig(bootstrap_servers=broker, topics=topics, partitions=4)
    ensure_topics(cfg)
    return cfg


@pytest.fixture
def feast_cfg(tmp_path: Path) -> FeastConfig:
    """An applied Feast repo (SQLite online store) in a temp dir."""
    cfg = FeastConfig(data_dir=tmp_path / "feast")
    apply_definitions(open_store(cfg))
    return cfg


@pytest.fixture
def features(feast_cfg: FeastConfig) -> FeatureAccess:
    return FeatureAccess.open(feast_cfg)


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    """The MovieLens 100k folder (RECSTREAM_ML100K, default ../shared/data/ml-100k)."""
    path = Path(os.environ.get("RECSTREAM_ML100K", ROOT.parent / "shared" / "data" / "ml-100k"))
    if not (path / "u.data").exists():
        pytest.skip(f"MovieLens 100k not found at {path} (set RECSTREAM_ML100K)")
    return path


@dataclass
class OwnRedis:
    """A redis-server of this test's own (nothing kept on disk), which it may pause."""

    proc: subprocess.Popen[bytes]
    port: int

    @property
    def connection_string(self) -> str:
        return f"127.0.0.1:{self.port}"

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Stop the server's process (SIGSTOP): connections stay open and nothing answers,
        as on a hung host or a network partition without a reset; resumed on exit."""
        self.proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.proc.send_signal(signal.SIGCONT)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """A redis-server started for this test on a free port (skips without redis-server)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield OwnRedis(proc, port)
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """A local Ray instance of this test module's own (2 CPUs, no dashboard), stopped after
    the module with everything on it (Serve's own shutdown waited 20-30 s for its
    controller; the instance is ours, so stopping it is enough)."""
    import ray

    # address="local": always a new instance, never a cluster someone else left running
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             namespace="recstream")
    try:
        yield
    finally:
        ray.shutdown()

