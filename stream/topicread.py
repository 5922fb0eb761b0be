"""Reading a partition range with an assigned (group-less) consumer, to the true end.

Run: used by :mod:`stream.samplelog` (restores), :mod:`stream.recompute` (checks) and the
A/B readers of whole topics (:func:`iter_topic`: :mod:`stream.ab`, :mod:`stream.ab_online`).

The end offset from ListOffsets (``KafkaConsumer.end_offsets``) can lag behind the records a
fetch returns (seen on Tansu: 1107 reported while 1128 records were there), so "the end"
here is where fetching stops returning records: the high watermark of the fetch responses,
or, where that is never reached, three empty polls in a row once a fetch has answered and
no record came for ``SETTLE_S`` (before, three polls of 50 ms: a first fetch slower than that,
or one after a seek behind a watermark known from an earlier read, read as the end).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

SETTLE_S = 1.0


def read_range(reader: KafkaConsumer, tp: TopicPartition, start: int, end: int | None = None,
               timeout_s: float = 60.0) -> list[ConsumerRecord]:
    """Records of ``tp`` in ``[start, end)``; ``end=None`` reads to the true end."""
    if end is not None and start >= end:
        return []
    reader.assign([tp])
    reader.seek(tp, start)
    out: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout_s
    empty, progress_at = 0, time.monotonic()
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError(f"reading {tp} from {start} timed out")
        polled = reader.poll(timeout_ms=50)
        recs = [r for got_tp, rs in polled.items() if got_tp == tp for r in rs
                if r.offset >= start and (end is None or r.offset < end)]
        out.extend(recs)
        position = reader.position(tp)
        if end is not None and position >= end:
            return out
        high = reader.highwater(tp)
        if end is None and high is not None and position >= high:
            return out
        if recs:
            empty, progress_at = 0, time.monotonic()
        else:
            empty += 1
        # Empty polls say "the end" only once a fetch has answered (the high watermark is
        # known: before that, a slow first fetch would read as an empty partition) and for
        # SETTLE_S (a watermark left by an earlier read of the partition is known at once).
        if end is None and empty >= 3 and high is not None \
                and time.monotonic() - progress_at >= SETTLE_S:
            return out


def true_end(reader: KafkaConsumer, tp: TopicPartition) -> int:
    """The offset after the last record of ``tp`` (see module docstring)."""
    listed = int(reader.end_offsets([tp])[tp])
    tail = read_range(reader, tp, max(0, listed - 1))
    return max(listed, tail[-1].offset + 1) if tail else listed


def iter_range(reader: KafkaConsumer, tp: TopicPartition, start: int, end: int,
               stall_s: float = 60.0) -> Iterator[ConsumerRecord]:
    """Records of ``tp`` in ``[start, end)`` as they are fetched, for ranges too long to hold
    in memory (no overall deadline: it fails only when no record comes for ``stall_s``)."""
    if start >= end:
        return
    reader.assign([tp])
    reader.seek(tp, start)
    last = time.monotonic()
    while reader.position(tp) < end:
        polled = reader.poll(timeout_ms=200)
        got = [r for got_tp, rs in polled.items() if got_tp == tp for r in rs]
        if got:
            last = time.monotonic()
        elif time.monotonic() - last > stall_s:
            raise TimeoutError(f"reading {tp} from {start} to {end}: no record for {stall_s} s")
        yield from (r for r in got if start <= r.offset < end)


def iter_topic(reader: KafkaConsumer, topic: str) -> Iterator[ConsumerRecord]:
    """Every record of ``topic``, partition by partition (in partition order), from the
    beginning to the true end of each (:func:`true_end`), with ``reader`` assigned."""
    for part in sorted(reader.partitions_for_topic(topic) or ()):
        tp = TopicPartition(topic, part)
        start, end = int(reader.beginning_offsets([tp])[tp]), true_end(reader, tp)
        yield from iter_range(reader, tp, start, end)
