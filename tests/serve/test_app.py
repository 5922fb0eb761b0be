"""The serving app end to end on a real local Ray, a real Feast store, the real broker and a
real registry: predictions logged one for one, a shadow variant logged and never returned,
sticky A/B proportions, a live weight change without a restart, /score, bad requests."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from features.store import FeastConfig
from serve import deploy as serving
from serve.config import ServeSettings
from serve.experiment import ExperimentStore
from stream.kafka import KafkaConfig, make_consumer
from stream.synthetic import SyntheticConfig, generate
from train.job import train_full
from train.settings import TrainSettings

pytestmark = pytest.mark.integration
KEY = "s3cret-key"



def _post(base: str, path: str, body: Any, key: str | None = KEY, **kw: Any
          ) -> requests.Response:
    headers = {"x-api-key": key} if key else {}
    return requests.post(f"{base}{path}", json=body, headers=headers, timeout=30, **kw)


def _predictions(kafka: KafkaConfig, want: int) -> list[dict[str, Any]]:
    from kafka import TopicPartition

    from stream.topicread import read_range

    reader = make_consumer(kafka, None)
    try:
        out: list[dict[str, Any]] = []
        for p in sorted(reader.partitions_for_topic(kafka.topics.predictions) or ()):
            tp = TopicPartition(kafka.topics.predictions, p)
            out += [json.loads(r.value) for r in read_range(reader, tp, 0)]
        return out
    finally:
        reader.close()


def test_the_app_logs_splits_shadows_and_refuses(
        ray_local: None, tmp_path: Path, feast_cfg: FeastConfig, kafka_cfg: KafkaConfig,
        free_tcp_port: int) -> None:
    root = tmp_path / "registry"
    first = train_full(generate(1500, SyntheticConfig(n_users=30, seed=3)),
                       TrainSettings(out_dir=tmp_path / "m", registry_root=str(root), dim=8))
    cfg = {"name": "app", "route_prefix": "/", "max_candidates": 50, "reload_poll_s": 0.2,
           "ingress_replicas": 1, "reader_replicas": 1, "shadow": "s",
           "variants": [{"name": "a", "family": "din", "weight": 0.5},
                        {"name": "b", "version": first["version"], "weight": 0.5},
                        {"name": "s", "family": "din", "weight": 0.0}]}
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(cfg))
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY}\n")
    experiment = tmp_path / "experiment.json"
    s = ServeSettings(config_path=tmp_path / "serve.yaml", feast=feast_cfg,
                      http_port=free_tcp_port, registry_root=str(root), kafka=kafka_cfg,
                      api_keys_file=keys, experiment_path=experiment)
    base = serving.deploy(s)

    # Sticky 50/50 split over 400 users, answers logged one for one, shadow never returned.
    users = list(range(1, 401))
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda u: _post(base, "/rank", {"user_id": u,
                                                               "candidates": [1, 2, 3]}).json(),
                               users))
    arms = Counter(b["variant"] for b in bodies)
    assert set(arms) == {"a", "b"}
    assert abs(arms["a"] - 200) < 4 * math.sqrt(400 * 0.25), arms  # within 4 sd
    again = _post(base, "/rank", {"user_id": 7, "candidates": [1, 2]}).json()
    assert again["variant"] == bodies[6]["variant"]
    records = _predictions(kafka_cfg, 2 * 401)
    answered = {r["request_id"]: r for r in records if not r["shadow"]}
    assert len(answered) == 401 and len([r for r in records if not r["shadow"]]) == 401
    for body in bodies:
        rec = answered[body["request_id"]]
        assert (rec["user_id"], rec["variant"], rec["model_version"], rec["bank_version"]) == \
            (body["user_id"], body["variant"], body["model_version"], body["bank_version"])
        assert [(i["item_id"], i["score"], i["position"]) for i in rec["items"]] == \
            [(i["item_id"], i["score"], n) for n, i in enumerate(body["items"])]
    shadows = [r for r in records if r["shadow"]]
    assert shadows and all(r["variant"] == "s" and r["request_id"] in answered
                           for r in shadows)

    # A live weight change: no restart, users of the unchanged arm stay, the change recorded.
    change = ExperimentStore(experiment).set({"weights": {"a": 0.5, "b": 0.0}},
                                             reason="stop b")
    assert change["before"] is None
    for _ in range(100):
        if requests.get(f"{base}/variants", headers={"x-api-key": KEY},
                        timeout=10).json()["weights"]["b"] == 0.0:
            break
        time.sleep(0.2)
    after = [_post(base, "/rank", {"user_id": u, "candidates": [1]}).json()["variant"]
             for u in users[:60]]
    assert set(after) == {"a"}
    assert all(b["variant"] == "a" for b in bodies[:60] if b["variant"] == "a")

    # /score keeps the candidates' order.
    scored = _post(base, "/score", {"user_id": 3, "candidates": [9, 4, 7, 4]}).json()
    assert scored["item_ids"] == [9, 4, 7] and len(scored["scores"]) == 3

    # Bad requests: a short 4xx that never echoes the request; an unknown user is served.
    cases = [
        ({"user_id": 1, "candidates": list(range(1, 52))}, 422),  # over max_candidates
        ({"user_id": "42", "candidates": [1]}, 422),
        ({"user_id": 1, "candidates": [True]}, 422),
        ({"user_id": 1, "candidates": ["secret-looking-id"]}, 422),
    ]
    for body, code in cases:
        r = _post(base, "/rank", body)
        assert r.status_code == code, (body, r.text)
        assert "secret-looking-id" not in r.text and len(r.text) < 1000
    assert _post(base, "/rank", {"user_id": 1, "candidates": [1]}, key="wrong").status_code \
        == 401
    assert _post(base, "/rank", {"user_id": 1, "candidates": [1]}, key=None).status_code == 401
    huge = _post(base, "/rank", {"user_id": 1, "candidates": [1] * 500_000})  # 1.5 MB
    assert huge.status_code == 413, huge.text
    cold = _post(base, "/rank", {"user_id": 987_654_321, "candidates": [1, 2]}).json()
    assert cold["history_length"] == 0 and len(cold["items"]) == 2
