"""Crash recovery of the join-state changelog: many in-process crashes at every failpoint.

The failpoints raise instead of killing (fast, so there can be many crashes); the crashed
consumer is abandoned without committing, the next one restores from Kafka and Feast.
Records are made tiny so that every batch's changelog is split into part records.
"""

from __future__ import annotations

import random
import time

import pytest

from stream import failpoints, samplelog
from stream.consumer import StreamConsumer
from stream.kafka import make_producer
from stream.producer import events_from_frame, produce
from stream.recompute import compare_samples, read_topic, recompute
from stream.samplelog import SampleLog
from stream.samples import RECORD_BYTES_MAX, Pending, Sample, decode_batch, encode_batch
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


def test_samples_and_changelog_records_of_long_histories_stay_within_kafkas_limit(
    settings: StreamSettings,
) -> None:
    """250 samples and 250 opened impressions, each with 1,000 clicks of random int64 ids
    (``max_history`` allows 1,000): packed 250 a record they took ~3.9 MB, which the producer
    refuses (``MessageSizeTooLargeError``), and the batch, replayed, failed again for ever.
    Now every record is within ``RECORD_BYTES_MAX`` and all of it reads back: the samples
    from the samples topic, the open impressions from a restore."""
    rng = random.Random(5)
    n, h = 250, 1000
    producer = make_producer(settings.kafka)
    log = SampleLog(settings, producer)
    try:
        join = log.restore(0)
        for o in range(n):
            ids = [rng.getrandbits(62) for _ in range(2 * h)]
            hist = (ids[:h], ids[h:], sorted(rng.getrandbits(40) for _ in range(h)))
            join.add(Pending(o, 1 + o, 2, 3, 4, 10**15, hist))
            join.added[o] = None
        join.upto = n - 1
        samples = [join.pending[o].sample(0, 0) for o in range(n)]
        for s in samples:
            s.source_offset += n  # other events' samples: ids apart from the open ones
            s.sample_id = f"0-{s.source_offset}"
        log.emit(samples, {0: join})
        sizes = [len(v or b"") for topic in (settings.kafka.topics.samples, log.state_topic)
                 for recs in read_topic(settings.kafka, topic).values() for _, _, v in recs]
        assert max(sizes) <= RECORD_BYTES_MAX and sum(sizes) > 5 * RECORD_BYTES_MAX
        back = [x for recs in read_topic(settings.kafka, settings.kafka.topics.samples).values()
                for _, _, v in recs for x in decode_batch(v or b"{}")]
        assert [x["hist_item_ids"] for x in back] == [s.hist_item_ids for s in samples]
        restored = log.restore(0)
        assert sorted(restored.pending) == list(range(n))
        assert all(restored.pending[o].hist == join.pending[o].hist for o in range(n))
    finally:
        log.reader.close()
        producer.close()


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
        monkeypatch.setattr("stream.partitions.may_have_lost_membership", lambda *a: True)
        until = time.monotonic() + 2 * settings.attribution_window_s + 0.5
        while time.monotonic() < until:
            consumer.poll_once(timeout_ms=100)
        assert consumer.pending() == open_before
        monkeypatch.undo()
        drain([consumer], settings)
    finally:
        consumer.close()
    assert_exact(verify(settings))
