"""Replay of dead letters: the rejected events that pass the contract now go back to their
source topic, each one once, even across crashes of the replay.

Run: ``recstream dlq replay`` (``--dry-run`` lists what would go and sends nothing). Use it
after the cause of a rejection is gone: a producer's clock that ran ahead (``future_ts``),
a schema version this consumer did not know yet, a bug behind ``unexpected``. A letter is
replayed only if it now passes the same validation as the consumer applies; the others
stay on the DLQ (``recstream dlq`` shows them) and are counted by their new reason.

A replayed record is the letter's original key and value, sent to its source topic and
partition (so the user keeps their partition), with headers ``replay_of``
(``{dlq partition}-{dlq offset}``) and ``replay_group``. The consumer reads it as a new event
at a new offset; since a dead letter was never applied (its verdict stands, docs/stream.md),
the replay is the event's first and only application.

Once only, with a crash at any point (see docs/stream.md, "Replaying dead letters"): the
replay group ``{group_id}.dlq-replay`` commits, after each confirmed chunk of sends, its
position on every DLQ partition, then the end offsets of the source topic. A new run starts
at the committed DLQ positions and first reads the source topic from the committed end
offsets (a lower bound of where any send after that commit landed) for ``replay_of``
headers of its group: those letters were sent by a run that crashed before its commit and
are not sent again. One replay runs at a time per group.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata

from stream.dlq import DeadLetter, StoredLetter, validate
from stream.events import InvalidEvent
from stream.failpoints import failpoint
from stream.kafka import make_consumer, make_producer
from stream.settings import StreamSettings
from stream.topicread import read_range

log = logging.getLogger(__name__)
REPLAY_OF = "replay_of"
REPLAY_GROUP = "replay_group"
CHUNK = 500  # letters sent between two commits


def replay_group(settings: StreamSettings) -> str:
    """The consumer group whose committed offsets record the replay's progress."""
    return f"{settings.group_id}.dlq-replay"


def letter_id(partition: int, offset: int) -> str:
    return f"{partition}-{offset}"


@dataclass
class ReplayReport:
    """What one run did (or, with ``dry_run``, would do)."""

    replayed: list[StoredLetter] = field(default_factory=list)
    already: int = 0  # sent by a run that crashed before its commit: not sent again
    still_invalid: Counter[str] = field(default_factory=Counter)  # by the reason now
    other: int = 0  # records of other groups or topics, and records that are not letters


class Replayer:
    """Replays the dead letters of ``settings.group_id`` (see module docstring)."""

    def __init__(self, settings: StreamSettings) -> None:
        self.settings = settings
        self.cfg = settings.kafka
        self.group = replay_group(settings)
        self.source = self.cfg.topics.events
        self.dlq = self.cfg.topics.dlq

    def run(self, *, dry_run: bool = False) -> ReplayReport:
        """Replay what passes the contract now; return what was done."""
        progress = make_consumer(self.cfg, self.group)
        reader = make_consumer(self.cfg, None, client_id="dlq-replay-reader")
        producer = None if dry_run else make_producer(self.cfg, acks="all",
                                                      max_in_flight_requests_per_connection=1)
        try:
            dlq_tps = self._tps(reader, self.dlq)
            src_tps = self._tps(reader, self.source)
            progress.assign(dlq_tps + src_tps)  # for its commits; it never fetches
            starts = {tp: self._committed(progress, tp) for tp in dlq_tps}
            marks = {tp: self._committed(progress, tp) for tp in src_tps}
            if producer is not None and all(m is None for m in marks.values()):
                # first run: where the first sends can land, recorded before any of them
                self._commit(progress, {}, reader.end_offsets(src_tps))
                marks = dict(reader.end_offsets(src_tps))
            sent = self._sent_before(reader, marks)
            report = ReplayReport()
            for tp in dlq_tps:
                records = read_range(reader, tp, starts[tp] or 0)
                for i in range(0, len(records), CHUNK):
                    chunk = records[i:i + CHUNK]
                    todo = self._sort(tp, chunk, sent, report)
                    if producer is not None:
                        self._send(producer, todo)
                        failpoint("replay_after_send")
                        self._commit(progress, {tp: chunk[-1].offset + 1},
                                     reader.end_offsets(src_tps))
                    report.replayed.extend(todo)
            return report
        finally:
            if producer is not None:
                producer.close()
            reader.close()
            progress.close()

    # -- steps --------------------------------------------------------------------------------
    def _sort(self, tp: TopicPartition, records: list[ConsumerRecord], sent: set[str],
              report: ReplayReport) -> list[StoredLetter]:
        """The letters of ``records`` to send now; the others are counted in ``report``."""
        todo: list[StoredLetter] = []
        for rec in records:
            letter = DeadLetter.of_record(rec)
            if letter is None or letter.source_group != self.settings.group_id \
                    or letter.source_topic != self.source:
                report.other += 1
                continue
            if letter_id(tp.partition, rec.offset) in sent:
                report.already += 1
                continue
            try:
                validate(letter.key, letter.value, self.settings.max_future_skew_s)
            except InvalidEvent as exc:
                report.still_invalid[exc.reason] += 1
                continue
            todo.append(StoredLetter(tp.partition, rec.offset, rec.timestamp, letter))
        return todo

    def _send(self, producer: KafkaProducer, todo: list[StoredLetter]) -> None:
        """Send each letter back to its source partition; wait until every send is confirmed
        (``get`` raises on a failed one, and the chunk is not committed)."""
        futures = [producer.send(
            self.source, key=x.letter.key, value=x.letter.value,
            partition=x.letter.source_partition,
            headers=[(REPLAY_OF, letter_id(x.partition, x.offset).encode()),
                     (REPLAY_GROUP, self.group.encode())]) for x in todo]
        producer.flush()
        for f in futures:
            f.get()

    def _commit(self, progress: KafkaConsumer, dlq: dict[TopicPartition, int],
                marks: dict[TopicPartition, int]) -> None:
        """The DLQ positions first, then the source topic's end offsets: a crash between the
        two leaves older (lower) marks, which only widen the next run's scan."""
        if dlq:
            progress.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in dlq.items()})
            failpoint("replay_after_dlq_commit")
        progress.commit({tp: OffsetAndMetadata(int(o), "", -1) for tp, o in marks.items()})

    def _sent_before(self, reader: KafkaConsumer, marks: dict[TopicPartition, int | None]
                     ) -> set[str]:
        """Letters this group sent after its last commit (``replay_of`` past the marks).

        No mark at all: no run ever sent (the first one commits its marks before sending). A
        partition without a mark (added since) is read from its start.
        """
        sent: set[str] = set()
        if all(mark is None for mark in marks.values()):
            return sent
        for tp, mark in marks.items():
            for rec in read_range(reader, tp, mark or 0):
                h = dict(rec.headers or ())
                if h.get(REPLAY_GROUP) == self.group.encode() and REPLAY_OF in h:
                    sent.add(h[REPLAY_OF].decode())
        return sent

    @staticmethod
    def _tps(reader: KafkaConsumer, topic: str) -> list[TopicPartition]:
        parts = reader.partitions_for_topic(topic)
        if not parts:
            raise RuntimeError(f"topic {topic} has no partitions (is the broker up?)")
        return [TopicPartition(topic, p) for p in sorted(parts)]

    @staticmethod
    def _committed(progress: KafkaConsumer, tp: TopicPartition) -> int | None:
        return progress.committed(tp)
