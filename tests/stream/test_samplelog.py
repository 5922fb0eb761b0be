"""Crash recovery of the join-state changelog: many in-process crashes at every failpoint.

The failpoints raise instead of killing (fast, so there can be many crashes); the crashed
consumer is abandoned without committing, the next one restores from Kafka and Feast.
Records are made tiny so that every batch's changelog is split into part records.
"""

from __future__ import annotations

import time

import msgspec
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from stream import failpoints, samplelog
from stream.consumer import StreamConsumer
from stream.kafka import make_producer
from stream.producer import events_from_frame, produce
from stream.recompute import compare_samples, read_topic, recompute
from stream.samples import Sample, decode_batch, encode_batch, unpack
from stream.settings import StreamSettings
from stream.synthetic import SyntheticConfig, generate
from tests.stream.conftest import (
    abandon,
    assert_exact,
    committed_all,
    drain,
    read_dlq,
    run_to_end,
    verify,
)

POINTS = ("after_samples", "after_changelog", "after_feast", "after_commit")
CRASHES = 8  # two at each point
BAD_MESSAGES = 30


def test_crashes_at_every_point_with_split_records(
    settings: StreamSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(samplelog, "CHUNK", 7)
    settings.kafka.max_poll_records = 40
    world = SyntheticConfig(n_users=50, seconds_between_events=0.2)
    produce(events_from_frame(generate(800, world), id_prefix="c"), settings.kafka)
    producer = make_producer(settings.kafka)  # bad input among the events, on every partition
    for n in range(BAD_MESSAGES):
        producer.send(settings.kafka.topics.events, key=str(n).encode(), value=b"{not json")
    producer.close()
    crashes: dict[str, int] = {}
    try:
        for round_ in range(CRASHES):
            # One armed point per round, in turn, so every point crashes the same number of times.
            failpoints.configure(f"{POINTS[round_ % len(POINTS)]}=0.35", raise_=True, seed=round_)
            consumer = StreamConsumer(settings, client_id=f"c{round_}")
            try:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not committed_all(settings):
                    consumer.poll_once(timeout_ms=100)
                consumer.close()
            except failpoints.Crash as crash:
                crashes[str(crash)] = crashes.get(str(crash), 0) + 1
                abandon(consumer)
    finally:
        failpoints.configure("")
    survivor = StreamConsumer(settings, client_id="survivor")
    try:
        drain([survivor], settings)
    finally:
        survivor.close()
    assert len(crashes) == len(POINTS), crashes  # every failpoint fired
    assert_exact(verify(settings))
    letters = [(d.source_partition, d.source_offset) for d in read_dlq(settings.kafka)]
    assert len(letters) == len(set(letters)) == BAD_MESSAGES  # each dead-lettered once


def test_a_new_pipeline_ignores_what_the_samples_topic_held_before(
    settings: StreamSettings,
) -> None:
    """Samples with this pipeline's ids written before its first assignment (an earlier
    deployment, a test run) are neither taken for its own output nor suppress it."""
    world = SyntheticConfig(n_users=20, seconds_between_events=0.2)
    produce(events_from_frame(generate(200, world), id_prefix="n"), settings.kafka)
    expected = recompute(read_topic(settings.kafka, settings.kafka.topics.events),
                         settings.max_history, settings.attribution_window_s,
                         settings.max_future_skew_s)
    stale = [Sample(sid, 1, 1, 1, 0, 0, [], [], [], int(sid.split("-")[0]),
                    int(sid.split("-")[1])) for sid in expected.samples]
    producer = make_producer(settings.kafka)
    n = len(producer.partitions_for(settings.kafka.topics.samples))
    sent = [producer.send(settings.kafka.topics.samples, key=str(p).encode(),
                          value=encode_batch(p, [s for s in stale if s.source_partition == p]),
                          partition=p % n) for p in range(settings.kafka.partitions)]
    producer.flush()
    old = {(m.partition, m.offset) for m in (f.get() for f in sent)}
    producer.close()
    run_to_end(settings, "new-pipeline")
    fresh = [x for sp, recs in read_topic(settings.kafka, settings.kafka.topics.samples).items()
             for offset, _, v in recs if (sp, offset) not in old
             for x in decode_batch(v or b"{}")]
    assert compare_samples(expected.samples, fresh) == (0, 0, 0)


@hsettings(max_examples=25, deadline=None)
@given(st.integers(min_value=1, max_value=1000))
def test_a_record_of_the_widest_samples_stays_within_the_budget(max_history: int) -> None:
    """``chunk_size`` samples of the widest JSON there can be (int64 ids at their longest,
    every text at its length limit in escaped control characters) encode within
    ``RECORD_BUDGET``, compressed or not: no record the broker refuses, whatever the
    history length."""
    n = samplelog.chunk_size(max_history)
    top = 2**63 - 1
    text = "\x01" * 64
    wide = Sample(f"{top}-{top}", top, top, top, 1, top, [top] * max_history,
                  [top] * max_history, [top] * max_history, top, top, text, text, text * 2)
    value = encode_batch(top, [wide] * n)
    raw = msgspec.json.encode(unpack(value))
    assert len(raw) <= samplelog.RECORD_BUDGET and len(value) <= samplelog.RECORD_BUDGET
    assert n == samplelog.CHUNK or len(msgspec.json.encode(
        {"source_partition": top, "samples": [wide] * (n + 1)})) > samplelog.RECORD_BUDGET / 2


def test_the_idle_flush_waits_while_the_group_may_have_moved_on(
    settings: StreamSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Open impressions past their window are not closed by an idle consumer that may have
    lost its partitions (its samples and changelog record would race the new owner's); they
    are once it is sure of them again."""
    world = SyntheticConfig(n_users=20, seconds_between_events=0.2)
    produce(events_from_frame(generate(200, world), id_prefix="i"), settings.kafka)
    consumer = StreamConsumer(settings, client_id="idle")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not committed_all(settings):
            consumer.poll_once(timeout_ms=100)
        assert consumer.pending() > 0
        open_before = consumer.pending()
        monkeypatch.setattr("stream.consumer.may_have_lost_membership", lambda *a: True)
        until = time.monotonic() + 2 * settings.attribution_window_s + 0.5
        while time.monotonic() < until:
            consumer.poll_once(timeout_ms=100)
        assert consumer.pending() == open_before
        monkeypatch.undo()
        drain([consumer], settings)
    finally:
        consumer.close()
    assert_exact(verify(settings))
