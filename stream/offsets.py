"""The stream consumer's offsets: commits (after each written batch, past transaction markers,
synchronously on close) and the lag of its partitions.

Run: made and used by :class:`stream.consumer.StreamConsumer` (``consumer.offsets``).
A commit that is lost (crash, rebalance) only makes the next owner replay what the skip
rules of docs/stream.md skip, so batches commit asynchronously.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from stream import metrics

log = logging.getLogger(__name__)


class Offsets:
    """The offsets this member committed last and the lag of ``topic``'s partitions in
    ``owned`` (the consumer's partition states: a partition revoked meanwhile is never
    committed)."""

    def __init__(self, consumer: KafkaConsumer, topic: str, owned: Collection[int]) -> None:
        self.consumer = consumer
        self.topic = topic
        self.owned = owned
        self.done: dict[TopicPartition, OffsetAndMetadata] = {}  # last offsets committed

    def forget(self, tp: TopicPartition) -> None:
        """``tp`` was revoked: its last commit is no longer this member's business."""
        self.done.pop(tp, None)

    def adopt(self, tp: TopicPartition) -> None:
        """A newly assigned ``tp``: take the group's committed offset as this member's last
        commit (so that :meth:`commit_skipped` also moves a commit left on a marker)."""
        if tp not in self.done and (at := self.consumer.committed(tp)) is not None:
            self.done[tp] = OffsetAndMetadata(int(at), "", -1)

    def commit(self, commits: dict[TopicPartition, OffsetAndMetadata]) -> None:
        """Commit asynchronously the offsets of the partitions still owned."""
        owned = {tp: om for tp, om in commits.items() if tp.partition in self.owned}
        if not owned:
            return
        self.done.update(owned)
        self.consumer.commit_async(owned, callback=_committed)

    def commit_skipped(self) -> None:
        """On an empty poll, commit the positions that moved past the last commit without a
        record: transaction markers (a ``recstream dlq replay`` writes in transactions) take
        offsets that no record is returned for, and a commit left before one would show a
        lag of 1 to the group's tools until the next event. Every record before the position
        was returned by an earlier poll and that batch written before this poll."""
        moved = {}
        for tp, done in self.done.items():
            if tp.partition in self.owned and (pos := self.consumer.position(tp)) > done.offset:
                moved[tp] = OffsetAndMetadata(pos, "", -1)
        if moved:
            self.commit(moved)

    def commit_sync(self) -> None:
        """Wait until the offsets of every processed batch of an owned partition are committed."""
        owned = {tp: om for tp, om in self.done.items() if tp.partition in self.owned}
        if owned:
            try:
                self.consumer.commit(owned)
            except (CommitFailedError, KafkaError) as exc:
                log.warning("commit failed (%s); the next owner replays from the last commit", exc)

    def lag(self, partition: int) -> int | None:
        """Records between this consumer's position and the end of ``partition`` (None until
        a fetch has told the end)."""
        tp = TopicPartition(self.topic, partition)
        high = self.consumer.highwater(tp)
        return None if high is None else max(0, high - self.consumer.position(tp))

    def export_lag(self) -> None:
        """Set the lag gauge of every owned partition whose end is known."""
        for partition in list(self.owned):
            lag = self.lag(partition)
            if lag is not None:
                metrics.LAG.labels(str(partition)).set(lag)


def _committed(offsets: object, response: object) -> None:
    if isinstance(response, Exception):
        log.warning("commit failed (%s); the next owner replays from the last commit", response)
