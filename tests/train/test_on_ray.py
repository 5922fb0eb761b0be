"""The jobs on a local Ray cluster against the real broker: the incremental trainer as a Ray
actor follows a stream of samples and publishes guarded versions; the full refresh trains a
new bank on Ray Train from what the stream exported, and the incremental trainer follows it."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from models.registry import Registry
from stream.kafka import KafkaConfig
from stream.offline import SampleExporter
from stream.settings import StreamSettings
from train.full import refresh
from train.incremental import IncrementalTrainer
from train.settings import GuardSettings

from .conftest import as_samples, bootstrap, produce_samples, train_settings_for

pytestmark = pytest.mark.integration



def test_the_trainer_actor_follows_the_stream_and_promotes(
        ray_local: None, world: pd.DataFrame, kafka_cfg: KafkaConfig, tmp_path: Path) -> None:
    from train import actor

    s = train_settings_for(tmp_path, kafka_cfg, interval_s=0.2, max_new_samples=1000)
    first = bootstrap(world, s)
    reg = Registry(s.registry_root)
    trainer = actor.start(s)
    produce_samples(kafka_cfg, as_samples(world, 3000, 6000))
    deadline = time.monotonic() + 180
    while len(reg.versions("din")) < 3:  # the first model and two guarded updates
        assert time.monotonic() < deadline, reg.rejections("din")
        time.sleep(0.5)
    last = actor.stop("din")
    assert last is not None and last["error"] is None and not last["running"]
    assert last["updates"] >= 2
    versions = reg.versions("din")
    assert versions[0]["version"] == first
    assert all(v["metrics"]["differences"] for v in versions[1:])  # judged by the guard
    assert reg.pointer("din") in {v["version"] for v in versions[1:]}
    assert actor.stop("din") is None  # gone
    del trainer


def test_a_full_refresh_publishes_a_new_bank_and_the_trainer_follows_it(
        ray_local: None, world: pd.DataFrame, kafka_cfg: KafkaConfig, tmp_path: Path) -> None:
    # a lenient guard: the guard's own tests are elsewhere; here the path matters
    lenient = GuardSettings(min_eval_samples=50, auc_tol=1, logloss_tol=1,
                            calibration_tol=10, anchor_auc_tol=1, max_label_shift=100)
    s = train_settings_for(tmp_path, kafka_cfg, feast_data_dir=tmp_path / "feast",
                           guard=lenient, epochs=2)
    first = bootstrap(world, s)
    reg = Registry(s.registry_root)
    produce_samples(kafka_cfg, as_samples(world, 3000, 6000))
    stream = StreamSettings(kafka=kafka_cfg, group_id="stream-test", metrics_port=0)
    stream.feast.data_dir = s.feast_data_dir
    exporter = SampleExporter(stream)
    try:
        assert exporter.export_once(timeout_ms=2000) == 3000
    finally:
        exporter.close()
    result = refresh(s)
    assert result["promoted"] and result["samples"] == 3000, result
    fresh = reg.manifest(result["version"])
    assert fresh["parent"] == first and fresh["sample_range"]["source"] == "offline"
    assert fresh["bank_version"] != reg.manifest(first)["bank_version"]
    assert reg.pointer("din") == result["version"]

    produce_samples(kafka_cfg, as_samples(world, 6000, 7500))
    trainer = IncrementalTrainer(s.model_copy(update={"group_id": "after-refresh"}))
    try:
        step = None
        for _ in range(400):
            trainer.poll(100)
            if trainer.pending_samples() >= 4500:  # what the topic holds by now
                step = trainer.step()
                break
    finally:
        trainer.close()
    assert step is not None and step.promoted, step
    top = reg.manifest(step.version)
    assert top["parent"] == result["version"] and top["bank_version"] == fresh["bank_version"]
