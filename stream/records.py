"""What one record of the ``events`` topic does to a micro-batch: its verdict (a valid event,
a new dead letter, or one an earlier run dead-lettered already), and a valid event's effects
(the user's sequence, the join's samples, the item's category).

Run: called by :class:`stream.consumer.StreamConsumer` for every polled record, in partition
order; the effects wait in the :class:`stream.batch.Batch` until the batch is written. The
skip rules that make a replay exact are docs/stream.md's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kafka.consumer.fetcher import ConsumerRecord

from stream import metrics
from stream.batch import Batch
from stream.dlq import DeadLetter, validate
from stream.events import EventRow, EventType, InvalidEvent
from stream.partitions import PartitionState
from stream.samples import JoinState
from stream.sequences import apply_click
from stream.settings import StreamSettings


def judge(rec: ConsumerRecord, partition: int, join: JoinState | None, batch: Batch,
          settings: StreamSettings, send: Callable[[DeadLetter], Any]) -> EventRow | None:
    """The record's event when it is valid; else None, the record dead-lettered (``send``,
    its future kept in ``batch.dead``) unless an earlier run (whose commit did not land)
    did so already."""
    # A letter found by the restore stays the verdict even if the message would pass now
    # (a future timestamp that is no longer in the future).
    if join is not None and join.dead_ahead and join.dead_ahead_hit(rec.offset):
        _replayed_dead(partition, batch)
        return None
    stamp = rec.timestamp  # the record's Kafka timestamp: the same verdict on a replay
    try:
        return validate(rec.key, rec.value, settings.max_future_skew_s,
                        stamp / 1000.0 if stamp is not None and stamp >= 0 else None)
    except Exception as err:  # any input the contract cannot read goes to the DLQ
        exc = err if isinstance(err, InvalidEvent) else InvalidEvent("unexpected", repr(err))
    if join is not None and rec.offset <= join.upto:
        _replayed_dead(partition, batch)  # its changelog record covers it
        return None
    dead = DeadLetter.of_message(rec.key, rec.value, exc, topic=rec.topic, partition=partition,
                                 offset=rec.offset, group=settings.group_id)
    batch.dead.setdefault(partition, []).append(send(dead))
    batch.touched.add(partition)  # the changelog record carries the new ``upto``
    metrics.DLQ.labels(exc.reason).inc()
    metrics.EVENTS.labels("unknown", "dlq").inc()
    return None


def _replayed_dead(partition: int, batch: Batch) -> None:
    """An invalid message an earlier run (whose commit did not land) dead-lettered."""
    batch.touched.add(partition)
    metrics.EVENTS.labels("unknown", "replayed").inc()


def apply_event(event: EventRow, partition: int, offset: int, part: PartitionState,
                batch: Batch, known_items: Mapping[int, int], max_history: int) -> None:
    """Apply a valid event to its partition's state (the user's sequence, cached, and the
    join state) and record what it changes in ``batch``: the sequence, the samples it
    releases, the item's category unless ``known_items`` (written already) has it."""
    seq = part.users[event.user_id]
    item, cat = event.item_id, event.category_id
    # against the batch's own value first: A known, then B and A in one batch writes A
    if batch.items.get(item, known_items.get(item)) != cat:
        batch.items[item] = cat
    outcome = "ok"
    if part.join is not None:
        if offset <= part.join.upto:
            outcome = "replayed"  # a previous run's changelog covers it (see docs/stream.md)
        batch.samples.extend(part.join.on_event(partition, offset, event, seq))
        batch.touched.add(partition)
    if event.event_type is EventType.CLICK:
        applied = apply_click(seq, event.item_id, event.category_id, event.ts_ms,
                              partition, offset, max_history)
        if applied:
            batch.changed[event.user_id] = seq
            batch.clicks_ts_ms.append(event.ts_ms)
        else:
            metrics.REPLAYED.labels("click").inc()
    batch.ok[(event.event_type, outcome, event.variant)] += 1
