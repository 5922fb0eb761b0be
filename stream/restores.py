"""Restores of the join state of newly assigned (or rewound) partitions, off the poll loop.

Run: made and used by :class:`stream.consumer.StreamConsumer` (``consumer.restores``).

A restore (:meth:`stream.samplelog.SampleLog.restore`) reads a partition's changelog from the
oldest record that still holds an open impression: with a window of minutes at production
rates that is 10^5 entries and more, seconds of work (~20-30 µs an entry, measured). Done
between two polls, that time counted against ``max_poll_interval_ms``: past 90% of it the
batch was abandoned and its state dropped, so the restore began again, batch after batch,
and past the interval kafka-python left the group. So each restore runs on a thread of its
own (one: the restores share a reader) while its partition is paused; the consumer goes on
polling, keeping its membership, and processing its other partitions. The poll that starts
restores waits for them for at most ``wait_s``: a short restore (the usual case) is done
within the poll that assigned the partition, as before. Records a poll returns for a
partition not restored yet are given back (its position sought back to them).

A restore only reads. What it leads to is done on the poll loop when it is installed, and
only while the group cannot have moved the partitions on (``unsure``, the check a batch
makes before its writes): the first changelog record of a partition that has none, the
group's committed offset taken as this member's last commit, the resume, the metrics. A
restore of a partition revoked meanwhile is cancelled if it has not begun, and its result
dropped if it has (its state is gone: :class:`stream.partitions.Partitions`).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from stream import metrics
from stream.kafka import resume
from stream.offsets import Offsets
from stream.partitions import Partitions, PartitionState
from stream.samplelog import SampleLog
from stream.samples import JoinState


class Restores:
    """Starts, waits for and installs the restores of the partitions of ``topic`` in ``parts``
    without join state."""

    def __init__(self, consumer: KafkaConsumer, topic: str, log: SampleLog, offsets: Offsets,
                 parts: Partitions, wait_s: float) -> None:
        self.consumer = consumer
        self.parts = parts
        self.topic = topic
        self.log = log
        self.offsets = offsets
        self.wait_s = wait_s
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="restore")

    def advance(self) -> None:
        """Start the restore of each partition without join state (and pause it), wait up to
        ``wait_s`` for those started now, and install the ones done (see module docstring).
        A restore that failed raises here, as it did in the poll loop; the partition is
        resumed and its next poll starts the restore again."""
        started: list[Future[JoinState]] = []
        waiting = self.parts.unrestored()
        for partition, part in waiting:
            if part.restoring is None:
                part.restoring = self._pool.submit(self.log.restore, partition)
                started.append(part.restoring)
                self.consumer.pause(TopicPartition(self.topic, partition))
        if started:
            wait_for(started, timeout=self.wait_s)
        done = [(p, part) for p, part in waiting
                if part.restoring is not None and part.restoring.done()]
        if done and not self.parts.unsure():
            for partition, part in done:
                self._install(partition, part)

    def _install(self, partition: int, part: PartitionState) -> None:
        """Take a finished restore's state: the first changelog record if there was none, the
        committed offset as the last commit, the join state; the partition resumed."""
        tp = TopicPartition(self.topic, partition)
        future, part.restoring = part.restoring, None
        assert future is not None
        try:
            join = future.result()
            if join.unborn:
                self.log.write_birth(partition, join)
            self.offsets.adopt(partition)
            part.join = join
        finally:
            resume(self.consumer, tp)
        metrics.RESTORES.inc()
        metrics.PENDING.labels(str(partition)).set(len(join.pending))

    def hold_back(self, polled: dict[TopicPartition, list[ConsumerRecord]]
                  ) -> dict[TopicPartition, list[ConsumerRecord]]:
        """The records of restored partitions; those of the others are given back (seek)."""
        ready = {}
        for tp, recs in polled.items():
            part = self.parts.get(tp.partition)
            if part is not None and part.join is not None:
                ready[tp] = recs
            else:
                self.consumer.seek(tp, recs[0].offset)
        return ready

    def close(self) -> None:
        """Wait for a restore under way (its reader is closed next); drop those not begun."""
        self._pool.shutdown(wait=True, cancel_futures=True)
