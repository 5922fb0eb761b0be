"""What the stream consumer holds per partition and per micro-batch (plain state, no I/O).

Run: made and used by :class:`stream.consumer.StreamConsumer` only.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Collection, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from features.store import UserSequence
from stream.events import EventType
from stream.samples import JoinState, Sample


@dataclass
class PartitionState:
    """What this consumer holds for one assigned partition."""

    users: dict[int, UserSequence] = field(default_factory=dict)
    join: JoinState | None = None  # None until restored after the assignment
    restoring: Future[JoinState] | None = None  # the restore under way (stream.restores)
    last_event_wall: float = field(default_factory=time.monotonic)


def forget_users(parts: Iterable[PartitionState], users: Collection[int]) -> None:
    """Drop ``users`` from the partitions' caches: their next event reads them again."""
    for part in parts:
        for user in users:
            part.users.pop(user, None)


@dataclass
class Batch:
    """The effects of one micro-batch, written out together."""

    changed: dict[int, UserSequence] = field(default_factory=dict)
    items: dict[int, int] = field(default_factory=dict)
    clicks_ts_ms: list[int] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    touched: set[int] = field(default_factory=set)
    ok: Counter[tuple[EventType, str]] = field(default_factory=Counter)  # (type, outcome)
    dead: dict[int, list[Any]] = field(default_factory=dict)  # DLQ send futures by partition
    commits: dict[TopicPartition, OffsetAndMetadata] = field(default_factory=dict)
    refused: set[int] = field(default_factory=set)  # users whose row the store refused
    phases: dict[str, float] = field(default_factory=dict)  # seconds by phase
    lap_at: float = field(default_factory=time.perf_counter)

    def lap(self, phase: str) -> float:
        """Charge the time since the last lap to ``phase``; return it (seconds)."""
        now = time.perf_counter()
        seconds = now - self.lap_at
        self.phases[phase] = self.phases.get(phase, 0.0) + seconds
        self.lap_at = now
        return seconds
