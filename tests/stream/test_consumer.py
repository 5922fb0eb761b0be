"""The consumer on the real broker and Feast: replay, rebalance, point-in-time samples."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from features.store import (
    FeastConfig,
    FeatureAccess,
    StoreUnavailable,
    UserSequence,
    apply_definitions,
    open_store,
)
from stream.consumer import StreamConsumer
from stream.events import Event, EventType
from stream.kafka import make_producer
from stream.producer import events_from_frame, produce
from stream.recompute import read_topic
from stream.samples import decode_batch
from stream.settings import StreamSettings
from stream.synthetic import SyntheticConfig, generate
from tests.conftest import OwnRedis
from tests.stream.conftest import (
    assert_exact,
    committed_all,
    committed_any,
    committed_offsets,
    drain,
    verify,
)

WORLD = SyntheticConfig(n_users=60, seconds_between_events=0.2)


def test_replay_builds_the_offline_sequences_and_samples(settings: StreamSettings) -> None:
    produce(events_from_frame(generate(1500, WORLD), id_prefix="r"), settings.kafka)
    before = {p: _phase_total(p) for p in _PHASES}
    consumer = StreamConsumer(settings)
    try:
        drain([consumer], settings)
    finally:
        consumer.close()
    outcome = verify(settings)
    assert_exact(outcome)
    # Trimming was exercised: some user clicked more often than the history keeps.
    assert outcome.full_users > 0
    # Every phase of the batches was timed, for the benchmark and for the metric.
    assert set(_PHASES) <= set(consumer.phase_seconds)
    for phase in _PHASES:
        assert consumer.phase_seconds[phase] > 0
        assert _phase_total(phase) - before[phase] == pytest.approx(
            consumer.phase_seconds[phase])


def test_a_small_user_cache_changes_nothing_but_reads(settings: StreamSettings) -> None:
    """60 users, a cache of 8 and batches of 40 events: users are dropped and read from Feast
    again all along, and the sequences and samples are still exactly the recomputation's."""
    small = settings.model_copy(update={
        "max_cached_users": 8,
        "kafka": settings.kafka.model_copy(update={"max_poll_records": 40})})
    produce(events_from_frame(generate(800, WORLD), id_prefix="c"), small.kafka)
    evicted = REGISTRY.get_sample_value("recstream_stream_cache_evictions_total") or 0.0
    consumer = StreamConsumer(small)
    sizes = []
    real_bound = consumer._bound_cache

    def bound_and_measure() -> None:
        real_bound()
        sizes.append(consumer.cached_users())

    consumer._bound_cache = bound_and_measure  # type: ignore[method-assign]
    try:
        drain([consumer], small)
    finally:
        consumer.close()
    assert_exact(verify(small))
    assert len(sizes) > 10 and max(sizes) <= 8
    assert (REGISTRY.get_sample_value("recstream_stream_cache_evictions_total") or 0) > evicted


def test_near_the_bound_the_cache_drops_the_users_used_longest_ago(
        settings: StreamSettings) -> None:
    """One partition, batches of 12 events, a hot user in every second event and a new cold
    user in each other one (7 users a batch), a cache of 8: the hot user is read from Feast
    once (it was read again at every turn of the cache when the first users loaded were
    dropped first)."""
    small = settings.model_copy(update={
        "max_cached_users": 8,
        "kafka": settings.kafka.model_copy(update={"max_poll_records": 12})})
    producer = make_producer(small.kafka)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(300):
        user = 7 if n % 2 == 0 else 1000 + n
        ev = Event(event_type=EventType.CLICK, user_id=user, item_id=5 + n % 11,
                   category_id=1, ts=t0 + timedelta(seconds=n))
        producer.send(small.kafka.topics.events, key=ev.key(), value=ev.to_bytes(), partition=0)
    producer.flush()
    producer.close()
    consumer = StreamConsumer(small)
    reads: list[int] = []
    real_read = consumer.features.read_sequences

    def read_sequences(user_ids: Any) -> Any:  # a spy: the real Feast read happens
        ids = list(user_ids)
        reads.extend(ids)
        return real_read(ids)

    consumer.features.read_sequences = read_sequences  # type: ignore[method-assign]
    try:
        drain([consumer], small)
    finally:
        consumer.close()
    assert_exact(verify(small))
    assert len(reads) >= 150 and reads.count(7) == 1


_PHASES = ("poll", "validate", "feast_read", "apply", "kafka_write", "feast_write", "commit")


def _phase_total(phase: str) -> float:
    value = REGISTRY.get_sample_value("recstream_stream_phase_seconds_total", {"phase": phase})
    return value or 0.0


def _run(consumer: StreamConsumer, stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    return thread


def _wait(cond: object, timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_two_consumers_and_rebalances_mid_replay(settings: StreamSettings) -> None:
    settings.kafka.max_poll_records = 100
    frame = generate(3000, WORLD)
    sender = threading.Thread(target=produce, args=(events_from_frame(frame, id_prefix="b"),
                                                    settings.kafka), kwargs={"rate": 500})
    sender.start()
    first, second = (StreamConsumer(settings, client_id=name) for name in ("first", "second"))
    stop_first, stop_second = threading.Event(), threading.Event()
    t_first = _run(first, stop_first)
    try:
        assert _wait(lambda: len(first.assigned()) == settings.kafka.partitions)
        time.sleep(0.5)  # first alone processes part of the replay
        t_second = _run(second, stop_second)
        # second joins: the partitions are split between the two
        assert _wait(lambda: bool(first.assigned()) and bool(second.assigned()))
        time.sleep(0.5)
    finally:
        stop_first.set()
        t_first.join(timeout=30)
        first.close()  # leaves mid-replay: second takes everything back
    try:
        sender.join()
        assert _wait(lambda: len(second.assigned()) == settings.kafka.partitions)
        stop_second.set()
        t_second.join(timeout=30)
        drain([second], settings)
    finally:
        stop_second.set()
        second.close()
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


def test_a_member_that_may_have_lost_its_partitions_drops_and_replays_its_batch(
        settings: StreamSettings) -> None:
    """A consumer that stalls mid-batch for over 90% of max_poll_interval_ms is about to
    lose its partitions: it writes nothing of that batch (no sample, changelog or
    Feast row), rewinds, rebuilds its state as after a restart and replays the batch itself;
    the end result equals the offline recomputation.

    The stall (5.6 s of the 6 s interval) stays short of the group dropping the member: on
    Tansu, when the dropped member was the group's leader, later generations keep naming it
    leader and the group never settles (docs/stream.md, "A stalled member"), so the
    two-member race itself cannot be run here."""
    settings.kafka.max_poll_records = 200
    produce(events_from_frame(generate(2000, WORLD), id_prefix="z"), settings.kafka)
    consumer = StreamConsumer(settings, client_id="stalled")
    before = REGISTRY.get_sample_value("recstream_stream_batches_abandoned_total",
                                       {"stage": "samples"}) or 0.0
    try:
        # The state the stall needs: a batch processed, every partition owned and restored
        # (so that the next batch with records reaches the Feast read). Each stays once
        # reached; on a busy host they need not all show in one poll.
        processed = 0

        def ready() -> bool:
            nonlocal processed
            processed += consumer.poll_once(timeout_ms=100)
            return (processed > 0 and len(consumer.assigned()) == settings.kafka.partitions
                    and consumer.restored())

        assert _wait(ready, timeout_s=60)
        load = consumer._load_users

        def stall_once(parsed: list[Any]) -> None:
            consumer._load_users = load  # type: ignore[method-assign]
            time.sleep(0.93 * settings.kafka.max_poll_interval_ms / 1000)
            load(parsed)

        consumer._load_users = stall_once  # type: ignore[method-assign]
        deadline = time.monotonic() + 30
        while consumer._load_users is not load:  # until a poll returns records (and stalls)
            assert time.monotonic() < deadline, "no batch to stall"
            assert consumer.poll_once(timeout_ms=1000) == 0  # polled, stalled, abandoned
        assert REGISTRY.get_sample_value("recstream_stream_batches_abandoned_total",
                                         {"stage": "samples"}) == before + 1
        drain([consumer], settings)
    finally:
        consumer.close()
    assert_exact(verify(settings))


def test_an_online_store_outage_rewinds_and_replays_the_batch_without_stopping(
        settings: StreamSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The online store fails a read once, then writes 7 times in a row (past the 5 tries of
    one batch's write): the consumer rewinds, pauses and replays each such batch itself
    (before, the error ended the service), and the end result equals the offline
    recomputation; each failed batch is counted."""
    settings.kafka.max_poll_records = 200
    produce(events_from_frame(generate(1500, WORLD), id_prefix="o"), settings.kafka)
    consumer = StreamConsumer(settings, client_id="outage")
    left = {"read": 1, "write": 7}

    def failing(op: str, real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if left[op] > 0:
                left[op] -= 1
                raise StoreUnavailable("injected: database is locked")
            return real(*args, **kwargs)
        return call

    features = consumer.features
    monkeypatch.setattr(features, "read_sequences", failing("read", features.read_sequences))
    monkeypatch.setattr(features, "write_sequences", failing("write", features.write_sequences))
    before = {op: _store_failures(op) for op in left}
    try:
        drain([consumer], settings)
    finally:
        consumer.close()
    assert left == {"read": 0, "write": 0}
    assert {op: _store_failures(op) - before[op] for op in left} == {"read": 1, "write": 1}
    assert_exact(verify(settings))


def _store_failures(op: str) -> float:
    return REGISTRY.get_sample_value("recstream_stream_store_failures_total", {"op": op}) or 0.0


def test_a_redis_that_hangs_for_a_while_pauses_the_pipeline_and_loses_nothing(
        settings: StreamSettings, own_redis: OwnRedis, tmp_path: Path) -> None:
    """The production online store, Redis, stops answering for a while (its process paused)
    in the middle of a replay: each batch meanwhile fails its Feast read or write within
    the client's timeouts (before features/redis_store.py, the first call never returned
    and the consumer hung for good), is counted and rewound; after the pause the consumer
    goes on by itself, and the end result equals the offline recomputation."""
    feast = FeastConfig(data_dir=tmp_path / "feast-redis", online_store="redis",
                        redis_connection_string=own_redis.connection_string, project="hang")
    apply_definitions(open_store(feast))
    settings = settings.model_copy(update={"feast": feast})
    settings.kafka.max_poll_records = 200
    produce(events_from_frame(generate(1500, WORLD), id_prefix="h"), settings.kafka)
    consumer = StreamConsumer(settings, client_id="hung-redis")
    failed_before = _store_failures("read") + _store_failures("write") + _abandoned("feast")
    try:
        deadline, processed = time.monotonic() + 60, 0
        while True:  # a batch processed and a commit landed (not necessarily in one poll)
            processed += consumer.poll_once(timeout_ms=100)
            if processed > 0 and committed_any(settings):
                break
            assert time.monotonic() < deadline, "nothing was processed before the pause"
        def failed() -> float:
            return (_store_failures("read") + _store_failures("write") + _abandoned("feast")
                    - failed_before)

        with own_redis.paused():
            deadline = time.monotonic() + 60
            while failed() < 2:  # each batch meanwhile fails (is counted) and is rewound
                assert time.monotonic() < deadline, "the consumer hung on a paused Redis"
                assert consumer.poll_once(timeout_ms=100) == 0
        drain([consumer], settings)
    finally:
        consumer.close()
    assert_exact(verify(settings))


def test_a_write_behind_the_stored_position_is_refused_and_the_user_read_again(
        settings: StreamSettings, own_redis: OwnRedis, tmp_path: Path) -> None:
    """On Redis, a member whose cached sequence is behind the stored row (the partition's
    new owner moved it on while this one stalled) cannot overwrite it: the write is refused,
    counted, and the user dropped from the cache so that the next event reads the row."""
    feast = FeastConfig(data_dir=tmp_path / "feast-redis", online_store="redis",
                        redis_connection_string=own_redis.connection_string, project="fence")
    apply_definitions(open_store(feast))
    settings = settings.model_copy(update={"feast": feast})
    produce(events_from_frame(generate(300, WORLD), id_prefix="f"), settings.kafka)
    consumer = StreamConsumer(settings, client_id="behind")
    try:
        drain([consumer], settings)
        access = FeatureAccess.open(feast)
        user, seq = next(iter(access.read_sequences(range(1, 1000)).items()))
        ahead = UserSequence(item_ids=[424242], cat_ids=[1], ts_ms=[1],
                             last_partition=seq.last_partition, last_offset=10**9)
        assert access.write_sequences({user: ahead}) == set()  # the "new owner's" row
        refused_before = REGISTRY.get_sample_value(
            "recstream_stream_sequence_writes_refused_total") or 0.0
        click = Event(event_id="late-click", event_type=EventType.CLICK, user_id=user,
                      item_id=5, category_id=1, ts=datetime.now(UTC))
        produce([click], settings.kafka)
        deadline = time.monotonic() + 30
        while consumer.poll_once(timeout_ms=100) == 0:
            assert time.monotonic() < deadline, "the click was not processed"
        assert REGISTRY.get_sample_value(
            "recstream_stream_sequence_writes_refused_total") == refused_before + 1
        assert all(user not in consumer.parts[p].users for p in consumer.assigned())
        assert access.read_sequences([user])[user].item_ids == [424242]
    finally:
        consumer.close()


def _abandoned(stage: str) -> float:
    return REGISTRY.get_sample_value("recstream_stream_batches_abandoned_total",
                                     {"stage": stage}) or 0.0


def test_a_feast_write_retried_after_the_group_may_have_moved_on_is_abandoned(
        settings: StreamSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write try that fails slowly (93% of the poll interval, as a store's own timeouts
    can) leaves the member about to lose its partitions: the next try is not made (it could
    overwrite the new owner's rows), the batch is abandoned at the Feast stage and replayed;
    the end result equals the offline recomputation."""
    settings.kafka.max_poll_records = 200
    produce(events_from_frame(generate(1500, WORLD), id_prefix="s"), settings.kafka)
    consumer = StreamConsumer(settings, client_id="slow-store")
    real = consumer.features.write_sequences
    tries: list[float] = []

    def slow_failure_once(*args: Any, **kwargs: Any) -> Any:
        tries.append(time.monotonic())
        if len(tries) == 1:
            time.sleep(0.93 * settings.kafka.max_poll_interval_ms / 1000)
            raise StoreUnavailable("injected: database is locked")
        return real(*args, **kwargs)

    monkeypatch.setattr(consumer.features, "write_sequences", slow_failure_once)
    before = REGISTRY.get_sample_value("recstream_stream_batches_abandoned_total",
                                       {"stage": "feast"}) or 0.0
    store_before = _store_failures("write")
    try:
        drain([consumer], settings)
    finally:
        consumer.close()
    assert REGISTRY.get_sample_value("recstream_stream_batches_abandoned_total",
                                     {"stage": "feast"}) == before + 1
    assert _store_failures("write") == store_before  # abandoned, not retried as a failure
    assert_exact(verify(settings))


def test_a_new_owner_commits_past_a_transaction_marker_left_by_the_last_commit(
        settings: StreamSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Events written in transactions (as ``recstream dlq replay`` does) are followed by a
    marker that takes an offset. A member processed the last event of each partition and
    left before an empty poll moved its commit past the marker; the next owner, with nothing
    to process, commits past it (before, the group's lag stayed 1 on every partition)."""
    producer = make_producer(settings.kafka, acks="all", transactional_id=f"t-{settings.group_id}")
    producer.init_transactions()
    producer.begin_transaction()
    t0 = datetime(2024, 5, 1, tzinfo=UTC)
    for p in range(settings.kafka.partitions):
        ev = Event(event_id=f"m{p}", event_type=EventType.CLICK, user_id=100 + p, item_id=7,
                   category_id=1, ts=t0 + timedelta(seconds=p))
        producer.send(settings.kafka.topics.events, key=ev.key(), value=ev.to_bytes(),
                      partition=p)
    producer.commit_transaction()
    producer.close()

    first = StreamConsumer(settings, client_id="left-early")
    monkeypatch.setattr(first.offsets, "commit_skipped", lambda: None)
    seen, deadline = 0, time.monotonic() + 60
    try:
        while seen < settings.kafka.partitions and time.monotonic() < deadline:
            seen += first.poll_once(timeout_ms=100)
    finally:
        first.close()  # commits synchronously what it processed
    # each commit sits on its partition's marker
    assert all(done == end - 1 for done, end in committed_offsets(settings))
    second = StreamConsumer(settings, client_id="next-owner")
    try:
        drain([second], settings)  # ends only once the commits reach the partitions' ends
    finally:
        second.close()
    assert committed_all(settings)


def test_an_item_category_changed_and_changed_back_in_one_batch_ends_as_the_last_event_says(
        settings: StreamSettings) -> None:
    """Item 9 is known as category 1; one batch then says 2, then 1 again. The row must end
    at 1: compared with the consumer's memory of the item alone, the second event looked
    unchanged and the row was left at 2."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def click(n: int, cat: int) -> Event:
        return Event(event_id=f"c{n}", event_type=EventType.CLICK, user_id=7, item_id=9,
                     category_id=cat, ts=t0 + timedelta(seconds=n))

    def send(*events: Event) -> None:
        producer = make_producer(settings.kafka)
        for ev in events:
            producer.send(settings.kafka.topics.events, key=ev.key(), value=ev.to_bytes())
        producer.flush()
        producer.close()

    consumer = StreamConsumer(settings, client_id="items")
    try:
        send(click(0, 1))
        drain([consumer], settings)
        send(click(1, 2), click(2, 1))
        drain([consumer], settings)
    finally:
        consumer.close()
    _, _, cats = FeatureAccess.open(settings.feast).ranker_features(7, [9])
    assert cats == [1]
