"""Restores of the join state of newly assigned (or rewound) partitions, off the poll loop.

Run: made and used by :class:`stream.consumer.StreamConsumer` (``consumer.restores``).

A restore (:meth:`stream.samplelog.SampleLog.restore`) reads a partition's changelog from the
oldest record that still holds an open impression: with a window of minutes at production
rates that is 10^5 entries and more, seconds of work (~20-30 µs an entry, measured). Done
between two polls, that time counted against ``max_poll_interval_ms``: past 90% of it the
batch was abandoned and its state dropped, so the restore began again, batch after batch,
and past the interval kafka-python left the group. So each restore runs on a thread of its
own (one: the restores share a reader) while its partition is paused; the consumer goes on
polling, keeping its membership, and processing its other partitions. A poll waits for the
restores under way for at most ``wait_s``: a short restore (the usual case) is done within
the poll that assigned the partition, as before. Records a poll returns for a partition not
restored yet are given back (its position sought back to them).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_for

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from stream import metrics
from stream.batch import PartitionState
from stream.kafka import resume
from stream.offsets import Offsets
from stream.samplelog import SampleLog


class Restores:
    """Starts, waits for and installs the restores of ``topic``'s partitions."""

    def __init__(self, consumer: KafkaConsumer, topic: str, log: SampleLog, offsets: Offsets,
                 wait_s: float) -> None:
        self.consumer = consumer
        self.topic = topic
        self.log = log
        self.offsets = offsets
        self.wait_s = wait_s
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="restore")

    def advance(self, parts: dict[int, PartitionState]) -> None:
        """Start the restore of each partition without join state (and pause it), wait up to
        ``wait_s`` for those under way, and install the ones done: their join state, the
        group's committed offset as this member's last commit (:meth:`Offsets.adopt`), the
        partition resumed. A restore that failed raises here, as it did in the poll loop."""
        waiting: dict[int, PartitionState] = {}
        for partition, part in parts.items():
            if part.join is not None:
                continue
            if part.restoring is None:
                part.restoring = self._pool.submit(self.log.restore, partition)
                self.consumer.pause(TopicPartition(self.topic, partition))
            waiting[partition] = part
        if not waiting:
            return
        wait_for([part.restoring for part in waiting.values() if part.restoring is not None],
                 timeout=self.wait_s)
        for partition, part in waiting.items():
            if part.restoring is None or not part.restoring.done():
                continue
            part.join, part.restoring = part.restoring.result(), None
            metrics.RESTORES.inc()
            tp = TopicPartition(self.topic, partition)
            self.offsets.adopt(tp)
            resume(self.consumer, tp)

    def hold_back(self, polled: dict[TopicPartition, list[ConsumerRecord]],
                  parts: dict[int, PartitionState]) -> dict[TopicPartition, list[ConsumerRecord]]:
        """The records of restored partitions; those of the others are given back (seek)."""
        ready = {}
        for tp, recs in polled.items():
            part = parts.get(tp.partition)
            if part is not None and part.join is not None:
                ready[tp] = recs
            else:
                self.consumer.seek(tp, recs[0].offset)
        return ready

    def close(self) -> None:
        """Wait for a restore under way (its reader is closed next); drop those not begun."""
        self._pool.shutdown(wait=True, cancel_futures=True)
