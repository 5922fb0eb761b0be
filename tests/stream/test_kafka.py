"""stream.kafka's membership check, read from a real consumer group's coordinator state."""

from __future__ import annotations

import time

from stream.consumer import StreamConsumer
from stream.kafka import make_consumer, may_have_lost_membership
from stream.settings import StreamSettings


def test_membership_check_follows_the_coordinator(settings: StreamSettings) -> None:
    """False for a member in a stable generation that just polled; True once the group
    wants a rejoin, once the poll interval (here 1 ms) has nearly passed, or once the
    session (here 1 ms) has gone half without a heartbeat answer; never for no group."""
    consumer = StreamConsumer(settings, client_id="member")
    try:
        deadline = time.monotonic() + 30
        while len(consumer.assigned()) < settings.kafka.partitions:
            assert time.monotonic() < deadline
            consumer.poll_once(timeout_ms=100)
        kafka, cfg = consumer.consumer, settings.kafka
        assert not may_have_lost_membership(kafka, cfg)
        time.sleep(0.01)
        assert may_have_lost_membership(kafka, cfg.model_copy(update={"max_poll_interval_ms": 1}))
        assert may_have_lost_membership(kafka, cfg.model_copy(update={"session_timeout_ms": 1}))
        kafka._coordinator.request_rejoin()
        assert may_have_lost_membership(kafka, cfg)
    finally:
        consumer.close()
    reader = make_consumer(settings.kafka, None)
    try:
        assert not may_have_lost_membership(reader, settings.kafka)
    finally:
        reader.close()
