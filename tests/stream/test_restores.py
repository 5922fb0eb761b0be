"""Restores off the poll loop: a restore longer than the poll interval costs neither the
group's membership nor a batch, and the result is exact."""

from __future__ import annotations

import time

import pytest
from prometheus_client import REGISTRY

from stream.consumer import StreamConsumer
from stream.producer import events_from_frame, produce
from stream.samplelog import SampleLog
from stream.samples import JoinState
from stream.settings import StreamSettings
from stream.synthetic import SyntheticConfig, generate
from tests.stream.conftest import assert_exact, drain, verify


def _count(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_a_restore_longer_than_the_poll_interval_keeps_the_group_and_every_batch(
    settings: StreamSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every restore of partition 0 takes 1.2x ``max_poll_interval_ms`` (a changelog of
    minutes of open impressions at production rates). Done between two polls, it made the
    member leave the group or abandon its batch, and begin the restore again, for ever: the
    drain below timed out. Now each partition is restored once and no batch is abandoned.
    (The restores run one at a time: the others wait for partition 0's.)"""
    produce(events_from_frame(generate(1500, SyntheticConfig(n_users=60,
                                                             seconds_between_events=0.2)),
                              id_prefix="r"), settings.kafka)
    real = SampleLog.restore
    slow_s = 1.2 * settings.kafka.max_poll_interval_ms / 1000

    def restore(self: SampleLog, p: int) -> JoinState:
        if p == 0:
            time.sleep(slow_s)
        return real(self, p)

    monkeypatch.setattr(SampleLog, "restore", restore)
    restores = _count("recstream_stream_partition_restores_total")
    abandoned = sum(_count("recstream_stream_batches_abandoned_total", {"stage": s})
                    for s in ("samples", "feast"))
    consumer = StreamConsumer(settings, client_id="slow-restore")
    try:
        drain([consumer], settings, timeout_s=90)
    finally:
        consumer.close()
    assert _count("recstream_stream_partition_restores_total") - restores \
        == settings.kafka.partitions
    assert sum(_count("recstream_stream_batches_abandoned_total", {"stage": s})
               for s in ("samples", "feast")) == abandoned
    assert_exact(verify(settings))
