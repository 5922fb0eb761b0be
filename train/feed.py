"""The samples topic as the incremental trainer reads it: every partition, from a position.

Run: ``feed = SampleFeed(kafka_cfg, "recstream-train", start)``; ``feed.poll()`` returns the
records read since (partition, offset, samples); ``feed.commit(ends)`` after the update they
fed was published or rejected.

The trainer of a family is one process, so the feed assigns itself every partition (no
group rebalance can move them mid-update); the group id only names where its offsets are
committed. The start of a partition is the later of the group's committed offset and the
end recorded in the registry by the last update (``start``): a trainer killed between a
publish and its commit resumes after what that version already counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from stream.kafka import KafkaConfig, make_consumer
from stream.samples import decode_batch


@dataclass
class Record:
    """One record of the samples topic: where it is and its samples (dicts)."""

    partition: int
    offset: int
    samples: list[dict[str, Any]]


class SampleFeed:
    """Reads every partition of the samples topic; commits positions under ``group_id``."""

    def __init__(self, cfg: KafkaConfig, group_id: str, start: dict[int, int] | None = None
                 ) -> None:
        self.topic = cfg.topics.samples
        self.consumer: KafkaConsumer = make_consumer(cfg, group_id)
        partitions = self.consumer.partitions_for_topic(self.topic) or set()
        if not partitions:
            raise RuntimeError(f"topic {self.topic!r} has no partitions (is it created?)")
        self.tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self.consumer.assign(self.tps)
        start = start or {}
        self.positions: dict[int, int] = {}
        for tp in self.tps:
            committed = self.consumer.committed(tp)
            at = max(committed or 0, start.get(tp.partition, 0))
            if committed is None and tp.partition not in start:
                self.consumer.seek_to_beginning(tp)
                at = self.consumer.position(tp)
            else:
                self.consumer.seek(tp, at)
            self.positions[tp.partition] = at

    def poll(self, timeout_ms: int = 200, max_records: int = 40) -> list[Record]:
        """Records read since the last poll (at most ``max_records``, each up to 250
        samples), in offset order per partition."""
        out = []
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        for tp, records in polled.items():
            for r in records:
                out.append(Record(tp.partition, r.offset, decode_batch(r.value)))
                self.positions[tp.partition] = r.offset + 1
        return out

    def commit(self, ends: dict[int, int]) -> None:
        """Commit ``ends`` (partition: next offset) for the group."""
        if ends:
            self.consumer.commit({TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1)
                                  for p, o in ends.items()})

    def lag(self) -> int:
        """Records between the positions and the ends of the partitions."""
        ends = self.consumer.end_offsets(self.tps)
        return sum(max(0, int(ends[tp]) - self.positions[tp.partition]) for tp in self.tps)

    def close(self) -> None:
        self.consumer.close(autocommit=False)
