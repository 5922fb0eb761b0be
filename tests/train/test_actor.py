"""The incremental trainer as a Ray actor on a local Ray cluster, against the real broker:
it follows a stream of samples and publishes guarded versions; stop() ends it cleanly."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from models.registry import Registry
from stream.kafka import KafkaConfig

from .conftest import as_samples, bootstrap, produce_samples, train_settings_for

pytestmark = pytest.mark.integration


@pytest.fixture
def ray_local() -> Iterator[None]:
    import ray

    # address="local": always a new instance, never a cluster someone else left running
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             namespace="recstream")
    try:
        yield
    finally:
        ray.shutdown()


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
