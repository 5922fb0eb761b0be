"""Reading a partition to its true end on the real broker, also when the first fetch is slow."""

from __future__ import annotations

from typing import Any

from kafka import TopicPartition

from stream.kafka import KafkaConfig, make_consumer, make_producer
from stream.topicread import iter_range, read_range, true_end


def _produce(cfg: KafkaConfig, n: int) -> TopicPartition:
    producer = make_producer(cfg)
    for i in range(n):
        producer.send(cfg.topics.samples, value=str(i).encode(), partition=1)
    producer.flush()
    producer.close()
    return TopicPartition(cfg.topics.samples, 1)


def test_a_slow_first_fetch_does_not_read_as_an_empty_partition(kafka_cfg: KafkaConfig) -> None:
    """Polls that come back empty before any fetch has answered (a slow connection, a busy
    host) used to end the read after three of them: a restore then took the lagging
    ListOffsets end, or an empty changelog."""
    tp = _produce(kafka_cfg, 7)
    reader = make_consumer(kafka_cfg, None)
    real_poll = reader.poll
    slow = [5]

    def poll(*args: Any, **kwargs: Any) -> Any:
        if slow[0]:
            slow[0] -= 1
            return {}  # no fetch has answered yet: the high watermark is unknown
        return real_poll(*args, **kwargs)

    reader.poll = poll  # type: ignore[method-assign]
    try:
        assert [r.value for r in read_range(reader, tp, 0)] == [str(i).encode() for i in range(7)]
        slow[0] = 5
        assert true_end(reader, tp) == 7
    finally:
        reader.close()


def test_iter_range_streams_a_bounded_range(kafka_cfg: KafkaConfig) -> None:
    tp = _produce(kafka_cfg, 12)
    reader = make_consumer(kafka_cfg, None)
    try:
        assert [r.offset for r in iter_range(reader, tp, 3, 9)] == list(range(3, 9))
        assert list(iter_range(reader, tp, 5, 5)) == []
    finally:
        reader.close()
