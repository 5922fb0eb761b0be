"""Replay of dead letters: the rejected events that pass the contract now go back to their
source topic, each source event at most once, even across crashes of the replay.

Run: ``recstream dlq replay`` (``--dry-run`` lists what would go and sends nothing). Use it
after the cause of a rejection is gone: a producer's clock that ran ahead (``future_ts``),
a schema version this consumer did not know yet, a bug behind ``unexpected``. Every run
looks at every letter of this group on the DLQ; a letter is replayed only if it now passes
the same validation as the consumer applies (run it with the service's settings), so the
others stay on the DLQ and a later run, after another fix, can still replay them.

A replayed record is the letter's original key and value, sent to its source topic and
partition (so the user keeps their partition), with headers ``replay_of`` (``{dlq
partition}-{dlq offset}``), ``replay_source`` (``{source partition}-{source offset}``) and
``replay_group``. The consumer reads it as a new event at a new offset; since a dead letter
was never applied (its verdict stands, docs/dlq.md), the replay is the event's first and
only application.

Once only, with a crash at any point: a ledger topic (``{dlq}.replayed``, one partition,
kept forever) records, per group, each replayed source event and where its replay landed.
A chunk of sends is framed by an ``intent`` record (the source events and the events
topic's end offsets before the sends) and a ``closed`` one. A run that finds the last intent
open (a crash) first reads the events topic from those end offsets to its current end for
``replay_source`` headers of that intent, records what landed, and closes it. Two letters of
one source event (possible after a rebalance) are replayed once. A letter whose source is
itself a replay that the consumer rejected again (``bounced``: the replay ran with looser
settings than the service) is replayed like any other, once per such letter: every replay
of an event but the last was rejected, so the event is still applied at most once. One
replay runs at a time per group: its producer is transactional, with the id
``recstream-dlq-replay-{group}`` (:func:`transactional_id`), and every write is a transaction
of its own. A run's ``init_transactions`` fences off every earlier producer of that id: the
broker rejects their later writes, so a replay still running stops with
:class:`ReplayFenced` instead of sending what the newer run sends too (and a killed run's
bytes that arrive late are rejected). The fence comes before the newer run reads the ledger
and scans, so whatever the older run got written is seen there. Everything reads
``read_uncommitted``; the cluster must offer transactions. docs/dlq.md has the details.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import (
    InvalidProducerEpochError,
    KafkaError,
    KafkaTimeoutError,
    ProducerFencedError,
    TopicAlreadyExistsError,
)
from kafka.producer.future import FutureRecordMetadata, RecordMetadata

from stream.dlq import StoredLetter, read_letters, validate
from stream.events import InvalidEvent
from stream.failpoints import failpoint
from stream.kafka import make_consumer, make_producer
from stream.settings import StreamSettings
from stream.topicread import iter_range, read_range, true_end

log = logging.getLogger(__name__)
REPLAY_OF, REPLAY_SOURCE, REPLAY_GROUP = "replay_of", "replay_source", "replay_group"
CHUNK = 500  # letters sent under one intent
Pos = tuple[int, int]  # (partition, offset)


def ledger_topic(settings: StreamSettings) -> str:
    return f"{settings.kafka.topics.dlq}.replayed"


def transactional_id(settings: StreamSettings) -> str:
    """The transactional id of the replays of ``settings.group_id`` (one at a time)."""
    return f"recstream-dlq-replay-{settings.group_id}"


class ReplayError(RuntimeError):
    """A replay that cannot go on; the message says why (the CLI prints it)."""


class ReplayFenced(ReplayError):
    """A newer replay of the same group fenced this one off; this run wrote nothing more."""


_FENCED = (ProducerFencedError, InvalidProducerEpochError)


def _pos(text: str) -> Pos:
    p, o = text.split("-")
    return int(p), int(o)


@dataclass
class ReplayReport:
    """What one run did (or, with ``dry_run``, would do)."""

    replayed: list[StoredLetter] = field(default_factory=list)
    landed: list[Pos] = field(default_factory=list)  # where each replay went, in order
    already: int = 0  # source events replayed by an earlier run
    recovered: int = 0  # sent by a run that crashed before recording them: now recorded
    duplicates: int = 0  # a second letter of a source event this run already took
    bounced: int = 0  # of ``replayed``: replays that the consumer had rejected again
    still_invalid: Counter[str] = field(default_factory=Counter)  # by the reason now
    other: int = 0  # records of other groups or topics, and records that are not letters


@dataclass
class _Ledger:
    done: dict[Pos, Pos] = field(default_factory=dict)  # source event -> where it landed
    intent: dict[str, Any] | None = None  # the last intent, if it is still open


class Replayer:
    """Replays the dead letters of ``settings.group_id`` (see module docstring)."""

    def __init__(self, settings: StreamSettings) -> None:
        self.settings = settings
        self.cfg = settings.kafka
        self.group = settings.group_id
        self.source = self.cfg.topics.events
        self.ledger = TopicPartition(ledger_topic(settings), 0)

    def run(self, *, dry_run: bool = False) -> ReplayReport:
        """Replay what passes the contract now; return what was done. A dry run sends and
        records nothing (after a crash it may list letters the next run finds sent)."""
        exists = self._ledger_exists(create=not dry_run)
        reader = make_consumer(self.cfg, None, client_id="dlq-replay-reader")
        # Idempotence asked for explicitly: a retried send must not land twice, and a broker
        # that cannot promise it fails the run instead of silently switching it off. The
        # transactional id fences off any other replay of this group (module docstring).
        producer = None if dry_run else make_producer(
            self.cfg, acks="all", max_in_flight_requests_per_connection=1,
            enable_idempotence=True, transactional_id=transactional_id(self.settings))
        report = ReplayReport()
        try:
            if producer is not None:
                self._init_transactions(producer)
            ledger = _Ledger()
            if exists:
                end = (self._fence(producer) if producer is not None
                       else int(reader.end_offsets([self.ledger])[self.ledger]))
                ledger = self._read_ledger(reader, end)
            if ledger.intent is not None and producer is not None:
                report.recovered = self._recover(reader, producer, ledger)
            todo = self._sort(reader, ledger, report)
            for i in range(0, len(todo), CHUNK):
                if producer is not None:
                    report.landed += self._send_chunk(reader, producer, todo[i:i + CHUNK])
                report.replayed += todo[i:i + CHUNK]
            return report
        finally:
            if producer is not None:
                producer.close()
            reader.close()

    # -- the letters --------------------------------------------------------------------------
    def _sort(self, reader: KafkaConsumer, ledger: _Ledger, report: ReplayReport
              ) -> list[StoredLetter]:
        """The letters to send now, one per source event; the others counted in ``report``."""
        replays = set(ledger.done.values())
        taken: set[Pos] = set()
        todo: list[StoredLetter] = []
        self._tps(reader, self.cfg.topics.dlq)  # fails loudly when the DLQ topic is missing
        stored, report.other = read_letters(self.cfg, timeout_s=600)
        for x in stored:
            letter = x.letter
            if letter.source_group != self.group or letter.source_topic != self.source:
                report.other += 1
                continue
            src = (letter.source_partition, letter.source_offset)
            if src in ledger.done:
                report.already += 1
            elif src in taken:
                report.duplicates += 1
            else:
                try:
                    validate(letter.key, letter.value, self.settings.max_future_skew_s)
                except Exception as err:  # as the consumer: what it cannot read stays
                    reason = err.reason if isinstance(err, InvalidEvent) else "unexpected"
                    report.still_invalid[reason] += 1
                    continue
                taken.add(src)
                report.bounced += src in replays
                todo.append(x)
        return todo

    def _send_chunk(self, reader: KafkaConsumer, producer: KafkaProducer,
                    chunk: list[StoredLetter]) -> list[Pos]:
        """Intent, the sends (each confirmed), what landed where, closed; return the landings."""
        run = uuid.uuid4().hex
        src_tps = self._tps(reader, self.source)
        marks = {str(tp.partition): int(o) for tp, o in reader.end_offsets(src_tps).items()}
        sources = [f"{x.letter.source_partition}-{x.letter.source_offset}" for x in chunk]
        self._log(producer, "intent", {"state": "open", "run": run, "marks": marks,
                                       "sources": sources})
        failpoint("replay_after_intent")
        landed = [(m.partition, m.offset) for m in self._transaction(producer, lambda: [
            producer.send(self.source, key=x.letter.key, value=x.letter.value,
                          partition=x.letter.source_partition,
                          headers=[(REPLAY_OF, f"{x.partition}-{x.offset}".encode()),
                                   (REPLAY_SOURCE, src.encode()),
                                   (REPLAY_GROUP, self.group.encode())])
            for x, src in zip(chunk, sources, strict=True)])]
        failpoint("replay_after_send")
        self._record(producer, dict(zip(map(_pos, sources), landed, strict=True)), run)
        return landed

    # -- the ledger ---------------------------------------------------------------------------
    def _record(self, producer: KafkaProducer, done: dict[Pos, Pos], run: str) -> None:
        """Record each source event's landing, then close the intent ``run``."""
        # Raises on a failed write: the intent stays open, the next run's recovery redoes it.
        self._transaction(producer, lambda: [
            self._send_log(producer, f"{p}-{o}", {"to": list(to)}) for (p, o), to in done.items()])
        failpoint("replay_after_done")
        self._log(producer, "intent", {"state": "closed", "run": run})

    def _recover(self, reader: KafkaConsumer, producer: KafkaProducer, ledger: _Ledger) -> int:
        """Record what an open intent's sends left on the events topic; close it."""
        intent = ledger.intent or {}
        wanted = set(intent["sources"])
        parts = {_pos(src)[0] for src in wanted}  # a replay goes to its source's partition
        found: dict[Pos, Pos] = {}
        for part, mark in intent["marks"].items():
            if int(part) not in parts:
                continue
            tp = TopicPartition(self.source, int(part))
            if int(reader.beginning_offsets([tp])[tp]) > int(mark):
                # retention deleted records past the mark: what cannot be checked counts as
                # sent (at most once: an event not replayed rather than one replayed twice)
                log.warning("replay recovery: %s lost records past its mark to retention; "
                            "the open intent's events of it count as replayed", tp)
                found.update({_pos(src): (-1, -1) for src in wanted
                              if _pos(src)[0] == tp.partition})
                continue
            for rec in iter_range(reader, tp, int(mark), true_end(reader, tp)):
                h = dict(rec.headers or ())
                src = h.get(REPLAY_SOURCE, b"").decode()
                if h.get(REPLAY_GROUP) == self.group.encode() and src in wanted:
                    found[_pos(src)] = (tp.partition, rec.offset)
        self._record(producer, found, intent["run"])
        ledger.done.update(found)
        ledger.intent = None
        return len(found)

    def _transaction(self, producer: KafkaProducer,
                     sends: Callable[[], list[FutureRecordMetadata]]) -> list[RecordMetadata]:
        """Make the sends in one transaction and commit it; where each landed (every send
        confirmed). :class:`ReplayFenced` when a newer replay of this group fenced this one."""
        try:
            producer.begin_transaction()
            futures = sends()
            producer.flush()
            landed = [f.get() for f in futures]
            producer.commit_transaction()
        except KafkaError as err:
            # A fence shows as ProducerFencedError on a send, the commit or adding a
            # partition to the transaction (Tansu, and Kafka between transactions), as
            # InvalidProducerEpochError on a send of a transaction the fence aborted (Kafka),
            # and, on any later transactional call, as a KafkaError naming the first.
            if isinstance(err, _FENCED) or any(e.__name__ in str(err) for e in _FENCED):
                raise ReplayFenced(
                    f"this replay of group {self.group!r} was fenced off: another replay of "
                    "the group started after it (or this run's transaction outlived "
                    "transaction_timeout_ms); this run stopped") from err
            with contextlib.suppress(KafkaError):  # else it stays open until its timeout,
                producer.abort_transaction()  # holding read_committed readers back
            raise
        return landed

    def _init_transactions(self, producer: KafkaProducer) -> None:
        """Take the replay's transactional id, fencing off older holders (module docstring)."""
        try:
            producer.init_transactions()
        except KafkaTimeoutError as err:
            raise ReplayError(
                f"the broker did not set up transactions for {transactional_id(self.settings)}"
                " in time: the replay needs them. On a cluster of fewer than 3 brokers, set "
                "transaction.state.log.replication.factor and transaction.state.log.min.isr "
                "to what it has") from err

    def _send_log(self, producer: KafkaProducer, key: str, value: dict[str, Any]
                  ) -> FutureRecordMetadata:
        return producer.send(self.ledger.topic, key=f"{self.group}|{key}".encode(),
                             value=json.dumps(value).encode(), partition=0)

    def _log(self, producer: KafkaProducer, key: str, value: dict[str, Any]) -> RecordMetadata:
        """Write one ledger record (its own transaction); where it landed."""
        return self._transaction(producer, lambda: [self._send_log(producer, key, value)])[0]

    def _fence(self, producer: KafkaProducer) -> int:
        """Write a fence record to the ledger; the offset after it, up to which a read of the
        ledger is then complete (an end from ListOffsets can lag, and an empty poll proves
        nothing before the first fetch has answered)."""
        return int(self._log(producer, "fence", {}).offset) + 1

    def _read_ledger(self, reader: KafkaConsumer, end: int) -> _Ledger:
        ledger = _Ledger()
        for rec in read_range(reader, self.ledger, 0, end, timeout_s=600):
            group, _, key = (rec.key or b"").decode().rpartition("|")  # a group may hold "|"
            if group != self.group:
                continue
            value = json.loads(rec.value)
            if key == "fence":
                continue
            if key == "intent":
                ledger.intent = value if value["state"] == "open" else None
            else:
                ledger.done[_pos(key)] = (int(value["to"][0]), int(value["to"][1]))
        return ledger

    def _ledger_exists(self, create: bool) -> bool:
        """Whether the ledger topic held anything before (asked of the broker, not of a
        client's metadata cache); with ``create``, create it (kept forever) if missing."""
        admin = KafkaAdminClient(client_id="recstream-dlq-replay", **self.cfg.common())
        try:
            if self.ledger.topic in set(admin.list_topics()):
                return True
            if create:
                try:
                    admin.create_topics([NewTopic(self.ledger.topic, 1,
                                                  self.cfg.replication_factor,
                                                  topic_configs={"retention.ms": "-1"})])
                except TopicAlreadyExistsError:
                    return True  # made a moment ago (a run just before): read it
            return False
        finally:
            admin.close()

    @staticmethod
    def _tps(reader: KafkaConsumer, topic: str) -> list[TopicPartition]:
        parts = reader.partitions_for_topic(topic)
        if not parts:
            raise RuntimeError(f"topic {topic} has no partitions (is the broker up?)")
        return [TopicPartition(topic, p) for p in sorted(parts)]
