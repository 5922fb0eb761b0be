"""End to end on real components: Kafka (Tansu) -> consumer -> Feast -> Ray Serve -> HTTP.

No mocks on this path: events go through the real broker, sequences through a real Feast
store, and the ranking through a real Ray Serve deployment answering over HTTP.
"""

from __future__ import annotations

import re
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from features.store import FeastConfig, FeatureAccess, repo_config
from serve import deploy as serving
from serve.config import ServeSettings
from stream.kafka import KafkaConfig
from stream.producer import events_from_frame, produce
from stream.settings import StreamSettings
from stream.synthetic import SyntheticConfig, generate
from tests.infra.promfiles import SERVE_DASHBOARD, SERVE_RULES, dashboard_exprs, rules_of
from train.job import train_full
from train.settings import TrainSettings

pytestmark = pytest.mark.integration

WORLD = SyntheticConfig(n_users=50, seed=11)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[int]:
    """A local Ray instance; yields the port of its Prometheus metrics endpoint."""
    import ray

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        metrics_port = int(sock.getsockname()[1])
    # address="local": always a new instance, never a cluster someone else left running
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             namespace="recstream-test", _metrics_export_port=metrics_port)
    try:
        yield metrics_port
    finally:
        ray.shutdown()  # our own instance: Serve goes with it (serve.shutdown waited ~30 s)


def _ray_names_read() -> set[str]:
    """The ``ray_*`` series names the queries of infra/prometheus/serve_rules.yml and of the
    serve dashboard read."""
    exprs = [r["expr"] for r in rules_of(SERVE_RULES)] + dashboard_exprs(SERVE_DASHBOARD)
    names = set(re.findall(r"\bray_\w+", " ".join(exprs)))
    assert names
    return names


def _scrape_until(port: int, needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        try:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except requests.RequestException:
            text = ""
        if needle in text:
            return text
        time.sleep(1)
    pytest.fail(f"{needle!r} not exported on :{port}/metrics after {timeout} s")


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    out = tmp_path / "models" / "din"
    train_full(generate(3000, WORLD), TrainSettings(arch="din", out_dir=out, epochs=1),
               publish=False)
    return out


def _consume_until(features: FeatureAccess, want: dict[int, int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seqs = features.read_sequences(want)
        if all(len(seqs[u].item_ids) == n for u, n in want.items() if u in seqs) and \
                len(seqs) == len(want):
            return
        time.sleep(0.2)
    pytest.fail(f"sequences not in Feast after {timeout} s: want {want}")


def test_clicks_through_kafka_are_ranked_over_http(
    kafka_cfg: KafkaConfig, feast_cfg: FeastConfig, features: FeatureAccess,
    ray_cluster: int, model_dir: Path, tmp_path: Path, free_tcp_port: int,
) -> None:
    from stream.service import run_service

    live = generate(600, SyntheticConfig(n_users=50, seed=12))
    stop = threading.Event()
    consumer = threading.Thread(
        target=run_service,
        args=(StreamSettings(kafka=kafka_cfg, feast=feast_cfg, metrics_port=0), stop),
        daemon=True,
    )
    consumer.start()
    try:
        produce(events_from_frame(live, live=True, id_prefix="e2e"), kafka_cfg)
        clicks = live[live.label == 1]
        want = {int(u): min(int(n), 50) for u, n in clicks.user_id.value_counts().items()}
        _consume_until(features, want, timeout=90)
    finally:
        stop.set()
        consumer.join(timeout=20)

    user = max(want, key=lambda u: want[u])
    expected_hist = clicks[clicks.user_id == user].item_id.tolist()[-50:]
    assert features.read_sequences([user])[user].item_ids == expected_hist

    cfg = {"name": "e2e", "route_prefix": "/", "variants": [
        {"name": "a", "model_dir": str(model_dir), "weight": 1.0},
        {"name": "b", "model_dir": str(model_dir), "weight": 1.0,
         "batch": {"max_batch_size": 4, "batch_wait_timeout_s": 0.001}},
    ]}
    cfg_path = tmp_path / "serve.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    base = serving.deploy(ServeSettings(config_path=cfg_path, feast=feast_cfg,
                                        http_port=free_tcp_port))

    candidates = [int(i) for i in live.item_id.unique()[:30]] + [10**12]  # last one unseen
    resp = requests.post(f"{base}/rank", json={"user_id": user, "candidates": candidates},
                         timeout=30)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["history_length"] == len(expected_hist)
    assert body["variant"] in {"a", "b"}
    scores = [it["score"] for it in body["items"]]
    assert sorted(it["item_id"] for it in body["items"]) == sorted(candidates)
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)

    # Sticky split: the same user always gets the same arm; a forced arm is honoured.
    again = requests.post(f"{base}/rank", json={"user_id": user, "candidates": candidates},
                          timeout=30).json()
    assert again["variant"] == body["variant"]
    other = "b" if body["variant"] == "a" else "a"
    forced = requests.post(f"{base}/rank", json={"user_id": user, "candidates": candidates,
                                                 "variant": other, "k": 5}, timeout=30).json()
    assert forced["variant"] == other and len(forced["items"]) == 5
    assert [it["item_id"] for it in forced["items"]] == [it["item_id"] for it in body["items"][:5]]

    # A user with no clicks yet still gets scores (empty history).
    cold = requests.post(f"{base}/rank", json={"user_id": 999_999, "candidates": candidates[:3]},
                         timeout=30).json()
    assert cold["history_length"] == 0 and len(cold["items"]) == 3

    # Bad input gets a clear 4xx.
    bad = [
        ({"user_id": user, "candidates": []}, 422),
        ({"user_id": -1, "candidates": [1]}, 422),
        ({"user_id": user}, 422),
        ({"user_id": user, "candidates": [1], "variant": "nope"}, 400),
    ]
    for payload, code in bad:
        r = requests.post(f"{base}/rank", json=payload, timeout=30)
        assert r.status_code == code, (payload, r.status_code, r.text)
    assert requests.post(f"{base}/rank", data=b"{not json", timeout=30,
                         headers={"content-type": "application/json"}).status_code == 422

    # An online store that cannot be read (another writer holds the SQLite file) gets a 503
    # with Retry-After, not a 500 after the store's timeouts; the next request is served.
    other = sqlite3.connect(repo_config(feast_cfg).online_store.path, timeout=0)
    try:
        other.execute("BEGIN EXCLUSIVE")
        down = requests.post(f"{base}/rank", json={"user_id": user, "candidates": [1]},
                             timeout=30)
    finally:
        other.close()
    assert down.status_code == 503 and down.headers["retry-after"] == "1", down.text
    assert requests.post(f"{base}/rank", json={"user_id": user, "candidates": [1]},
                         timeout=30).status_code == 200

    # The ingress' request counter reaches Prometheus through Ray's metrics agent.
    text = _scrape_until(ray_cluster, "recstream_rank_requests", timeout=60)
    assert f'variant="{body["variant"]}"' in text
    # ... and every Ray metric the serving rules and dashboard read is exported by name.
    for name in sorted(_ray_names_read()):
        _scrape_until(ray_cluster, f"\n{name}{{", timeout=60)
