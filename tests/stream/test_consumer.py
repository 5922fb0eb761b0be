"""The consumer on the real broker and Feast: replay, rebalance, point-in-time samples."""

from __future__ import annotations

import threading
import time

from stream.consumer import StreamConsumer
from stream.producer import events_from_frame, produce
from stream.recompute import read_topic
from stream.samples import decode_batch
from stream.settings import StreamSettings
from stream.synthetic import SyntheticConfig, generate
from tests.stream.conftest import assert_exact, drain, verify

WORLD = SyntheticConfig(n_users=60, seconds_between_events=0.2)


def test_replay_builds_the_offline_sequences_and_samples(settings: StreamSettings) -> None:
    produce(events_from_frame(generate(1500, WORLD), id_prefix="r"), settings.kafka)
    consumer = StreamConsumer(settings)
    try:
        drain([consumer], settings)
    finally:
        consumer.close()
    outcome = verify(settings)
    assert_exact(outcome)
    # Trimming was exercised: some user clicked more often than the history keeps.
    assert outcome.full_users > 0


def test_two_consumers_and_rebalances_mid_replay(settings: StreamSettings) -> None:
    settings.kafka.max_poll_records = 100
    frame = generate(3000, WORLD)
    sender = threading.Thread(target=produce, args=(events_from_frame(frame, id_prefix="b"),
                                                    settings.kafka), kwargs={"rate": 1500})
    sender.start()
    first = StreamConsumer(settings, client_id="first")
    second = StreamConsumer(settings, client_id="second")
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:  # first alone owns every partition
            first.poll_once(timeout_ms=100)
        both_deadline = time.monotonic() + 30
        while time.monotonic() < both_deadline:  # second joins: partitions move over
            first.poll_once(timeout_ms=50)
            second.poll_once(timeout_ms=50)
            if second.assigned() and first.assigned():
                break
        moved = bool(second.assigned())
        for _ in range(10):  # both process a little while sharing the partitions
            first.poll_once(timeout_ms=50)
            second.poll_once(timeout_ms=50)
    finally:
        first.close()  # leaves mid-replay: second takes everything back
    try:
        sender.join()
        drain([second], settings)
    finally:
        second.close()
    assert moved
    assert_exact(verify(settings))


def test_sample_history_never_holds_its_own_or_a_later_event(settings: StreamSettings) -> None:
    produce(events_from_frame(generate(800, WORLD), id_prefix="p"), settings.kafka)
    consumer = StreamConsumer(settings)
    try:
        drain([consumer], settings)
    finally:
        consumer.close()
    events = read_topic(settings.kafka, settings.kafka.topics.events)
    from stream.events import parse_event

    clicks: dict[tuple[int, int], list[tuple[int, int]]] = {}  # (user, item) -> [(p, offset)]
    for p, recs in events.items():
        for offset, _, value in recs:
            ev = parse_event(value)
            if ev.event_type.value == "click":
                clicks.setdefault((ev.user_id, ev.item_id), []).append((p, offset))
    samples = [x for recs in read_topic(settings.kafka, settings.kafka.topics.samples).values()
               for _, _, v in recs for x in decode_batch(v or b"{}")]
    assert samples
    for s in samples:
        assert all(t <= s["event_ts_ms"] for t in s["hist_ts_ms"])
        for item in s["hist_item_ids"]:
            # Some click of that item by that user came earlier in the partition.
            assert any(p == s["source_partition"] and o < s["source_offset"]
                       for p, o in clicks[(s["user_id"], item)])
