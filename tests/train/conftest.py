"""Fixtures of the training tests: a synthetic world as stream samples, a registry with a
live version trained on its first part, and a samples topic on the real broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from models.data.samples import build_samples
from models.registry import Registry
from stream.kafka import KafkaConfig, make_producer
from stream.samples import Sample, encode_batch
from stream.synthetic import SyntheticConfig, generate
from train.job import train_full
from train.settings import GuardSettings, TrainSettings

WORLD = SyntheticConfig(n_users=100, n_categories=8, items_per_category=10, drift_every=200,
                        seed=11)
MAX_LEN = 20


@pytest.fixture(scope="session")
def world() -> pd.DataFrame:
    """Synthetic events: the first 3,000 train the first model, the rest stream."""
    return generate(9000, WORLD)


def as_samples(frame: pd.DataFrame, lo: int, hi: int, flip: bool = False) -> list[Sample]:
    """The stream's samples of events ``lo:hi`` of ``frame`` (each event with the user's
    earlier clicks in the whole frame as its history); ``flip``: labels flipped."""
    built = build_samples(frame, max_len=MAX_LEN)
    out = []
    for i in range(lo, hi):
        n = int(built.hist_len[i])
        label = int(built.label[i])
        out.append(Sample(
            sample_id=f"0-{i}", user_id=int(built.user_id[i]),
            item_id=int(built.item_id[i]), category_id=int(built.cat_id[i]),
            label=1 - label if flip else label, event_ts_ms=int(built.ts[i]) * 1000,
            hist_item_ids=built.hist_item[i, :n].tolist(),
            hist_cat_ids=built.hist_cat[i, :n].tolist(), hist_ts_ms=[0] * n,
            source_partition=0, source_offset=i))
    return out


def produce_samples(cfg: KafkaConfig, samples: list[Sample], per_record: int = 25) -> int:
    """Write ``samples`` to the samples topic, ``per_record`` a record, spread over the
    partitions by record; returns the records written."""
    producer = make_producer(cfg)
    n_parts = len(producer.partitions_for(cfg.topics.samples))
    records = 0
    for start in range(0, len(samples), per_record):
        p = records % n_parts
        producer.send(cfg.topics.samples, key=str(p).encode(), partition=p,
                      value=encode_batch(p, samples[start:start + per_record]))
        records += 1
    producer.flush()
    producer.close()
    return records


def train_settings_for(tmp_path: Path, kafka: KafkaConfig, **kw: Any) -> TrainSettings:
    """Settings of a trainer on ``kafka``'s samples topic with a registry under tmp_path."""
    base: dict[str, Any] = dict(
        arch="din", dim=8, max_history=MAX_LEN, out_dir=tmp_path / "first",
        registry_root=str(tmp_path / "registry"), family="din", kafka=kafka,
        group_id="train-test", interval_s=0.5, min_new_samples=200, buffer_samples=2000,
        metrics_port=0, guard=GuardSettings(min_eval_samples=100))
    return TrainSettings(**{**base, **kw})


def bootstrap(world: pd.DataFrame, s: TrainSettings) -> str:
    """Train and publish the family's first live version on the world's first 3,000 events."""
    out = train_full(world.iloc[:3000], s.model_copy(update={"epochs": 4}))
    return str(out["version"])


def bank_bytes(state: dict[str, Any]) -> bytes:
    return b"".join(np.ascontiguousarray(v.cpu().numpy()).tobytes()
                    for _, v in sorted(state.items()))


def covered(reg: Registry, family: str) -> list[tuple[int, int, int]]:
    """(partition, first, end) of every range the family's versions and rejections name."""
    records = [m["sample_range"] for m in reg.versions(family)] + \
        [r["candidate"]["sample_range"] for r in reg.rejections(family)]
    return sorted((int(p), lo, hi) for rng in records if rng.get("source") == "kafka"
                  for p, (lo, hi) in rng["partitions"].items())


def assert_each_record_once(reg: Registry, family: str, records: int, partitions: int) -> None:
    spans = covered(reg, family)
    per_part: dict[int, int] = {}
    for p, lo, hi in spans:
        assert lo == per_part.get(p, 0), f"partition {p}: gap or overlap at {lo}: {spans}"
        per_part[p] = hi
    assert sum(per_part.values()) == records and len(per_part) == partitions
