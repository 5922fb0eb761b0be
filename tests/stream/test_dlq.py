"""Every kind of bad input lands in the DLQ with its reason and origin; the consumer goes on."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from kafka.errors import KafkaTimeoutError
from kafka.producer.future import FutureRecordMetadata

from stream import failpoints
from stream.consumer import StreamConsumer
from stream.dlq import DeadLetter
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


def test_a_replay_after_a_crash_does_not_dead_letter_twice(settings: StreamSettings) -> None:
    """Crash after the DLQ, changelog and Feast writes but before the commit: the next
    consumer replays the batch from the last commit and sends no dead letter again."""
    cfg = settings.kafka
    send_bad_and_good(cfg)
    failpoints.configure("after_feast=1", raise_=True)
    first = StreamConsumer(settings, client_id="crashes")
    try:
        with pytest.raises(failpoints.Crash):
            poll_for(first, seconds=60)
    finally:
        failpoints.configure("")
        abandon(first)
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
