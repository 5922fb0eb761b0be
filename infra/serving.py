"""Deploy the serving app on the local Ray cluster and wait until it answers over HTTP.

Run: ``recstream serve`` (after ``recstream stack up`` and a trained checkpoint).
"""

from __future__ import annotations

import signal
import threading
import time

import ray
import requests
from ray import serve
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from serve.app import build_app
from serve.config import ServeSettings, load_app_config, serve_settings


def deploy(s: ServeSettings, *, namespace: str = "recstream") -> str:
    """Connect to the cluster at ``s.ray_address``, deploy the app, return its base URL.

    Ray reads its token settings when it is imported: the CLI exports them (see
    :func:`infra.stack.ray_auth_env`) before anything imports ray.
    """
    if not ray.is_initialized():
        ray.init(address=s.ray_address, namespace=namespace, log_to_driver=False)
    cfg = load_app_config(s.config_path)
    gpus = ray.cluster_resources().get("GPU", 0) > 0
    serve.start(http_options={"host": s.http_host, "port": s.http_port})
    serve.run(build_app(cfg, s.feast, gpus_available=gpus), name=cfg.name,
              route_prefix=cfg.route_prefix)
    base = f"http://{s.http_host}:{s.http_port}{cfg.route_prefix.rstrip('/')}"
    _wait_healthy(base)
    return base


@retry(retry=retry_if_exception_type(requests.RequestException), stop=stop_after_delay(60),
       wait=wait_fixed(0.5), reraise=True)
def _wait_healthy(base: str) -> None:
    requests.get(f"{base}/healthz", timeout=2).raise_for_status()


def shutdown() -> None:
    """Remove the app and disconnect (the cluster itself keeps running)."""
    if ray.is_initialized():
        serve.shutdown()
        ray.shutdown()


def run_forever() -> int:
    """Deploy and block until SIGINT/SIGTERM, then tear the app down."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    base = deploy(serve_settings())
    print(f"serving at {base}/rank (Ctrl-C to stop)", flush=True)
    while not stop.is_set():
        time.sleep(0.5)
    shutdown()
    return 0
