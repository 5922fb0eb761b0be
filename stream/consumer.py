"""The consumer of the ``events`` topic: validation, user sequences in Feast, commits.

Run: ``recstream stream run`` (see :mod:`stream.service`), or in code::

    consumer = StreamConsumer(settings)
    consumer.run(stop_event)      # or consumer.poll_once() in a loop
    consumer.close()

One micro-batch = one ``poll``: every message is validated (invalid ones go to the DLQ),
the batch's clicks are applied to the cached sequences of their users, labelled samples
are derived (:mod:`stream.samples`), then in this order: DLQ records, samples and the
join-state changelog are flushed to Kafka (each send confirmed), the changed sequences and
item categories are written to the Feast online store (one write each), and the offsets are
committed (asynchronously). A crash between any two steps is repaired on restart by the skip
rules of docs/stream.md. A batch whose partitions the group may have moved on, or whose Feast
read or write fails, is rewound and replayed by the same rules without a restart.
"""

from __future__ import annotations

import logging
import threading
import time

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata

from features.store import FeatureAccess, StoreUnavailable, UserSequence
from stream import metrics
from stream.batch import Batch, PartitionState, forget_users
from stream.dlq import DeadLetter, validate
from stream.events import EventRow, EventType, InvalidEvent
from stream.failpoints import failpoint
from stream.featurewrite import FeatureWriter
from stream.gcfreeze import freeze_startup_heap
from stream.kafka import make_consumer, make_producer, may_have_lost_membership
from stream.offsets import Offsets
from stream.restores import Restores
from stream.samplelog import SampleLog
from stream.sequences import apply_click, bound_caches
from stream.settings import StreamSettings

log = logging.getLogger(__name__)
_FRESHNESS_MAX_S = 3600.0  # older events are replays of history, not freshness


class _Abandoned(Exception):
    """The group may have moved this batch's partitions on: the rest is not written."""


class _Listener(ConsumerRebalanceListener):
    def __init__(self, owner: StreamConsumer) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        for tp in revoked:
            if (state := self.owner._parts.pop(tp.partition, None)) is not None:
                Restores.revoked(state)
            self.owner.offsets.forget(tp)
            metrics.PENDING.labels(str(tp.partition)).set(0)
        metrics.CACHED_USERS.set(self.owner.cached_users())
        log.info("revoked %s", sorted(tp.partition for tp in revoked))

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        for tp in assigned:
            self.owner._parts[tp.partition] = PartitionState()
        log.info("assigned %s", sorted(tp.partition for tp in assigned))


class StreamConsumer:
    """One member of the consumer group on the events topic (see module docstring)."""

    def __init__(self, settings: StreamSettings, *, client_id: str | None = None) -> None:
        self.settings = settings
        self.cfg = settings.kafka
        self.topic = self.cfg.topics.events
        self.client_id = client_id or "recstream-stream"
        self._parts: dict[int, PartitionState] = {}
        self._known_items: dict[int, int] = {}
        self.features = FeatureAccess.open(settings.feast)
        self.writer = FeatureWriter(self.features, self._fence)
        self.producer: KafkaProducer = make_producer(
            self.cfg, client_id=f"{self.client_id}-out", acks="all",
            # No Kafka-level compression: sample and changelog values are zstd-compressed
            # (level 1) by stream.samples.pack; kafka-python's gzip is level 9, several ms a
            # batch, and its zstd (in the sender thread) measured slower than ours.
            max_in_flight_requests_per_connection=1, linger_ms=2)
        self.samples = SampleLog(settings, self.producer)
        self.consumer: KafkaConsumer = make_consumer(
            self.cfg, settings.group_id, client_id=self.client_id)
        self.offsets = Offsets(self.consumer, self.topic, self._parts)
        self.restores = Restores(self.consumer, self.topic, self.samples, self.offsets,
                                 wait_s=min(1.0, self.cfg.max_poll_interval_ms / 4000),
                                 unsure=self._unsure)
        self.consumer.subscribe([self.topic], listener=_Listener(self))
        self.freshness_ms: list[float] = []  # kept for the benchmark; metrics get the same
        self.keep_freshness = False
        self.last_batch_seconds = 0.0
        self.phase_seconds: dict[str, float] = {}  # batches with records, by phase
        freeze_startup_heap()

    # -- one micro-batch ------------------------------------------------------------------
    def poll_once(self, timeout_ms: int = 200) -> int:
        """Process one micro-batch; return the number of messages processed (0 when the
        batch was abandoned, to be replayed: see ``_abandon``)."""
        batch = Batch()
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=self.cfg.max_poll_records)
        batch.lap("poll")
        self.restores.advance(self._parts)
        polled = self.restores.hold_back(polled, self._parts)
        n = sum(len(recs) for recs in polled.values())
        if n == 0:
            if not self._unsure():  # as a batch's writes
                self.samples.flush_idle(self._parts, self.settings.attribution_window_s,
                                        caught_up=lambda p: self.offsets.lag(p) == 0)
            self.offsets.commit_skipped()
            self.offsets.export_lag()
            return 0
        batch.lap("restore")
        t0 = time.perf_counter()
        parsed: list[tuple[int, ConsumerRecord, EventRow | None]] = []
        for tp, recs in polled.items():
            for rec in recs:
                parsed.append((tp.partition, rec, self._validate(tp.partition, rec, batch)))
            batch.commits[tp] = OffsetAndMetadata(recs[-1].offset + 1, "", -1)
        batch.lap("validate")
        try:
            self._load_users(parsed)
        except StoreUnavailable as err:
            self._account(batch)
            self._store_failed(polled, err, "read")
            return 0
        batch.lap("feast_read")
        wall = time.monotonic()
        for tp in polled:
            self._parts[tp.partition].last_event_wall = wall
        for partition, rec, event in parsed:
            if event is not None:
                self._apply(partition, rec.offset, event, batch)
            elif (join := self._parts[partition].join) is not None:
                join.advance(rec.offset)  # in order: the next changelog record covers it
        batch.lap("apply")
        try:
            self._write(batch)
        except _Abandoned as stage:
            self._abandon(polled, str(stage))
            return 0
        except StoreUnavailable as failed:
            self._store_failed(polled, failed, "write")
            return 0
        finally:
            self._account(batch)
        self._bound_cache()
        for (kind, outcome), count in batch.ok.items():
            metrics.EVENTS.labels(kind.value, outcome).inc(count)
        self.last_batch_seconds = time.perf_counter() - t0
        metrics.BATCH_SIZE.observe(n)
        metrics.BATCH_SECONDS.observe(self.last_batch_seconds)
        self.offsets.export_lag()
        return n

    def _validate(self, partition: int, rec: ConsumerRecord, batch: Batch) -> EventRow | None:
        join = self._parts[partition].join
        # A letter found by the restore stays the verdict even if the message would pass now
        # (a future timestamp that is no longer in the future).
        if join is not None and join.dead_ahead and join.dead_ahead_hit(rec.offset):
            return self._replayed_dead(partition, batch)
        stamp = rec.timestamp  # the record's Kafka timestamp: the same verdict on a replay
        try:
            return validate(rec.key, rec.value, self.settings.max_future_skew_s,
                            stamp / 1000.0 if stamp is not None and stamp >= 0 else None)
        except Exception as err:  # any input the contract cannot read goes to the DLQ
            exc = err if isinstance(err, InvalidEvent) else InvalidEvent("unexpected", repr(err))
        if join is not None and rec.offset <= join.upto:
            return self._replayed_dead(partition, batch)  # its changelog record covers it
        dead = DeadLetter.of_message(rec.key, rec.value, exc, topic=rec.topic,
                                     partition=partition, offset=rec.offset,
                                     group=self.settings.group_id)
        batch.dead.setdefault(partition, []).append(self.samples.dead_letter(dead))
        batch.touched.add(partition)  # the changelog record carries the new ``upto``
        metrics.DLQ.labels(exc.reason).inc()
        metrics.EVENTS.labels("unknown", "dlq").inc()
        return None

    @staticmethod
    def _replayed_dead(partition: int, batch: Batch) -> None:
        """An invalid message an earlier run (whose commit did not land) dead-lettered."""
        batch.touched.add(partition)
        metrics.EVENTS.labels("unknown", "replayed").inc()
        return None

    def _load_users(self, parsed: list[tuple[int, ConsumerRecord, EventRow | None]]) -> None:
        """Fill the cache with the batch's users not seen since the assignment (one read).

        Near the cache's bound (past half of it), the batch's cached users also move to the
        end of their cache, so that the bound drops the users used longest ago.
        """
        users = {(p, e.user_id) for p, _, e in parsed if e is not None}
        missing = [(p, u) for p, u in users if u not in self._parts[p].users]
        if self.cached_users() > self.settings.max_cached_users // 2:
            for p, u in users:
                cache = self._parts[p].users
                seq = cache.pop(u, None)
                if seq is not None:
                    cache[u] = seq
        if not missing:
            return
        found = self.features.read_sequences(u for _, u in missing)
        for p, user in missing:
            self._parts[p].users[user] = found.get(user) or UserSequence()

    def _apply(self, partition: int, offset: int, event: EventRow, batch: Batch) -> None:
        part = self._parts[partition]
        seq = part.users[event.user_id]
        item, cat = event.item_id, event.category_id
        # against the batch's own value first: A known, then B and A in one batch writes A
        if batch.items.get(item, self._known_items.get(item)) != cat:
            batch.items[item] = cat
        outcome = "ok"
        if part.join is not None:
            if offset <= part.join.upto:
                outcome = "replayed"  # a previous run's changelog covers it (see docs/stream.md)
            batch.samples.extend(part.join.on_event(partition, offset, event, seq))
            batch.touched.add(partition)
        if event.event_type is EventType.CLICK:
            applied = apply_click(seq, event.item_id, event.category_id, event.ts_ms,
                                  partition, offset, self.settings.max_history)
            if applied:
                batch.changed[event.user_id] = seq
                batch.clicks_ts_ms.append(event.ts_ms)
            else:
                metrics.REPLAYED.labels("click").inc()
        batch.ok[(event.event_type, outcome)] += 1

    def _bound_cache(self) -> None:
        """Keep the cached sequences within ``max_cached_users`` (:func:`bound_caches`); after
        a batch is written, when every cached sequence is the row in Feast."""
        dropped = bound_caches([part.users for part in self._parts.values()],
                               self.settings.max_cached_users)
        metrics.CACHE_EVICTIONS.inc(dropped)
        metrics.CACHED_USERS.set(self.cached_users())
        # Item categories already written (~150 B an item): forgetting one costs one
        # write of an unchanged category, so a loose bound of 10x the users' will do.
        bound_caches([self._known_items], 10 * self.settings.max_cached_users)

    def cached_users(self) -> int:
        """User sequences held in the cache now."""
        return sum(len(part.users) for part in self._parts.values())

    def _write(self, batch: Batch) -> None:
        """DLQ, then samples + changelog to Kafka, then Feast, then the commit (this order).

        Every send is confirmed (``get`` raises on a failed one) before anything that
        records it as done: the DLQ before the changelog's ``upto``, samples before their
        changelog record, the changelog before the commit.
        """
        self._fence("samples")
        joins = {p: j for p in batch.touched if p in self._parts
                 and (j := self._parts[p].join) is not None}
        if batch.dead:
            self.samples.confirm_dead(batch.dead, joins)
        self.samples.emit(batch.samples, joins)
        batch.lap("kafka_write")
        done = self.writer.write(batch)
        metrics.FEAST_WRITE.observe(batch.lap("feast_write"))
        for ts_ms in batch.clicks_ts_ms:
            age = done - ts_ms / 1000.0
            if 0.0 <= age < _FRESHNESS_MAX_S:
                metrics.FRESHNESS.observe(age)
                if self.keep_freshness:
                    self.freshness_ms.append(age * 1000.0)
        for item, cat in batch.items.items():
            self._known_items[item] = cat
        if batch.refused:  # the store holds later clicks of these users: read them again
            forget_users(self._parts.values(), batch.refused)
            metrics.WRITES_REFUSED.inc(len(batch.refused))
        failpoint("after_feast")
        self.offsets.commit(batch.commits)
        batch.lap("commit")
        failpoint("after_commit")

    def _account(self, batch: Batch) -> None:
        """Add the batch's time by phase to the metric and to ``phase_seconds``."""
        for phase, seconds in batch.phases.items():
            metrics.PHASE_SECONDS.labels(phase).inc(seconds)
            self.phase_seconds[phase] = self.phase_seconds.get(phase, 0.0) + seconds

    def _unsure(self) -> bool:
        """Whether the group may already have moved the partitions on (no write then)."""
        return may_have_lost_membership(self.consumer, self.cfg)

    def _fence(self, stage: str) -> None:
        """Raise ``_Abandoned`` when the group may already have moved the partitions on."""
        if self._unsure():
            raise _Abandoned(stage)

    def _abandon(self, polled: dict[TopicPartition, list[ConsumerRecord]], stage: str) -> None:
        """Forget what the batch did in memory (caches and join state are rebuilt from Feast
        and the changelog, as after a restart) and rewind to its first records, so that it is
        replayed by this consumer if it still owns a partition, else by the new owner."""
        log.warning("batch of %d records abandoned before the %s write: the group may have "
                    "moved its partitions on; it is replayed",
                    sum(map(len, polled.values())), stage)
        metrics.ABANDONED.labels(stage).inc()
        self._rewind(polled)

    def _store_failed(self, polled: dict[TopicPartition, list[ConsumerRecord]],
                      failed: StoreUnavailable, op: str) -> None:
        """A Feast read, or the write after its retries, failed (the store down or locked):
        count it, rewind as for an abandoned batch (what reached Kafka and Feast before the
        failure is skipped on the replay by the same rules as after a crash: docs/stream.md),
        pause, and let the next poll replay the batch. The service keeps running through an
        outage of the store; the lag grows meanwhile."""
        self.writer.failed(op, failed, sum(map(len, polled.values())))
        self._known_items.clear()  # a store that lost its data (Redis restarted) gets them again
        self._rewind(polled)
        self.writer.pause()

    def _rewind(self, polled: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Drop the polled partitions' state (rebuilt as after an assignment) and seek the
        ones still owned back to the batch's first records.

        First every send of the batch is settled (dead letters are sent during validation):
        one still in flight could land after the restore has looked for it on the DLQ, and
        the replayed message would be dead-lettered twice."""
        self.producer.flush()
        owned = self.consumer.assignment()
        for tp, recs in polled.items():
            if tp.partition in self._parts:
                self._parts[tp.partition] = PartitionState()
            if tp in owned:
                self.consumer.seek(tp, recs[0].offset)

    # -- assignment, idleness -------------------------------------------------------------
    def assigned(self) -> list[int]:
        """Partitions this consumer owns now."""
        return sorted(self._parts)

    def restored(self) -> bool:
        """Whether partitions are assigned and every one's join state is restored."""
        return bool(self._parts) and all(p.join is not None for p in self._parts.values())

    def pending(self) -> int:
        """Open impressions in the attribution window over the owned partitions."""
        return sum(len(p.join.pending) for p in self._parts.values() if p.join is not None)

    # -- lifecycle --------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Poll and process until ``stop`` is set (each batch fully committed before the next)."""
        while not stop.is_set():
            self.poll_once()

    def close(self) -> None:
        """Commit what was processed (synchronously), leave the group, close the clients."""
        try:
            self.producer.flush()
            self.offsets.commit_sync()
        finally:
            self.consumer.close(autocommit=False)
            self.restores.close()
            self.samples.reader.close()
            self.producer.close()
