"""Validation of raw messages and the dead-letter record of those that fail it.

A message that fails the contract goes to ``events.dlq`` unchanged: the value is the original
bytes, the key the original key, and Kafka headers carry ``reason``, ``detail``,
``source_topic``, ``source_partition``, ``source_offset`` and ``source_group``. Reasons are
the labels of :func:`stream.events.parse_event` plus ``future_ts`` for the service's own
skew limit and ``key_mismatch`` (the key is not the user id, so the user would leave its
partition) and ``unexpected`` (the parser failed in a way it does not label: still
dead-lettered, never a crash). :func:`read_letters` reads them back (``recstream dlq``).

A value longer than ``LETTER_VALUE_MAX`` (a key longer than ``LETTER_KEY_MAX``) is cut to that
length, its full size in header ``value_size`` (``key_size``): a producer that compresses can
put a record of several MB on ``events`` (the broker's limit applies to the compressed batch),
and sent whole by the pipeline's producer it would fail the send, the batch and every replay
of it. Such a message can never pass (``oversize`` from 4 KiB); the whole of it stays in
``events`` at its source position for its retention.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from stream.events import EventRow, InvalidEvent, parse_event, read_fast
from stream.kafka import KafkaConfig, make_consumer
from stream.topicread import read_range

LETTER_VALUE_MAX = 64 * 1024  # well above MAX_EVENT_BYTES, well below a 1 MB record
LETTER_KEY_MAX = 1024
REASONS = ("empty", "oversize", "not_json", "unknown_schema_version", "future_ts",
           "invalid_field", "key_mismatch", "unexpected")


def validate(key: bytes | None, value: bytes | None, max_future_skew_s: float,
             now_s: float | None = None) -> EventRow:
    """Parse one message; raise :class:`InvalidEvent` with a reason when it is unusable.

    ``max_future_skew_s``: at most the contract's own limit (``MAX_FUTURE_SKEW_S``, the
    ceiling of ``StreamSettings.max_future_skew_s``). ``now_s`` (epoch seconds) is the time
    it counts from, the wall clock if None. The consumer passes the record's Kafka
    timestamp: the verdict is then a function of the record alone, the same on every replay
    (judged by the wall clock, a ``future_ts`` letter replayed after its time had come would
    pass and be applied: docs/dlq.md). The key must be the user id; a message without one is
    a ``key_mismatch`` (the producer's client would have put it on any partition, away from
    the user's other events).

    The fast reader takes what is plainly valid (a margin of 1 ms short of the skew limit,
    so that it never accepts what the model and the check below would reject); everything
    else gets the model's verdict and reason.
    """
    if now_s is None:
        now_s = time.time()
    row = read_fast(value, now_s + max_future_skew_s - 0.001) if value else None
    if row is None:
        now = datetime.fromtimestamp(now_s, UTC)
        event = parse_event(value, now)
        if (event.ts - now).total_seconds() > max_future_skew_s:
            raise InvalidEvent("future_ts", f"ts {event.ts.isoformat()} is more than "
                                            f"{max_future_skew_s:g} s ahead of {now.isoformat()}")
        row = EventRow.of(event)
    if key != str(row.user_id).encode():
        raise InvalidEvent("key_mismatch", f"key {key[:40]!r} is not user id {row.user_id}"
                           if key is not None else f"no key (must be user id {row.user_id})")
    return row


@dataclass(frozen=True)
class DeadLetter:
    """One rejected message, as written to the dead-letter topic."""

    key: bytes | None
    value: bytes
    reason: str
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    source_group: str = ""  # the consumer group that rejected it
    value_size: int | None = None  # the original value's size, where ``value`` was cut
    key_size: int | None = None  # likewise for the key

    @classmethod
    def of_message(cls, key: bytes | None, value: bytes | None, err: InvalidEvent, *,
                   topic: str, partition: int, offset: int, group: str) -> DeadLetter:
        """The letter of a rejected message, its key and value cut to the limits above."""
        value = value or b""
        return cls(key=key if key is None else key[:LETTER_KEY_MAX],
                   value=value[:LETTER_VALUE_MAX], reason=err.reason, detail=err.detail,
                   source_topic=topic, source_partition=partition, source_offset=offset,
                   source_group=group,
                   value_size=len(value) if len(value) > LETTER_VALUE_MAX else None,
                   key_size=len(key) if key is not None and len(key) > LETTER_KEY_MAX else None)

    def headers(self) -> list[tuple[str, bytes]]:
        out = [
            ("reason", self.reason.encode()),
            ("detail", self.detail[:500].encode()),
            ("source_topic", self.source_topic.encode()),
            ("source_partition", str(self.source_partition).encode()),
            ("source_offset", str(self.source_offset).encode()),
            ("source_group", self.source_group.encode()),
        ]
        out += [(name, str(size).encode()) for name, size in
                (("value_size", self.value_size), ("key_size", self.key_size))
                if size is not None]
        return out

    @classmethod
    def from_headers(cls, key: bytes | None, value: bytes | None,
                     headers: list[tuple[str, bytes]]) -> DeadLetter:
        """Read a dead-letter record back (tests, tooling)."""
        h = {k: v.decode() for k, v in headers}
        return cls(key=key, value=value or b"", reason=h["reason"], detail=h["detail"],
                   source_topic=h["source_topic"], source_partition=int(h["source_partition"]),
                   source_offset=int(h["source_offset"]), source_group=h.get("source_group", ""),
                   value_size=int(h["value_size"]) if "value_size" in h else None,
                   key_size=int(h["key_size"]) if "key_size" in h else None)

    @classmethod
    def of_record(cls, rec: ConsumerRecord) -> DeadLetter | None:
        """The letter a DLQ record holds, or None for a record that is not one (a DLQ shared
        with other writers)."""
        try:
            return cls.from_headers(rec.key, rec.value, rec.headers)
        except (KeyError, AttributeError, ValueError):
            return None


@dataclass(frozen=True)
class StoredLetter:
    """A dead letter as found on the DLQ topic: where it is, when it was written, what it is."""

    partition: int
    offset: int
    timestamp_ms: int
    letter: DeadLetter


def read_letters(cfg: KafkaConfig, timeout_s: float = 60.0) -> tuple[list[StoredLetter], int]:
    """Every dead letter on ``cfg.topics.dlq`` (DLQ partition and offset order) and the number
    of records there that are not letters (written by another producer): inspection, tests,
    the replay (``timeout_s`` bounds the read of each partition).

    Run: ``recstream dlq`` prints them (``--reason``, ``--limit``, ``--json``).
    """
    reader = make_consumer(cfg, None)
    letters: list[StoredLetter] = []
    foreign = 0
    try:
        for p in sorted(reader.partitions_for_topic(cfg.topics.dlq) or ()):
            for rec in read_range(reader, TopicPartition(cfg.topics.dlq, p), 0,
                                  timeout_s=timeout_s):
                letter = DeadLetter.of_record(rec)
                if letter is None:
                    foreign += 1
                else:
                    letters.append(StoredLetter(p, rec.offset, rec.timestamp, letter))
    finally:
        reader.close()
    return letters, foreign
