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

The consumer runs the batch; its parts are elsewhere: what it holds per partition
(:mod:`stream.partitions`, the one owner of that state), what one record does
(:mod:`stream.records`), restores (:mod:`stream.restores`), commits and lag
(:mod:`stream.offsets`), the Kafka writes (:mod:`stream.samplelog`), the Feast write
(:mod:`stream.featurewrite`).
"""

from __future__ import annotations

import logging
import threading
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata

from features.store import FeatureAccess, StoreUnavailable, UserSequence
from stream import metrics
from stream.batch import Batch
from stream.events import EventRow
from stream.failpoints import failpoint
from stream.featurewrite import FeatureWriter
from stream.gcfreeze import freeze_startup_heap
from stream.kafka import make_consumer, make_producer
from stream.offsets import Offsets
from stream.partitions import Partitions
from stream.records import apply_event, judge
from stream.restores import Restores
from stream.samplelog import SampleLog
from stream.sequences import bound_caches
from stream.settings import StreamSettings

log = logging.getLogger(__name__)
_FRESHNESS_MAX_S = 3600.0  # older events are replays of history, not freshness


class _Abandoned(Exception):
    """The group may have moved this batch's partitions on: the rest is not written."""


class StreamConsumer:
    """One member of the consumer group on the events topic (see module docstring)."""

    def __init__(self, settings: StreamSettings, *, client_id: str | None = None) -> None:
        self.settings = settings
        self.cfg = settings.kafka
        self.topic = self.cfg.topics.events
        self.client_id = client_id or "recstream-stream"
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
        self.parts = Partitions(self.consumer, self.cfg)  # per-partition state, its one owner
        self.offsets = Offsets(self.consumer, self.topic, self.parts)
        self.restores = Restores(self.consumer, self.topic, self.samples, self.offsets,
                                 self.parts, wait_s=min(1.0, self.cfg.max_poll_interval_ms / 4000))
        self.consumer.subscribe([self.topic], listener=self.parts.listener())
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
        self.restores.advance()
        polled = self.restores.hold_back(polled)
        n = sum(len(recs) for recs in polled.values())
        if n == 0:
            if not self.parts.unsure():  # as a batch's writes
                self.samples.flush_idle(self.parts.idle(
                    self.settings.attribution_window_s, lambda p: self.offsets.lag(p) == 0))
            self.offsets.commit_skipped()
            self.offsets.export_lag()
            return 0
        batch.lap("restore")
        t0 = time.perf_counter()
        states = {tp.partition: self.parts[tp.partition] for tp in polled}  # all restored
        parsed: list[tuple[int, ConsumerRecord, EventRow | None]] = []
        settings, send = self.settings, self.samples.dead_letter
        for tp, recs in polled.items():
            p, join = tp.partition, states[tp.partition].join
            for rec in recs:
                parsed.append((p, rec, judge(rec, p, join, batch, settings, send)))
            batch.commits[tp] = OffsetAndMetadata(recs[-1].offset + 1, "", -1)
        batch.lap("validate")
        try:
            self._load_users(parsed)
        except StoreUnavailable as err:
            self._account(batch)
            self._store_failed(polled, err, "read")
            return 0
        batch.lap("feast_read")
        self.parts.active(states, time.monotonic())
        for partition, rec, event in parsed:
            if event is not None:
                apply_event(event, partition, rec.offset, states[partition], batch,
                            self._known_items, settings.max_history)
            elif (join := states[partition].join) is not None:
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
        for (kind, outcome, variant), count in batch.ok.items():
            metrics.EVENTS.labels(kind.value, outcome).inc(count)
            if variant is not None and outcome == "ok":
                metrics.count_variant(variant, kind.value, count)
        self.last_batch_seconds = time.perf_counter() - t0
        metrics.BATCH_SIZE.observe(n)
        metrics.BATCH_SECONDS.observe(self.last_batch_seconds)
        self.offsets.export_lag()
        return n

    def _load_users(self, parsed: list[tuple[int, ConsumerRecord, EventRow | None]]) -> None:
        """Fill the cache with the batch's users not seen since the assignment (one read).

        Near the cache's bound (past half of it), the batch's cached users also move to the
        end of their cache, so that the bound drops the users used longest ago.
        """
        users = {(p, e.user_id) for p, _, e in parsed if e is not None}
        missing = self.parts.uncached(
            users, refresh=self.cached_users() > self.settings.max_cached_users // 2)
        if missing:
            found = self.features.read_sequences(u for _, u in missing)
            self.parts.cache({(p, u): found.get(u) or UserSequence() for p, u in missing})

    def _bound_cache(self) -> None:
        """Keep the cached sequences within ``max_cached_users`` (:func:`bound_caches`); after
        a batch is written, when every cached sequence is the row in Feast."""
        metrics.CACHE_EVICTIONS.inc(self.parts.bound(self.settings.max_cached_users))
        metrics.CACHED_USERS.set(self.cached_users())
        # Item categories already written (~150 B an item): forgetting one costs one
        # write of an unchanged category, so a loose bound of 10x the users' will do.
        bound_caches([self._known_items], 10 * self.settings.max_cached_users)

    def cached_users(self) -> int:
        """User sequences held in the cache now."""
        return self.parts.cached_users()

    def _write(self, batch: Batch) -> None:
        """DLQ, then samples + changelog to Kafka, then Feast, then the commit (this order).

        Every send is confirmed (``get`` raises on a failed one) before anything that
        records it as done: the DLQ before the changelog's ``upto``, samples before their
        changelog record, the changelog before the commit.
        """
        self._fence("samples")
        joins = self.parts.joins(batch.touched)
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
            self.parts.forget_users(batch.refused)
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

    def _fence(self, stage: str) -> None:
        """Raise ``_Abandoned`` when the group may already have moved the partitions on."""
        if self.parts.unsure():
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
            self.parts.reset(tp.partition)
            if tp in owned:
                self.consumer.seek(tp, recs[0].offset)

    # -- assignment, idleness -------------------------------------------------------------
    def assigned(self) -> list[int]:
        """Partitions this consumer owns now."""
        return self.parts.owned()

    def restored(self) -> bool:
        """Whether partitions are assigned and every one's join state is restored."""
        return self.parts.restored()

    def pending(self) -> int:
        """Open impressions in the attribution window over the owned partitions."""
        return self.parts.pending()

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
