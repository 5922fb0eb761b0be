"""Every kind of bad input lands in the DLQ with its reason and origin; the consumer goes on."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from kafka import TopicPartition

from stream.consumer import StreamConsumer
from stream.dlq import DeadLetter
from stream.events import MAX_EVENT_BYTES, Event, EventType
from stream.kafka import make_consumer, make_producer
from stream.settings import StreamSettings
from tests.stream.conftest import drain


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


def test_bad_messages_go_to_the_dlq_with_reason_and_origin(settings: StreamSettings) -> None:
    cfg = settings.kafka
    producer = make_producer(cfg)
    sent_good = 0
    for n, (_, key, value) in enumerate(BAD):
        producer.send(cfg.topics.events, key=key, value=value, partition=0)
        ev = good(n)  # a valid event after each bad one: processing must go on
        producer.send(cfg.topics.events, key=ev.key(), value=ev.to_bytes(), partition=0)
        sent_good += 1
    producer.flush()
    producer.close()

    consumer = StreamConsumer(settings)
    try:
        drain([consumer], settings)
        users = consumer.features.read_sequences(100 + n for n in range(sent_good))
    finally:
        consumer.close()
    assert len(users) == sent_good  # every valid click was applied

    reader = make_consumer(cfg, None)
    tps = [TopicPartition(cfg.topics.dlq, p) for p in reader.partitions_for_topic(cfg.topics.dlq)]
    reader.assign(tps)
    reader.seek_to_beginning(*tps)
    letters: list[DeadLetter] = []
    for _ in range(40):
        for recs in reader.poll(timeout_ms=250).values():
            letters.extend(DeadLetter.from_headers(r.key, r.value, r.headers) for r in recs)
        if len(letters) >= len(BAD):
            break
    reader.close()
    letters.sort(key=lambda d: d.source_offset)
    assert [d.reason for d in letters] == [reason for reason, _, _ in BAD]
    for n, (letter, (_, key, value)) in enumerate(zip(letters, BAD, strict=True)):
        assert letter.value == (value or b"")  # the original bytes, untouched
        assert letter.key == key
        assert (letter.source_topic, letter.source_partition) == (cfg.topics.events, 0)
        assert letter.source_offset == 2 * n
        assert letter.detail
