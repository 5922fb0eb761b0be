"""The incremental trainer on the real broker: it follows the samples topic, publishes
guarded versions on a frozen bank, rejects a poisoned batch, and counts every record once."""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd

from models.registry import Registry
from stream.kafka import KafkaConfig
from train.incremental import IncrementalTrainer

from .conftest import (
    as_samples,
    assert_each_record_once,
    bank_bytes,
    bootstrap,
    produce_samples,
    train_settings_for,
)


def _drain(trainer: IncrementalTrainer, want: int, per_update: int) -> list:
    """Poll and update every ``per_update`` samples until ``want`` samples were read."""
    results, read = [], 0
    for _ in range(2000):
        read += trainer.poll(100)
        if trainer.pending_samples() >= per_update or (read >= want and trainer.pending):
            results.append(trainer.step())
        if read >= want and not trainer.pending:
            return results
    raise AssertionError(f"read {read} of {want} samples")


def test_follows_the_stream_and_publishes_guarded_versions(
        world: pd.DataFrame, kafka_cfg: KafkaConfig, tmp_path: Path) -> None:
    s = train_settings_for(tmp_path, kafka_cfg)
    first = bootstrap(world, s)
    reg = Registry(s.registry_root)
    bank_before = bank_bytes(reg.load(first).bank.state_dict())
    records = produce_samples(kafka_cfg, as_samples(world, 3000, 9000))
    trainer = IncrementalTrainer(s)
    try:
        results = _drain(trainer, 6000, per_update=1000)
    finally:
        trainer.close()
    promoted = [r for r in results if r and r.promoted]
    assert len(promoted) >= 2, results
    live = reg.pointer("din")
    assert live == promoted[-1].version
    chain = [reg.manifest(r.version) for r in promoted]
    assert chain[0]["parent"] == first
    assert all(b["parent"] == a["version"] for a, b in itertools.pairwise(chain))
    assert {m["bank_version"] for m in chain} == {reg.manifest(first)["bank_version"]}
    assert bank_bytes(reg.load(live).bank.state_dict()) == bank_before
    assert all(m["metrics"]["candidate"]["auc"] >= m["metrics"]["live"]["auc"] - 0.01
               for m in chain)
    assert_each_record_once(reg, "din", records, kafka_cfg.partitions)


def test_a_poisoned_batch_is_rejected_and_live_stays(
        world: pd.DataFrame, kafka_cfg: KafkaConfig, tmp_path: Path) -> None:
    s = train_settings_for(tmp_path, kafka_cfg)
    bootstrap(world, s)
    reg = Registry(s.registry_root)
    good = produce_samples(kafka_cfg, as_samples(world, 3000, 4500))
    trainer = IncrementalTrainer(s)
    try:
        first = _drain(trainer, 1500, per_update=1500)
        assert first[-1].promoted, first
        live = reg.pointer("din")
        poisoned = produce_samples(kafka_cfg, as_samples(world, 4500, 7500,
                                                         flip=True))
        results = _drain(trainer, 3000, per_update=3000)
    finally:
        trainer.close()
    assert [r.promoted for r in results] == [False]
    assert results[0].reason in ("label_shift", "auc", "logloss", "calibration", "anchor_auc",
                                 "anchor_logloss", "anchor_calibration")
    assert reg.pointer("din") == live
    assert reg.rejections("din")[-1]["reason"] == results[0].reason
    assert_each_record_once(reg, "din", good + poisoned, kafka_cfg.partitions)
