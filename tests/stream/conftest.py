"""Fixtures and helpers of the stream tests: settings on the real broker and Feast, checks.

``verify`` compares what the pipeline produced (Feast sequences, the samples topic) with the
offline recomputation from the events topic; every crash and rebalance test ends with it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import pytest
from kafka.errors import KafkaTimeoutError
from kafka.producer.future import FutureProduceResult, FutureRecordMetadata

from features.store import FeastConfig, FeatureAccess
from stream.consumer import StreamConsumer
from stream.dlq import DeadLetter, read_letters
from stream.kafka import KafkaConfig, make_consumer
from stream.recompute import compare_samples, read_topic, recompute
from stream.samples import decode_batch
from stream.settings import StreamSettings
from stream.topicread import true_end

WINDOW_S = 1.0
MAX_HISTORY = 6


@pytest.fixture
def settings(kafka_cfg: KafkaConfig, feast_cfg: FeastConfig) -> StreamSettings:
    """Stream settings on fresh topics and a fresh Feast repo; short window and history."""
    return StreamSettings(kafka=kafka_cfg, feast=feast_cfg, group_id=f"g-{uuid.uuid4().hex[:8]}",
                          metrics_port=0, attribution_window_s=WINDOW_S, max_history=MAX_HISTORY)


def committed_offsets(s: StreamSettings) -> list[tuple[int, int]]:
    """(committed offset or 0, end offset) of every events partition for the group."""
    from kafka import TopicPartition

    probe = make_consumer(s.kafka, s.group_id)
    try:
        parts = probe.partitions_for_topic(s.kafka.topics.events) or set()
        tps = [TopicPartition(s.kafka.topics.events, p) for p in parts]
        return [(probe.committed(tp) or 0, true_end(probe, tp)) for tp in tps]
    finally:
        probe.close()


def committed_all(s: StreamSettings) -> bool:
    """True when the group's committed offsets reach the end of every events partition (False
    while the probe knows no partition: a metadata fetch that failed must not read as done)."""
    pairs = committed_offsets(s)
    return bool(pairs) and all(done >= end for done, end in pairs)


def committed_any(s: StreamSettings) -> bool:
    """True when the group has committed an offset past 0 on some events partition."""
    return any(done > 0 for done, _ in committed_offsets(s))


def failed_send(topic: str) -> FutureRecordMetadata:
    """What kafka-python returns for a send the broker never acknowledged (fault injection)."""
    from kafka import TopicPartition

    result = FutureProduceResult(TopicPartition(topic, 0))
    future = FutureRecordMetadata(result, -1, None, None, -1, -1, -1)
    result.failure(KafkaTimeoutError("injected: not acknowledged"))
    return future


def abandon(consumer: StreamConsumer) -> None:
    """What a crash leaves: nothing committed or flushed beyond what already was."""
    consumer.consumer.close(autocommit=False)
    consumer.producer.close(timeout=0)
    consumer.samples.reader.close()


def run_to_end(s: StreamSettings, client_id: str) -> None:
    """A new consumer of the group processes everything there is, then closes."""
    consumer = StreamConsumer(s, client_id=client_id)
    try:
        drain([consumer], s)
    finally:
        consumer.close()


def drain(consumers: list[StreamConsumer], s: StreamSettings, timeout_s: float = 60) -> None:
    """Poll until everything is committed and the idle flush closed every open impression."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for c in consumers:
            c.poll_once(timeout_ms=100)
        owned = {p for c in consumers for p in c.assigned()}
        # Every partition must be owned (and so restored and flushed) before "no pending"
        # means anything: a member that died a moment ago may still hold some.
        if len(owned) == s.kafka.partitions and sum(c.pending() for c in consumers) == 0 \
                and committed_all(s):
            return
    raise AssertionError("the consumers did not drain in time")


@dataclass
class Outcome:
    samples_expected: int
    samples_lost: int
    samples_duplicated: int
    samples_wrong: int
    users: int
    full_users: int  # users whose history reached max_history (trimming happened)
    sequences_wrong: list[int]
    lost_ids: list[str]


def read_dlq(cfg: KafkaConfig, skip_foreign: bool = False) -> list[DeadLetter]:
    """Every dead letter on the DLQ topic, by source partition and offset (records without
    the letter headers fail the test, or are skipped with ``skip_foreign``)."""
    stored, foreign = read_letters(cfg)
    assert skip_foreign or foreign == 0, f"{foreign} records on the DLQ are not letters"
    return sorted((s.letter for s in stored), key=lambda d: (d.source_partition, d.source_offset))


def verify(s: StreamSettings) -> Outcome:
    """Compare the pipeline's output with the offline recomputation of the events topic."""
    cfg = s.kafka
    dead = [(d.source_partition, d.source_offset) for d in read_dlq(cfg, skip_foreign=True)
            if d.source_group == s.group_id and d.source_topic == cfg.topics.events]
    expected = recompute(read_topic(cfg, cfg.topics.events), s.max_history,
                         s.attribution_window_s, s.max_future_skew_s, dead)
    emitted = [x for recs in read_topic(cfg, cfg.topics.samples).values()
               for _, _, v in recs for x in decode_batch(v or b"{}")]
    lost, dup, wrong = compare_samples(expected.samples, emitted)
    online = FeatureAccess.open(s.feast).read_sequences(expected.sequences)
    bad = [u for u, (items, cats, stamps) in expected.sequences.items()
           if u not in online or (online[u].item_ids, online[u].cat_ids, online[u].ts_ms)
           != (items, cats, stamps)]
    full = sum(len(seq[0]) == s.max_history for seq in expected.sequences.values())
    seen = {x["sample_id"] for x in emitted}
    lost_ids = sorted(sid for sid in expected.samples if sid not in seen)
    return Outcome(len(expected.samples), lost, dup, wrong, len(expected.sequences), full, bad,
                   lost_ids[:20])


def assert_exact(outcome: Outcome) -> None:
    assert outcome.samples_expected > 0 and outcome.users > 0
    assert (outcome.samples_lost, outcome.samples_duplicated, outcome.samples_wrong) == (0, 0, 0)
    assert outcome.sequences_wrong == []
