"""The online AUC of served scores (stream/ab_online.py): the join of the predictions topic to
the samples, and ``recstream ab report --online`` on the real broker with predictions logged
by Serve's own prediction log."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from infra.cli import main
from serve.predlog import PredictionLog
from stream.ab_online import (
    PREDICTION_COLUMNS,
    join_scores,
    online_auc,
    read_predictions,
    unambiguous,
)
from stream.kafka import KafkaConfig, make_producer
from stream.samples import Sample, encode_batch
from stream.settings import stream_settings

T0 = 1_767_225_600_000


def _world(requests: int = 60, seed: int = 0) -> tuple[list[dict[str, Any]], list[Sample]]:
    """Answers of two variants (5 items each) and the samples of their impressions: variant
    ``good`` scores the clicked items higher, ``noise`` at random; one impression in ten was
    never answered by Serve (no request id); request 0's answer is also a shadow's."""
    rng = np.random.default_rng(seed)
    answers: list[dict[str, Any]] = []
    samples: list[Sample] = []
    for r in range(requests):
        variant = "good" if r % 2 else "noise"
        items = [int(i) for i in rng.choice(np.arange(1, 200), 5, replace=False)]
        clicks = rng.random(5) < 0.3
        scores = np.where(clicks, 0.6, 0.4) + rng.normal(0, 0.15, 5) if variant == "good" \
            else rng.random(5)
        answers.append({"request_id": f"r{r}", "user_id": 1 + r % 7, "variant": variant,
                        "model_version": f"{variant}-v{1 + r // 30}", "bank_version": "b",
                        "shadow": False, "ts_ms": T0 + r,
                        "items": [{"item_id": i, "score": float(s), "position": n}
                                  for n, (i, s) in enumerate(zip(items, scores, strict=True))]})
        for n, (item, clicked) in enumerate(zip(items, clicks, strict=True)):
            rid = None if (r * 5 + n) % 10 == 9 else f"r{r}"
            samples.append(Sample(f"0-{r}-{n}", 1 + r % 7, item, 1, int(clicked), T0 + r, [],
                                  [], [], 0, r * 5 + n, rid, variant, f"{variant}-v1"))
    first: list[dict[str, Any]] = answers[0]["items"]
    shadow_items = [{**it, "score": 1.0 - it["score"]} for it in first]
    answers.append({**answers[0], "variant": "good", "shadow": True, "items": shadow_items})
    return answers, samples


def _samples_frame(samples: list[Sample]) -> pd.DataFrame:
    return pd.DataFrame([s.to_dict() for s in samples])


def test_join_and_auc_by_variant_and_version() -> None:
    answers, samples = _world()
    preds = pd.DataFrame([(a["request_id"], a["user_id"], a["variant"], a["model_version"],
                           it["item_id"], it["score"]) for a in answers if not a["shadow"]
                          for it in a["items"]], columns=PREDICTION_COLUMNS)
    frame = _samples_frame(samples)
    got = online_auc(preds, frame)
    joined = join_scores(preds, frame)
    assert got["joined"] == len(joined) == 270  # 300 impressions, 30 without a request id
    assert got["unjoined_samples"] == 0
    for variant in ("good", "noise"):
        rows = joined[joined.variant == variant]
        assert got["variants"][variant]["auc"] == pytest.approx(
            roc_auc_score(rows.label, rows.score))
        assert got["variants"][variant]["clicks"] == int(rows.label.sum())
    assert got["variants"]["good"]["auc"] > 0.8 > got["variants"]["noise"]["auc"]
    assert {(r["variant"], r["model_version"]) for r in got["model_versions"]} == {
        ("good", "good-v1"), ("good", "good-v2"), ("noise", "noise-v1"), ("noise", "noise-v2")}
    assert sum(r["impressions"] for r in got["model_versions"]) == 270
    only_clicks = frame.assign(label=1)  # one class only: no AUC, no error
    assert online_auc(preds, only_clicks)["variants"]["good"]["auc"] is None
    # a client that reused request id r1 for another answer: r1's items are ambiguous, out;
    # an exact repeat (the producer's at least once) is one answer
    reused = preds[preds.request_id == "r1"].assign(score=0.5, model_version="good-v9")
    mixed = unambiguous(pd.concat([preds, preds.iloc[:5], reused], ignore_index=True))
    assert mixed.attrs["ambiguous"] == 5 and len(mixed) == len(preds) - 5
    assert "r1" not in set(mixed.request_id) and online_auc(mixed, frame)["ambiguous"] == 5


@pytest.fixture
def ab_env(kafka_cfg: KafkaConfig, monkeypatch: pytest.MonkeyPatch) -> Iterator[KafkaConfig]:
    monkeypatch.setenv("STREAM_KAFKA__BOOTSTRAP_SERVERS", kafka_cfg.bootstrap_servers)
    monkeypatch.setenv("STREAM_KAFKA__TOPICS__SAMPLES", kafka_cfg.topics.samples)
    monkeypatch.setenv("STREAM_KAFKA__TOPICS__PREDICTIONS", kafka_cfg.topics.predictions)
    stream_settings.cache_clear()
    yield kafka_cfg
    stream_settings.cache_clear()


@pytest.mark.integration
def test_ab_report_online_on_the_real_broker(ab_env: KafkaConfig,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    answers, samples = _world()
    log = PredictionLog(ab_env)
    for a in [*answers, answers[5]]:  # one answer logged twice: counted once
        assert log.append(a)
    log.close()
    producer = make_producer(ab_env)
    producer.send(ab_env.topics.samples, value=encode_batch(0, samples), partition=0)
    producer.flush()
    producer.close()
    deadline = time.monotonic() + 30
    while len(preds := read_predictions(ab_env)) < 300 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(preds) == 300  # the shadow answer left out, the repeat counted once
    assert set(preds[preds.request_id == "r0"].variant) == {"noise"}  # r0's own, not its shadow
    assert preds.attrs["ambiguous"] == 0
    assert main(["ab", "report", "--online", "--json", "--weights", "good=1,noise=1"]) == 0
    report = json.loads(capsys.readouterr().out)
    expected = online_auc(preds, _samples_frame(samples))
    assert report["online"] == expected and report["online"]["joined"] == 270
    assert main(["ab", "report", "--online"]) == 0
    text = capsys.readouterr().out
    assert "online AUC" in text and "good-v2" in text
    assert main(["ab", "report", "--online", "--parquet", "x"]) == 1
