"""Ray Serve follows the registry: 100 promotions under continuous HTTP load, 0 failed
requests, every response scored by a complete (bank, top) pair of the registry and answered
with its versions, the last promotion served within 10 s; a version that fails to verify is
not served. On a real local Ray, a real Feast store and a real registry."""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

import pytest
import requests
import torch
import yaml

from features.store import FeastConfig
from models.registry import Registry
from serve import deploy as serving
from serve.config import ServeSettings
from stream.synthetic import SyntheticConfig, generate
from train.job import train_full
from train.settings import TrainSettings
from train.update import on_same_bank

pytestmark = pytest.mark.integration



def _versions(root: Path, tmp: Path) -> dict[str, str]:
    """Three tops on one bank and a model on another bank; version -> its bank version."""
    reg = Registry(root)
    first = train_full(generate(1500, SyntheticConfig(n_users=30, seed=3)),
                       TrainSettings(out_dir=tmp / "a", registry_root=str(root), dim=8))
    live = reg.load(first["version"])
    for k in range(2):
        top = on_same_bank(live)
        with torch.no_grad():
            for p in top.top.parameters():
                p.add_(0.01 * (k + 1))
        reg.publish(top, "din", parent=first["version"], sample_range={}, metrics={})
    other = train_full(generate(1500, SyntheticConfig(n_users=30, seed=4)),
                       TrainSettings(out_dir=tmp / "b", registry_root=str(root), dim=8,
                                     seed=1))
    assert reg.manifest(other["version"])["bank_version"] != \
        reg.manifest(first["version"])["bank_version"]
    return {m["version"]: m["bank_version"] for m in reg.versions("din")}


def test_a_hundred_promotions_under_load_fail_no_request(
        ray_local: None, tmp_path: Path, feast_cfg: FeastConfig, free_tcp_port: int) -> None:
    root = tmp_path / "registry"
    banks = _versions(root, tmp_path)
    reg = Registry(root)
    cfg = {"name": "reload", "route_prefix": "/", "reload_poll_s": 0.2,
           "variants": [{"name": "a", "family": "din", "pointer": "live"}]}
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(cfg))
    base = serving.deploy(ServeSettings(config_path=tmp_path / "serve.yaml", feast=feast_cfg,
                                        http_port=free_tcp_port, registry_root=str(root),
                                        log_predictions=False))
    stop = threading.Event()
    seen: list[tuple[float, int, str | None, str | None, float]] = []

    def load(user: int) -> None:
        with requests.Session() as http:
            while not stop.is_set():
                start = time.monotonic()
                r = http.post(f"{base}/rank", json={"user_id": user, "candidates": [1, 2, 3]},
                              timeout=30)
                body = r.json() if r.status_code == 200 else {}
                seen.append((start, r.status_code, body.get("model_version"),
                             body.get("bank_version"), time.monotonic() - start))

    clients = [threading.Thread(target=load, args=(u,), daemon=True) for u in (1, 2, 3)]
    for c in clients:
        c.start()
    order = sorted(banks)
    try:
        for n in range(100):
            reg.promote("din", order[n % len(order)], reason=f"reload test {n}")
            time.sleep(0.1)
        last = order[99 % len(order)]
        promoted_at = time.monotonic()
        while not any(v == last and t > promoted_at for t, _, v, _, _ in seen[-50:]):
            assert time.monotonic() - promoted_at < 10, "the last promotion not served in 10 s"
            time.sleep(0.05)
    finally:
        stop.set()
        for c in clients:
            c.join(timeout=30)
    assert len(seen) > 100
    assert {code for _, code, _, _, _ in seen} == {200}, "failed requests"
    assert all(v in banks and banks[v] == b for _, _, v, b, _ in seen), "mixed or unknown"
    assert len({v for _, _, v, _, _ in seen}) >= 3  # the reloads reached the replica
    latency = sorted(x for *_, x in seen)
    print(f"\n{len(seen)} requests during 100 promotions: p50 "
          f"{statistics.median(latency) * 1000:.1f} ms, p99 "
          f"{latency[int(0.99 * len(latency))] * 1000:.1f} ms")

    # A version whose file does not match its hash is not served: the old one stays.
    broken = reg.publish(reg.load(last), "din", parent=last, sample_range={}, metrics={})
    top = next((root / "versions" / broken).glob("*.safetensors"))
    raw = bytearray(top.read_bytes())
    raw[-1] ^= 0xFF
    top.write_bytes(bytes(raw))
    reg.promote("din", broken, reason="a corrupt version")
    time.sleep(2.0)  # ten polls of the watcher
    for _ in range(5):
        body = requests.post(f"{base}/rank", json={"user_id": 1, "candidates": [1, 2]},
                             timeout=30).json()
        assert body["model_version"] == last, body
