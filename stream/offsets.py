"""The stream consumer's offsets: commits (after each written batch, past transaction markers,
synchronously on close) and the lag of its partitions.

Run: made and used by :class:`stream.consumer.StreamConsumer` (``consumer.offsets``).
A commit that is lost (crash, rebalance) only makes the next owner replay what the skip
rules of docs/stream.md skip, so batches commit asynchronously. Which partitions are owned,
and this member's last commit of each, are asked of :class:`stream.partitions.Partitions`.
"""

from __future__ import annotations

import logging

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from stream import metrics
from stream.partitions import Partitions

log = logging.getLogger(__name__)


class Offsets:
    """Commits of ``topic``'s partitions owned in ``parts`` (a partition revoked meanwhile is
    never committed; its last commit went with its state) and their lag."""

    def __init__(self, consumer: KafkaConsumer, topic: str, parts: Partitions) -> None:
        self.consumer = consumer
        self.topic = topic
        self.parts = parts

    def adopt(self, partition: int) -> None:
        """A newly assigned ``partition``: take the group's committed offset as this member's
        last commit (so that :meth:`commit_skipped` also moves a commit left on a marker)."""
        state = self.parts.get(partition)
        if state is not None and state.committed is None \
                and (at := self.consumer.committed(self._tp(partition))) is not None:
            state.committed = OffsetAndMetadata(int(at), "", -1)

    def commit(self, commits: dict[TopicPartition, OffsetAndMetadata]) -> None:
        """Commit asynchronously the offsets of the partitions still owned."""
        owned = {}
        for tp, om in commits.items():
            if (state := self.parts.get(tp.partition)) is not None:
                state.committed = om
                owned[tp] = om
        if owned:
            self.consumer.commit_async(owned, callback=_committed)

    def commit_skipped(self) -> None:
        """On an empty poll, commit the positions that moved past the last commit without a
        record: transaction markers (a ``recstream dlq replay`` writes in transactions) take
        offsets that no record is returned for, and a commit left before one would show a
        lag of 1 to the group's tools until the next event. Every record before the position
        was returned by an earlier poll and that batch written before this poll."""
        moved = {}
        for tp, done in self._last_commits().items():
            if (pos := self.consumer.position(tp)) > done.offset:
                moved[tp] = OffsetAndMetadata(pos, "", -1)
        if moved:
            self.commit(moved)

    def commit_sync(self) -> None:
        """Wait until the offsets of every processed batch of an owned partition are committed."""
        owned = self._last_commits()
        if owned:
            try:
                self.consumer.commit(owned)
            except (CommitFailedError, KafkaError) as exc:
                log.warning("commit failed (%s); the next owner replays from the last commit", exc)

    def lag(self, partition: int) -> int | None:
        """Records between this consumer's position and the end of ``partition`` (None until
        a fetch has told the end)."""
        tp = self._tp(partition)
        high = self.consumer.highwater(tp)
        return None if high is None else max(0, high - self.consumer.position(tp))

    def export_lag(self) -> None:
        """Set the lag gauge of every owned partition whose end is known."""
        for partition in self.parts.owned():
            lag = self.lag(partition)
            if lag is not None:
                metrics.LAG.labels(str(partition)).set(lag)

    def _tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self.topic, partition)

    def _last_commits(self) -> dict[TopicPartition, OffsetAndMetadata]:
        """This member's last commit of each owned partition that has one."""
        return {self._tp(p): s.committed for p, s in self.parts.items()
                if s.committed is not None}


def _committed(offsets: object, response: object) -> None:
    if isinstance(response, Exception):
        log.warning("commit failed (%s); the next owner replays from the last commit", response)
