"""Every kind of bad input lands in the DLQ with its reason and origin; the consumer goes on."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from kafka.errors import KafkaTimeoutError
from kafka.producer.future import FutureRecordMetadata

from features.store import FeatureAccess
from stream import failpoints
from stream.consumer import StreamConsumer
from stream.dlq import LETTER_VALUE_MAX, DeadLetter
from stream.events import MAX_EVENT_BYTES, Event, EventType
from stream.kafka import KafkaConfig, make_producer
from stream.settings import StreamSettings
from tests.stream.conftest import (
    abandon,
    assert_exact,
    committed_any,
    drain,
    failed_send,
    read_dlq,
    run_to_end,
    verify,
)


def good(n: int) -> Event:
    return Event(event_id=f"ok-{n}", event_type=EventType.CLICK, user_id=100 + n, item_id=5,
                 category_id=2, ts=datetime(2024, 5, 1, tzinfo=UTC) + timedelta(seconds=n))


def body(**over: object) -> bytes:
    base = json.loads(good(0).to_bytes())
    base.update(over)
    return json.dumps(base).encode()


BAD: list[tuple[str, bytes | None, bytes | None]] = [
    ("not_json", b"100", b"this is not json {"),
    ("not_json", b"100", b"[1, 2, 3]"),
    ("invalid_field", b"100", json.dumps({"event_type": "click"}).encode()),  # missing fields
    ("invalid_field", b"100", body(user_id="abc")),
    ("invalid_field", b"100", body(user_id=-3)),
    ("invalid_field", b"100", body(item_id=0)),
    ("invalid_field", b"100", body(event_type="purchase")),
    ("future_ts", b"100",
     body(ts=(datetime.now(UTC) + timedelta(days=2)).isoformat().replace("+00:00", "Z"))),
    ("unknown_schema_version", b"100", body(schema_version=9)),
    ("oversize", b"100", body(variant="x" * (MAX_EVENT_BYTES + 10))),
    ("empty", b"100", b""),
    ("key_mismatch", b"999", body()),
    ("key_mismatch", None, body()),  # no key: the producer's client picks any partition
]


def send_bad_and_good(cfg: KafkaConfig) -> int:
    """Each BAD message followed by a valid click, all on partition 0; the number of clicks."""
    producer = make_producer(cfg)
    sent_good = 0
    for n, (_, key, value) in enumerate(BAD):
        producer.send(cfg.topics.events, key=key, value=value, partition=0)
        ev = good(n)  # a valid event after each bad one: processing must go on
        producer.send(cfg.topics.events, key=ev.key(), value=ev.to_bytes(), partition=0)
        sent_good += 1
    producer.flush()
    producer.close()
    return sent_good


def test_bad_messages_go_to_the_dlq_with_reason_and_origin(settings: StreamSettings) -> None:
    cfg = settings.kafka
    sent_good = send_bad_and_good(cfg)
    consumer = StreamConsumer(settings)
    try:
        drain([consumer], settings)
        users = consumer.features.read_sequences(100 + n for n in range(sent_good))
    finally:
        consumer.close()
    assert len(users) == sent_good  # every valid click was applied

    letters = read_dlq(cfg)
    assert [d.reason for d in letters] == [reason for reason, _, _ in BAD]
    for n, (letter, (_, key, value)) in enumerate(zip(letters, BAD, strict=True)):
        assert letter.value == (value or b"")  # the original bytes, untouched
        assert letter.key == key
        assert (letter.source_topic, letter.source_partition) == (cfg.topics.events, 0)
        assert letter.source_offset == 2 * n
        assert letter.detail


def assert_each_dead_lettered_once_after_a_takeover(settings: StreamSettings) -> None:
    """A new consumer finishes the replay: each BAD message is in the DLQ exactly once."""
    run_to_end(settings, "successor")
    offsets = [d.source_offset for d in read_dlq(settings.kafka)]
    assert offsets == [2 * n for n in range(len(BAD))]
    assert_exact(verify(settings))


def poll_for(consumer: StreamConsumer, seconds: float) -> None:
    """Poll for ``seconds`` of wall time (a number of polls is too short when the group's
    first join is slow: CI once saw 100 polls of 100 ms end before the first batch)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        consumer.poll_once(timeout_ms=100)


def crash_at(settings: StreamSettings, point: str) -> None:
    """A consumer polls until the failpoint ``point`` crashes its first batch; abandoned."""
    failpoints.configure(f"{point}=1", raise_=True)
    first = StreamConsumer(settings, client_id="crashes")
    try:
        with pytest.raises(failpoints.Crash):
            poll_for(first, seconds=60)
    finally:
        failpoints.configure("")
        abandon(first)


def test_a_replay_after_a_crash_does_not_dead_letter_twice(settings: StreamSettings) -> None:
    """Crash after the DLQ, changelog and Feast writes but before the commit: the next
    consumer replays the batch from the last commit and sends no dead letter again."""
    cfg = settings.kafka
    send_bad_and_good(cfg)
    crash_at(settings, "after_feast")
    assert_each_dead_lettered_once_after_a_takeover(settings)


def test_an_unacknowledged_dead_letter_stops_the_batch_before_its_commit(
    settings: StreamSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker loses one dead letter: the batch fails before anything records it as done,
    so the next consumer dead-letters that message (nothing dropped silently)."""
    cfg = settings.kafka
    send_bad_and_good(cfg)
    first = StreamConsumer(settings, client_id="loses-one")
    real_send = first.producer.send
    lost: list[int] = []

    def send(topic: str, **kw: object) -> FutureRecordMetadata:
        if topic == cfg.topics.dlq and not lost:
            lost.append(1)
            return failed_send(topic)
        return real_send(topic, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(first.producer, "send", send)
    try:
        with pytest.raises(KafkaTimeoutError):
            poll_for(first, seconds=60)
        assert not committed_any(settings)
    finally:
        abandon(first)
    assert_each_dead_lettered_once_after_a_takeover(settings)


def test_foreign_records_on_the_dlq_neither_stop_nor_silence_the_consumer(
    settings: StreamSettings,
) -> None:
    """A DLQ shared with other writers: records without our headers and another group's
    letters for the very same source offsets are there before the first restore."""
    cfg = settings.kafka
    send_bad_and_good(cfg)
    producer = make_producer(cfg)
    for n in range(len(BAD)):
        other = DeadLetter(key=b"100", value=b"x", reason="not_json", detail="elsewhere",
                           source_topic=cfg.topics.events, source_partition=0,
                           source_offset=2 * n, source_group="another-group")
        producer.send(cfg.topics.dlq, key=b"100", value=b"x", headers=other.headers(),
                      partition=0)
        producer.send(cfg.topics.dlq, value=b"not a letter", partition=0)
    producer.flush()
    producer.close()
    run_to_end(settings, "shares-the-dlq")
    ours = [d.source_offset for d in read_dlq(cfg, skip_foreign=True)
            if d.source_group == settings.group_id]
    assert ours == [2 * n for n in range(len(BAD))]


def test_a_value_too_large_to_send_whole_is_cut_in_its_letter(settings: StreamSettings) -> None:
    """A compressing producer puts a 2 MB value on ``events`` (the broker's limit applies to
    the compressed batch); its letter keeps the first ``LETTER_VALUE_MAX`` bytes and the size.
    Sent whole, the letter failed the consumer's send, its batch and every replay of it."""
    cfg = settings.kafka
    huge = b'{"event_type": "click", "pad": "' + b"x" * 2_000_000 + b'"}'
    producer = make_producer(cfg, compression_type="gzip", max_request_size=4_000_000)
    producer.send(cfg.topics.events, key=b"100", value=huge, partition=0)
    ev = good(1)
    producer.send(cfg.topics.events, key=ev.key(), value=ev.to_bytes(), partition=0)
    producer.flush()
    producer.close()
    run_to_end(settings, "cuts")
    [letter] = read_dlq(cfg)
    assert (letter.reason, letter.source_offset) == ("oversize", 0)
    assert letter.value == huge[:LETTER_VALUE_MAX] and letter.value_size == len(huge)
    assert letter.key == b"100" and letter.key_size is None
    assert_exact(verify(settings))  # the click after it was applied


def test_a_future_verdict_stands_on_a_replay_after_its_time_has_come(
    settings: StreamSettings,
) -> None:
    """A click stamped 3 s past its record's Kafka timestamp (limit 1 s) is dead-lettered; the
    consumer crashes after the changelog, before Feast and the commit; its successor replays
    the batch once the click's time has passed on the wall clock. Judged by the wall clock,
    the replay let the click through: it was applied to the sequence and stayed on the DLQ
    (a `dlq replay` would then have applied it twice)."""
    settings.max_future_skew_s = 1.0
    cfg = settings.kafka
    ahead = Event(event_id="ahead", event_type=EventType.CLICK, user_id=100, item_id=77,
                  category_id=3, ts=datetime.now(UTC) + timedelta(seconds=3))
    producer = make_producer(cfg)
    producer.send(cfg.topics.events, key=ahead.key(), value=ahead.to_bytes(), partition=0)
    for n in range(3):
        ev = good(n)
        producer.send(cfg.topics.events, key=ev.key(), value=ev.to_bytes(), partition=0)
    producer.flush()
    producer.close()
    crash_at(settings, "after_changelog")
    time.sleep(max(0.0, (ahead.ts - datetime.now(UTC)).total_seconds()) + 0.5)
    run_to_end(settings, "successor")
    assert [(d.reason, d.source_offset) for d in read_dlq(cfg)] == [("future_ts", 0)]
    seq = FeatureAccess.open(settings.feast).read_sequences([100])[100]
    assert 77 not in seq.item_ids
    assert_exact(verify(settings))
