"""Kafka side of the join: emit samples, write the join-state changelog, restore a partition.

Two topics per source partition ``p``:

* ``samples`` partition ``p % n``: one record per micro-batch and source partition, key ``p``,
  value ``{"source_partition": p, "samples": [Sample, ...]}`` (JSON, zstd level 1 by
  :func:`stream.samples.pack`; one record per batch rather than per sample: a Python
  producer pays ~30 µs per record).
* ``{samples}.joinstate`` partition ``p % n``: one record per micro-batch and partition, key
  ``p``, holding the delta of the open impressions (``add`` with their history snapshots,
  ``done`` offsets), the watermark, ``upto`` (last source offset covered), ``emit_pos`` (the
  samples offset after this batch's samples), ``ahead`` and ``restore_from`` (the changelog
  offset of the oldest record still holding an open impression; ``null`` = this record).

Dead letters go to DLQ partition ``p % n``; the record's ``dlq_pos`` is the DLQ offset up to
which letters of ``p`` are accounted for and ``dead_ahead`` the source offsets past ``upto``
already dead-lettered. A restore scans the DLQ from ``dlq_pos`` for this group's letters of
``p`` past ``upto`` (sent by a run that crashed before its changelog record) so that they are
not sent again.

The first assignment of ``p`` ever (no record yet) writes a first record holding the
current ends of the samples and DLQ partitions as ``emit_pos`` / ``dlq_pos``: what those
topics held before is never read by a restore, nor taken for this pipeline's output.

Per batch: dead letters and samples are flushed, then the changelog record, then Feast, then
the commit.
A restore reads the last changelog record of ``p`` and the records from its
``restore_from``; then the samples written after ``emit_pos`` by a run that crashed before
its changelog record: their ids are closed (if open) or remembered in ``ahead``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import TopicAlreadyExistsError

from stream import metrics
from stream.dlq import DeadLetter
from stream.failpoints import failpoint
from stream.kafka import make_consumer
from stream.samples import (
    RECORD_BYTES_MAX,
    JoinState,
    Pending,
    Sample,
    decode_batch,
    encode_batch,
    pack,
    packed_runs,
    unpack,
)
from stream.settings import StreamSettings
from stream.topicread import read_range, true_end

log = logging.getLogger(__name__)
CHUNK = 250  # samples or opened entries per record, at most (fewer: packed_runs)


def state_topic(settings: StreamSettings) -> str:
    """Name of the join-state changelog topic (derived from the samples topic)."""
    return f"{settings.kafka.topics.samples}.joinstate"


def _confirmed(futures: list[Any]) -> Any:
    """Wait for every send (``get`` raises on a failed one); the last one's metadata."""
    return [f.get() for f in futures][-1]


def ensure_state_topic(settings: StreamSettings) -> None:
    """Create the changelog topic (as many partitions as the events topic, retention
    ``changelog_retention_days``), if missing."""
    cfg = settings.kafka
    admin = KafkaAdminClient(client_id="recstream-joinstate", **cfg.common())
    try:
        if state_topic(settings) not in set(admin.list_topics()):
            with contextlib.suppress(TopicAlreadyExistsError):
                retention_ms = int(settings.changelog_retention_days * 86_400_000)
                admin.create_topics([NewTopic(
                    state_topic(settings), cfg.partitions, cfg.replication_factor,
                    topic_configs={"retention.ms": str(retention_ms)})])
    finally:
        admin.close()


class SampleLog:
    """Writes samples and changelog records with ``producer``; restores join state."""

    def __init__(self, settings: StreamSettings, producer: KafkaProducer) -> None:
        self.settings = settings
        self.producer = producer
        self.samples_topic = settings.kafka.topics.samples
        self.state_topic = state_topic(settings)
        ensure_state_topic(settings)
        self.n_samples = self._partitions(self.samples_topic)
        self.n_state = self._partitions(self.state_topic)
        self.dlq_topic = settings.kafka.topics.dlq
        self.n_dlq = self._partitions(self.dlq_topic)
        self.reader: KafkaConsumer = make_consumer(settings.kafka, None, client_id="joinstate")

    def _partitions(self, topic: str) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            parts = self.producer.partitions_for(topic)
            if parts:
                return len(parts)
            time.sleep(0.2)
        raise RuntimeError(f"topic {topic} has no partitions")

    # -- writing ---------------------------------------------------------------------------
    def dead_letter(self, dead: DeadLetter) -> Any:
        """Send one dead letter to DLQ partition ``source_partition % n`` (a restore of the
        source partition scans that one); return the send's future."""
        return self.producer.send(self.dlq_topic, key=dead.key, value=dead.value,
                                  headers=dead.headers(),
                                  partition=dead.source_partition % self.n_dlq)

    def confirm_dead(self, sent: dict[int, list[Any]], joins: dict[int, JoinState]) -> None:
        """Flush the batch's dead letters and wait for each (``get`` raises on a failed send);
        then each source partition's ``dlq_pos`` moves past its last letter."""
        self.producer.flush()
        for p, futures in sent.items():
            last = _confirmed(futures)
            if p in joins:
                joins[p].dlq_pos = last.offset + 1

    def emit(self, samples: list[Sample], joins: Mapping[int, JoinState]) -> None:
        """Send ``samples``, then the changelog of each partition of ``joins``; flush both."""
        by_part: dict[int, list[Sample]] = {}
        for s in samples:
            by_part.setdefault(s.source_partition, []).append(s)
        futures: dict[int, list[Any]] = {}
        for p, group in by_part.items():
            futures[p] = [self.producer.send(
                self.samples_topic, key=str(p).encode(), value=value, partition=p % self.n_samples)
                for _, value in packed_runs(group, partial(encode_batch, p), CHUNK)]
        if futures:
            self.producer.flush()
            # every send confirmed (get raises on a failed one): no sample is recorded as
            # emitted by the changelog unless the broker has it
            last = {p: _confirmed(sent) for p, sent in futures.items()}
            for group in by_part.values():
                positives = sum(s.label for s in group)
                metrics.SAMPLES.labels("1").inc(positives)
                metrics.SAMPLES.labels("0").inc(len(group) - positives)
            failpoint("after_samples")
        for p, join in joins.items():
            if p in futures:
                join.emit_pos = last[p].offset + 1
        parts = self._send_parts(joins)
        sent: dict[int, Any] = {}
        for p, join in joins.items():
            value = pack(self._state_record(p, join, parts.get(p, [])))
            if len(value) > RECORD_BYTES_MAX and join.added:  # long histories: all in parts
                parts[p] = parts.get(p, []) + self._send_parts({p: join}, keep=False).get(p, [])
                value = pack(self._state_record(p, join, parts[p]))
            sent[p] = self._send_packed(p, value)
        if sent:
            self.producer.flush()
            failpoint("after_changelog")
        for p, fut in sent.items():
            join = joins[p]
            offset = fut.get().offset
            for o in join.added:
                join.pending[o].log_offset = offset
            join.added, join.done = {}, []
            metrics.PENDING.labels(str(p)).set(len(join.pending))

    def flush_idle(self, idle: Mapping[int, JoinState]) -> None:
        """Close the windows of the idle partitions' join states
        (:meth:`stream.partitions.Partitions.idle`): their entries whose deadline is before
        the wall clock become samples, emitted with the partitions' changelog records."""
        samples: list[Sample] = []
        for partition, join in idle.items():
            samples.extend(join.flush(partition, int(time.time() * 1000)))
        if idle:
            self.emit(samples, idle)

    @staticmethod
    def _state_record(p: int, join: JoinState, parts: list[int]) -> dict[str, Any]:
        """The changelog record of ``p`` for the state of ``join`` (see module docstring)."""
        logged = [e.log_offset for e in join.pending.values() if e.log_offset is not None]
        return {
            "p": p, "upto": join.upto, "wm": join.watermark_ms, "emit_pos": join.emit_pos,
            "dlq_pos": join.dlq_pos, "dead_ahead": sorted(join.dead_ahead),
            "restore_from": min(logged) if logged else None, "ahead": sorted(join.ahead),
            "parts": parts, "add": [join.pending[o].to_json() for o in join.added],
            "done": join.done,
        }

    def _birth(self, p: int, join: JoinState) -> None:
        """First assignment of ``p`` ever: take the current ends of its samples and DLQ
        partitions, so that restores look for a crashed run's output only after them (and
        never read, or count as ours, what the topics held before this pipeline began). The
        record is written by :meth:`write_birth` when the consumer installs the state: the
        restore runs on its own thread, and its partition may meanwhile have gone to another
        member, whose records a late first record of ours would follow."""
        join.emit_pos = self._end(TopicPartition(self.samples_topic, p % self.n_samples))
        join.dlq_pos = self._end(TopicPartition(self.dlq_topic, p % self.n_dlq))
        join.unborn = True

    def write_birth(self, p: int, join: JoinState) -> None:
        """Write the first changelog record of ``p`` (see :meth:`_birth`), confirmed."""
        fut = self._send_state(p, self._state_record(p, join, []))
        self.producer.flush()
        fut.get()
        join.unborn = False
        log.info("partition %d: first assignment, changelog started", p)

    def _send_state(self, p: int, record: dict[str, Any]) -> Any:
        return self._send_packed(p, pack(record))

    def _send_packed(self, p: int, value: bytes) -> Any:
        return self.producer.send(self.state_topic, key=str(p).encode(),
                                  partition=p % self.n_state, value=value)

    def _send_parts(self, joins: Mapping[int, JoinState], keep: bool = True
                    ) -> dict[int, list[int]]:
        """Send the opened entries beyond the last ``CHUNK`` (all of them: ``keep=False``) as
        part records (keeps records within the broker's limit: :func:`packed_runs`).

        A part only counts once the final record of its batch lists it, so the parts of a
        batch that crashed before its final record are ignored by every later restore.
        """
        futures: dict[int, list[tuple[Any, list[int]]]] = {}
        for p, join in joins.items():
            if keep and len(join.added) <= CHUNK:
                continue
            opened = list(join.added)
            cut = len(opened) - (len(opened) % CHUNK or CHUNK if keep else 0)

            def part(run: Sequence[int], p: int = p, join: JoinState = join) -> bytes:
                return pack({"p": p, "part": True, "add": [join.pending[o].to_json() for o in run]})

            for run, value in packed_runs(opened[:cut], part, CHUNK):
                futures.setdefault(p, []).append((self._send_packed(p, value), list(run)))
            join.added = dict.fromkeys(opened[cut:])
        if not futures:
            return {}
        self.producer.flush()
        out: dict[int, list[int]] = {}
        for p, sent in futures.items():
            for fut, chunk in sent:
                offset = fut.get().offset
                out.setdefault(p, []).append(offset)
                for o in chunk:
                    joins[p].pending[o].log_offset = offset
        return out

    # -- restoring -------------------------------------------------------------------------
    def _read(self, tp: TopicPartition, start: int, end: int | None = None
              ) -> list[ConsumerRecord]:
        return read_range(self.reader, tp, start, end)

    def _end(self, tp: TopicPartition) -> int:
        return true_end(self.reader, tp)

    def _last_record(self, p: int) -> ConsumerRecord | None:
        tp = TopicPartition(self.state_topic, p % self.n_state)
        hi = self._end(tp)
        chunk = 64
        key = str(p).encode()
        while hi > 0:
            lo = max(0, hi - chunk)
            mine = [r for r in self._read(tp, lo, hi)
                    if r.key == key and not unpack(r.value).get("part")]
            if mine:
                return mine[-1]
            hi, chunk = lo, chunk * 4
        return None

    def _restore_dead(self, p: int, join: JoinState) -> None:
        """Remember the dead letters a run that crashed before its changelog record sent
        (letters of this group for ``p`` past ``upto``), and move ``dlq_pos`` past the scan
        so that the next record spares later restores the same scan."""
        tp = TopicPartition(self.dlq_topic, p % self.n_dlq)
        end = self._end(tp)
        events, group = self.settings.kafka.topics.events, self.settings.group_id
        for rec in self._read(tp, join.dlq_pos, end):
            letter = DeadLetter.of_record(rec)
            if letter is None:
                continue  # not a letter (a DLQ shared with other writers)
            if (letter.source_group == group and letter.source_topic == events
                    and letter.source_partition == p and letter.source_offset > join.upto):
                join.dead_ahead.add(letter.source_offset)
        join.dlq_pos = max(join.dlq_pos, end)

    def restore(self, p: int) -> JoinState:
        """The join state of partition ``p`` as the last run left it (see module docstring)."""
        join = JoinState(window_ms=int(self.settings.attribution_window_s * 1000))
        last = self._last_record(p)
        key = str(p).encode()
        if last is not None:
            head = unpack(last.value)
            start = head["restore_from"] if head["restore_from"] is not None else last.offset
            tp = TopicPartition(self.state_topic, p % self.n_state)
            entries: dict[int, Pending] = {}
            parts: dict[int, list] = {}
            for rec in self._read(tp, start, last.offset + 1):
                if rec.key != key:
                    continue
                body = unpack(rec.value)
                if body.get("part"):
                    parts[rec.offset] = body["add"]
                    continue
                for o in body["done"]:  # before "add": an entry can be re-added (re-logged)
                    entries.pop(o, None)
                rows = [(o, row) for o in body["parts"] for row in parts.get(o, [])]
                rows += [(rec.offset, row) for row in body["add"]]
                for log_offset, row in rows:
                    entries[row[0]] = Pending.from_json(row, log_offset)
            for entry in sorted(entries.values(), key=lambda e: e.offset):
                join.add(entry)
            join.upto, join.watermark_ms = head["upto"], head["wm"]
            join.emit_pos, join.ahead = head["emit_pos"], set(head["ahead"])
            join.dlq_pos = head.get("dlq_pos", 0)
            join.dead_ahead = {o for o in head.get("dead_ahead", []) if o > join.upto}
        else:
            self._birth(p, join)
        self._restore_dead(p, join)
        stp = TopicPartition(self.samples_topic, p % self.n_samples)
        emitted = [s["sample_id"] for r in self._read(stp, join.emit_pos)
                   if r.key == key for s in decode_batch(r.value)]
        for sid in emitted:
            offset = int(sid.split("-")[1])
            if offset in join.pending:
                join.mark_emitted(offset)
            elif offset > join.upto:
                join.ahead.add(sid)
        log.info("partition %d restored: %d open impressions, upto %d, %d ahead",
                 p, len(join.pending), join.upto, len(join.ahead))
        return join
