"""What the stream consumer holds for each partition it owns, and the one object that holds it.

Run: made by :class:`stream.consumer.StreamConsumer` (``consumer.parts``) and handed to its
collaborators, which ask it through its methods: :class:`stream.offsets.Offsets` (which
partitions are owned, the last commit of each), :class:`stream.restores.Restores` (which
are not restored yet), the idle flush (:meth:`Partitions.idle`). Its rebalance listener
(:meth:`Partitions.listener`) is the only thing that changes the assignment.

Per partition (:class:`PartitionState`): the cache of user sequences, the join state once
restored (and the restore under way until then), the wall time of its last event and the
last offset this member committed. A partition revoked takes all of it with it; one assigned
again starts empty, as after a restart (docs/stream.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from features.store import UserSequence
from stream import metrics
from stream.kafka import KafkaConfig, may_have_lost_membership
from stream.samples import JoinState
from stream.sequences import bound_caches

log = logging.getLogger(__name__)


@dataclass
class PartitionState:
    """What this consumer holds for one assigned partition."""

    users: dict[int, UserSequence] = field(default_factory=dict)
    join: JoinState | None = None  # None until restored after the assignment
    restoring: Future[JoinState] | None = None  # the restore under way (stream.restores)
    last_event_wall: float = field(default_factory=time.monotonic)
    committed: OffsetAndMetadata | None = None  # this member's last commit (stream.offsets)


class Partitions:
    """The partitions this member owns and their state (see the module docstring)."""

    def __init__(self, consumer: KafkaConsumer, cfg: KafkaConfig) -> None:
        self._consumer = consumer
        self._cfg = cfg
        self._states: dict[int, PartitionState] = {}

    # -- the assignment ---------------------------------------------------------------------
    def listener(self) -> ConsumerRebalanceListener:
        """The listener to subscribe with: kafka-python calls it inside ``poll``."""
        return _Listener(self)

    def assign(self, partitions: Iterable[int]) -> None:
        """Newly assigned partitions start empty (their join state is restored next)."""
        for p in partitions:
            self._states[p] = PartitionState()

    def revoke(self, partitions: Iterable[int]) -> None:
        """Drop the revoked partitions' state; a restore of one not begun yet is cancelled."""
        for p in partitions:
            state = self._states.pop(p, None)
            if state is not None and state.restoring is not None:
                state.restoring.cancel()
            metrics.PENDING.labels(str(p)).set(0)
        metrics.CACHED_USERS.set(self.cached_users())

    def reset(self, partition: int) -> None:
        """Forget what ``partition`` holds in memory, as after an assignment (a rewound batch:
        caches and join state are rebuilt from Feast and the changelog); the last commit stays
        this member's."""
        old = self._states.get(partition)
        if old is not None:
            self._states[partition] = PartitionState(committed=old.committed)

    def owned(self) -> list[int]:
        """The partitions this member owns now, in order."""
        return sorted(self._states)

    def owns(self, partition: int) -> bool:
        return partition in self._states

    def __getitem__(self, partition: int) -> PartitionState:
        return self._states[partition]

    def get(self, partition: int) -> PartitionState | None:
        return self._states.get(partition)

    def items(self) -> list[tuple[int, PartitionState]]:
        """(partition, state) of every owned partition (a copy: safe to change the states)."""
        return list(self._states.items())

    def unsure(self) -> bool:
        """Whether the group may already have moved the partitions on: then nothing is
        written, committed or installed (:func:`stream.kafka.may_have_lost_membership`)."""
        return may_have_lost_membership(self._consumer, self._cfg)

    # -- join states --------------------------------------------------------------------------
    def unrestored(self) -> list[tuple[int, PartitionState]]:
        """(partition, state) of the owned partitions whose join state is not restored yet."""
        return [(p, s) for p, s in self._states.items() if s.join is None]

    def restored(self) -> bool:
        """Whether partitions are assigned and every one's join state is restored."""
        return bool(self._states) and all(s.join is not None for s in self._states.values())

    def joins(self, partitions: Iterable[int]) -> dict[int, JoinState]:
        """The join states of those of ``partitions`` that are owned and restored."""
        return {p: j for p in partitions
                if (s := self._states.get(p)) is not None and (j := s.join) is not None}

    def pending(self) -> int:
        """Open impressions in the attribution window over the owned partitions."""
        return sum(len(s.join.pending) for s in self._states.values() if s.join is not None)

    def active(self, partitions: Iterable[int], wall: float) -> None:
        """``partitions`` had events at monotonic time ``wall`` (for :meth:`idle`)."""
        for p in partitions:
            self._states[p].last_event_wall = wall

    def idle(self, window_s: float, caught_up: Callable[[int], bool]
             ) -> dict[int, JoinState]:
        """The join states with open impressions of the partitions without an event for a
        whole window of wall time and ``caught_up`` (nothing left to read): the idle flush
        closes their windows (:meth:`stream.samplelog.SampleLog.flush_idle`)."""
        now = time.monotonic()
        return {p: s.join for p, s in self._states.items()
                if s.join is not None and s.join.pending
                and now - s.last_event_wall >= window_s and caught_up(p)}

    # -- the caches of user sequences ---------------------------------------------------------
    def cached_users(self) -> int:
        """User sequences held in the caches now."""
        return sum(len(s.users) for s in self._states.values())

    def uncached(self, users: Collection[tuple[int, int]], refresh: bool
                 ) -> list[tuple[int, int]]:
        """The (partition, user) pairs of ``users`` whose sequence is not cached; with
        ``refresh`` the cached ones move to the end of their cache, so that
        :meth:`bound` drops the users used longest ago first."""
        missing = [(p, u) for p, u in users if u not in self._states[p].users]
        if refresh:
            for p, u in users:
                cache = self._states[p].users
                seq = cache.pop(u, None)
                if seq is not None:
                    cache[u] = seq
        return missing

    def cache(self, sequences: Mapping[tuple[int, int], UserSequence]) -> None:
        """Hold the sequences read for (partition, user) pairs."""
        for (p, user), seq in sequences.items():
            self._states[p].users[user] = seq

    def forget_users(self, users: Collection[int]) -> None:
        """Drop ``users`` from the caches: their next event reads them again."""
        for state in self._states.values():
            for user in users:
                state.users.pop(user, None)

    def bound(self, max_users: int) -> int:
        """Keep the cached sequences within ``max_users`` (:func:`bound_caches`); return how
        many were dropped. Only after a batch is written (every cached sequence is its row)."""
        return bound_caches([s.users for s in self._states.values()], max_users)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, parts: Partitions) -> None:
        self.parts = parts

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.parts.revoke(tp.partition for tp in revoked)
        log.info("revoked %s", sorted(tp.partition for tp in revoked))

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.parts.assign(tp.partition for tp in assigned)
        log.info("assigned %s", sorted(tp.partition for tp in assigned))
