"""What the stream consumer holds per micro-batch (plain state, no I/O); what it holds per
partition is :mod:`stream.partitions`.

Run: made and used by :class:`stream.consumer.StreamConsumer` only.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from features.store import UserSequence
from stream.events import EventType
from stream.samples import Sample


@dataclass
class Batch:
    """The effects of one micro-batch, written out together."""

    changed: dict[int, UserSequence] = field(default_factory=dict)
    items: dict[int, int] = field(default_factory=dict)
    clicks_ts_ms: list[int] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    touched: set[int] = field(default_factory=set)
    # (type, outcome, variant): valid events, and the A/B variant they carry (or None)
    ok: Counter[tuple[EventType, str, str | None]] = field(default_factory=Counter)
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
