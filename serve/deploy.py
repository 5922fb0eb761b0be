"""Deploy the serving app on a Ray cluster and wait until it answers over HTTP.

Run: ``recstream serve`` (after ``recstream stack up`` and ``recstream train``). What keeps
it from serving (no trained model, no cluster, a deployment whose replicas cannot start,
no answer in time) is a :class:`DeployError` with one line saying what is wrong and what to
do; the CLI prints that line and exits 1, the full exception goes to a log file it names.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import ray
import requests
import yaml
from pydantic import ValidationError
from ray import serve
from ray.serve.exceptions import RayServeException
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from serve.app import build_app
from serve.config import AppConfig, ServeSettings, load_app_config, serve_settings

logger = logging.getLogger(__name__)
DEPLOY_TIMEOUT_S = 120.0  # serve.run plus the first /healthz answer; a failure ends sooner


class DeployError(RuntimeError):
    """The app could not be deployed; the message is one line for the user and ``log`` the
    file with the full story (None when the line says it all)."""

    def __init__(self, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log


def _absolute(root: str) -> str:
    """A local registry root as an absolute path (the replicas' working directory is not
    ours); an fsspec URL as it is."""
    return root if "://" in root else str(Path(root).resolve())


def missing_models(cfg: AppConfig, registry_root: str) -> list[str]:
    """The variants' models that are not there: a model directory without a checkpoint
    (absent or empty), a registry pointer that names no version, an unknown version."""
    from models.registry import Registry, VersionNotFound

    missing: list[str] = []
    registry = Registry(registry_root)
    for v in cfg.variants:
        if v.model_dir is not None:
            if not (v.model_dir.is_dir() and any(v.model_dir.iterdir())):
                missing.append(str(v.model_dir))
        elif v.version is not None:
            try:
                registry.manifest(v.version)
            except VersionNotFound:
                missing.append(f"version {v.version} in the registry {registry_root}")
        elif registry.pointer(str(v.family), v.pointer) is None:
            missing.append(f"{v.family}/{v.pointer} in the registry {registry_root}")
    return missing


def deploy(s: ServeSettings, *, namespace: str = "recstream",
           timeout_s: float = DEPLOY_TIMEOUT_S) -> str:
    """Connect to the cluster at ``s.ray_address``, deploy the app, return its base URL.

    Ray reads its token settings when it is imported: the CLI exports them (see
    :func:`infra.stack.ray_auth_env`) before anything imports ray. Raises
    :class:`DeployError` before touching the cluster when a variant has no checkpoint.
    """
    try:
        cfg = load_app_config(s.config_path)
    except (OSError, ValueError, yaml.YAMLError) as exc:  # missing, not YAML, refused
        why = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else _first_line(exc)
        raise DeployError(f"the serve config {s.config_path} cannot be used: {why}") from None
    if "password=" in s.feast.redis_connection_string.replace(" ", "").lower():
        raise DeployError("the Redis password is in SERVE_FEAST__REDIS_CONNECTION_STRING, "
                          "which Ray would keep in the deployment's arguments: put it in a "
                          "file and set SERVE_FEAST__REDIS_PASSWORD_FILE instead")
    if missing := missing_models(cfg, s.registry_root):
        raise DeployError(f"no trained model at {missing[0]}: run `recstream train` first "
                          f"(the serve config is {s.config_path})")
    if not ray.is_initialized():
        if not _answers(s.ray_address):  # ray.init would retry it for a minute or more
            raise DeployError(f"no Ray cluster answers at {s.ray_address}: run "
                              "`recstream stack up` first (or set SERVE_RAY_ADDRESS)")
        try:
            ray.init(address=s.ray_address, namespace=namespace, log_to_driver=False,
                     logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError) as exc:
            raise DeployError(f"no Ray cluster answers at {s.ray_address} ({_first_line(exc)})"
                              ": run `recstream stack up` first") from exc
    gpus = ray.cluster_resources().get("GPU", 0) > 0
    deadline = time.monotonic() + timeout_s
    try:
        _start_serve(s, deadline)
        _run_until(lambda: serve.run(build_app(
            cfg, s.feast, registry_root=_absolute(s.registry_root),
            experiment_path=str(s.experiment_path.resolve()),
            kafka=s.kafka if s.log_predictions else None,
            api_key_digests=s.api_key_digests(), gpus_available=gpus),
                                     name=cfg.name, route_prefix=cfg.route_prefix), deadline)
        base = f"http://{s.http_host}:{s.http_port}{cfg.route_prefix.rstrip('/')}"
        _wait_healthy(base, max(deadline - time.monotonic(), 1.0))
    except Exception as exc:
        failed = _deployment_errors(cfg.name)
        log = _write_log(exc, failed)
        starts = (f"{name} could not start ({_last_line(msg)})" for name, msg in failed)
        raise DeployError(f"deploying {cfg.name} failed: {next(starts, _first_line(exc))}; "
                          f"full log: {log}", log) from exc
    return base


def _answers(address: str) -> bool:
    """Whether something listens at a ``host:port`` address (other forms, such as ``auto``
    or ``ray://``, are left to ray.init)."""
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit() or "/" in host:
        return True
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=2).close()
    except OSError:
        return False
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _last_line(message: str) -> str:
    """The exception line that ends a replica's traceback in Serve's status message."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "no message")[:300]


def _deployment_errors(app: str) -> list[tuple[str, str]]:
    """(deployment, Serve's status message) of the app's deployments that did not come up:
    the message carries the replica's traceback, which serve.run's exception does not."""
    with contextlib.suppress(Exception):
        status = serve.status().applications[app]
        return [(name, d.message) for name, d in status.deployments.items()
                if d.message and d.status != "HEALTHY"]
    return []


def _start_serve(s: ServeSettings, deadline: float) -> None:
    """``serve.start``, again when its HTTP proxy died while starting: on a busy host a proxy
    can miss Serve's readiness checks (3 x 5 s) and be killed and started anew by the
    controller, which fails the first call's wait although Serve goes on; a second call finds
    the controller and returns."""
    while True:
        try:
            serve.start(http_options={"host": s.http_host, "port": s.http_port})
            return
        except ray.exceptions.ActorDiedError as exc:
            if "ProxyActor" not in str(exc) or time.monotonic() > deadline:
                raise
            logger.warning("Serve's HTTP proxy was restarted while starting (a busy host?); "
                           "waiting for the new one")
            time.sleep(1.0)


def _run_until(call: Callable[[], object], deadline: float) -> None:
    """``call()`` on a thread, its exception re-raised here; a TimeoutError at ``deadline``
    (serve.run waits as long as a replica's constructor hangs)."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the caller
            failure.append(exc)

    worker = threading.Thread(target=target, name="serve-run", daemon=True)
    worker.start()
    wait = max(deadline - time.monotonic(), 0.0)
    worker.join(wait)
    if worker.is_alive():
        raise TimeoutError(f"the deployments were not running after another {wait:.0f} s")
    if failure:
        raise failure[0]


def _wait_healthy(base: str, timeout_s: float) -> None:
    @retry(retry=retry_if_exception_type(requests.RequestException),
           stop=stop_after_delay(timeout_s), wait=wait_fixed(0.5), reraise=True)
    def check() -> None:
        requests.get(f"{base}/healthz", timeout=2).raise_for_status()

    check()


def _logs_dir() -> Path:
    """Ray's log directory of this session (the replicas' logs are under ``serve/``), or the
    temp dir when the driver has none."""
    with contextlib.suppress(Exception):
        node = ray._private.worker._global_node
        if node is not None:
            return Path(node.get_logs_dir_path())
    return Path(tempfile.gettempdir())


def _write_log(exc: BaseException, failed: list[tuple[str, str]]) -> Path:
    """The exception and the failed deployments' messages (their replicas' tracebacks)."""
    path = _logs_dir() / f"recstream-serve-{os.getpid()}.log"
    text = "".join(traceback.format_exception(exc))
    for name, message in failed:
        text += f"\n{name}:\n{message}\n"
    serve_logs = path.parent / "serve"
    if serve_logs.is_dir():
        text += f"\nThe replicas' own logs: {serve_logs}\n"
    path.write_text(text)
    return path


def shutdown(name: str) -> None:
    """Remove the app ``name`` and disconnect: the cluster, Serve and its other apps keep
    running (``serve.shutdown`` would take every app of the cluster with it)."""
    if ray.is_initialized():
        with contextlib.suppress(RayServeException):  # no Serve there any more
            serve.delete(name)
        ray.shutdown()


def run_forever() -> int:
    """Deploy and block until SIGINT/SIGTERM, then tear the app down; 1 (with the
    :class:`DeployError` line printed) when it cannot deploy."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        base = deploy(serve_settings())
        name = load_app_config(serve_settings().config_path).name  # read as deploy read it
    except DeployError as exc:
        print(f"serve: {exc}", flush=True)
        with contextlib.suppress(Exception):
            ray.shutdown()
        return 1
    print(f"serving at {base}/rank (Ctrl-C to stop)", flush=True)
    while not stop.is_set():
        time.sleep(0.5)
    shutdown(name)
    return 0
