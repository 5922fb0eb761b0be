"""Labelled training samples: the impression/click join of one partition, point in time.

Rules (docs/stream.md has the full story), applied per partition in offset order:

* ``watermark`` = the largest event time seen in the partition.
* An impression opens a join entry; its history is the user's sequence at that moment
  (before the event), cut to clicks with ``ts <= `` the impression's ts. It closes when the
  watermark passes ``deadline = max(ts, watermark at arrival) + window`` (a late impression
  still gets a whole window) and then becomes a negative sample.
* A click matches the oldest open impression with the same ``(request_id, item)``, else
  (when either side lacks a request id) the same ``(user, item)``: that impression becomes a
  positive sample. A click that matches nothing is a positive sample of its own, with the
  history before the click.
* Before each event, entries whose deadline the event's watermark passed are closed, oldest
  deadline first; an idle flush (no event for a window of wall time, partition caught up)
  closes the entries whose deadline is before the wall clock.

A sample's id is ``{partition}-{offset}`` of its impression (or lone click), so each source
event yields at most one sample; ``ahead`` holds ids a crashed run already emitted past the
restored state, and those are never emitted again.

Records of the samples topic and of the join-state changelog are compact JSON (msgspec)
compressed with zstd level 1 by :func:`pack` (the Kafka producer does not compress them
again: kafka-python's gzip always uses level 9, several ms a batch, and its zstd, done in
the sender thread, measured slower than this). zstd level 1 takes ~0.4 µs a sample where
gzip level 1, used before, took ~1.3 µs, and writes ~30% fewer bytes. :func:`unpack` also
reads gzip (records written before) and plain JSON.
"""

from __future__ import annotations

import gzip
import heapq
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import orjson
import zstandard

from features.store import UserSequence
from stream.events import Event, EventRow, EventType


class Sample(msgspec.Struct, gc=False):
    """One labelled training example, as written to the samples topic (JSON) and parquet.

    A msgspec Struct: built in C (a slotted dataclass's ``__init__`` is Python) and encoded
    natively by :func:`pack`; out of the cyclic GC (its lists hold ints and cannot close a
    cycle).
    """

    sample_id: str
    user_id: int
    item_id: int
    category_id: int
    label: int
    event_ts_ms: int
    hist_item_ids: list[int]
    hist_cat_ids: list[int]
    hist_ts_ms: list[int]
    source_partition: int
    source_offset: int
    request_id: str | None = None
    variant: str | None = None
    model_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return msgspec.structs.asdict(self)


_ENCODE = msgspec.json.Encoder().encode
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def pack(body: Any) -> bytes:
    """A record value: compact JSON, zstd level 1 (see the module docstring)."""
    # msgspec: compact JSON like json.dumps(separators=(",", ":")), Structs written as objects
    # with every field; non-ASCII as raw UTF-8 where json.dumps escapes it (any JSON reader
    # reads both). One Encoder serves every thread: msgspec keeps no state between calls and
    # holds the GIL throughout. zstandard.compress makes a compressor per call (one is not
    # safe to share between threads); that costs ~0.04 µs a sample at the records' size.
    return zstandard.compress(_ENCODE(body), 1)


RECORD_BYTES_MAX = 900 * 1024  # a packed record, at most: Kafka's default limit is 1 MB
_T = TypeVar("_T")


def packed_runs(items: Sequence[_T], pack_run: Callable[[Sequence[_T]], bytes], size: int
                ) -> Iterator[tuple[Sequence[_T], bytes]]:
    """``items`` in runs of at most ``size``, each with its record value (``pack_run``); a
    run whose value passes ``RECORD_BYTES_MAX`` is halved until it fits (long histories of
    incompressible ids: 250 samples of 1,000 clicks packed to ~3.9 MB, a send the broker
    refuses, replay after replay). A single item is sent as it is. The size is the packed
    value's own, so the usual run costs nothing more."""
    for start in range(0, len(items), size):
        todo = [items[start:start + size]]
        while todo:
            run = todo.pop()
            value = pack_run(run)
            if len(value) > RECORD_BYTES_MAX and len(run) > 1:
                half = len(run) // 2
                todo += [run[half:], run[:half]]  # the first half next: the order is kept
                continue
            yield run, value


def unpack(raw: bytes) -> Any:
    """The JSON body of a record written by :func:`pack` (gzip and plain JSON read too)."""
    if raw[:4] == _ZSTD_MAGIC:
        return orjson.loads(zstandard.decompress(raw))
    return orjson.loads(gzip.decompress(raw) if raw[:2] == _GZIP_MAGIC else raw)


def encode_batch(partition: int, samples: Sequence[Sample]) -> bytes:
    """One samples-topic record: the samples of one source partition's micro-batch."""
    return pack({"source_partition": partition, "samples": samples})


def decode_batch(raw: bytes) -> list[dict[str, Any]]:
    """The samples (as dicts) of one samples-topic record."""
    return list(unpack(raw)["samples"])


def sample_id(partition: int, offset: int) -> str:
    return f"{partition}-{offset}"


def history_before(seq_snapshot: tuple[list[int], list[int], list[int]], ts_ms: int
                   ) -> tuple[list[int], list[int], list[int]]:
    """The part of a sequence snapshot with event time ``<= ts_ms`` (a prefix: it is sorted)."""
    items, cats, stamps = seq_snapshot
    cut = bisect_right(stamps, ts_ms)
    return items[:cut], cats[:cut], stamps[:cut]


class Pending(msgspec.Struct, gc=False):
    """An open impression waiting for its click (a msgspec Struct, as :class:`Sample`)."""

    offset: int
    user_id: int
    item_id: int
    category_id: int
    ts_ms: int
    deadline_ms: int
    hist: tuple[list[int], list[int], list[int]]
    request_id: str | None = None
    variant: str | None = None
    model_version: str | None = None
    emitted: bool = False  # a crashed run already emitted its sample: resolve silently
    log_offset: int | None = None  # changelog offset of the record that added it

    def sample(self, partition: int, label: int) -> Sample:
        """The entry's sample (it shares the history lists: neither side changes them)."""
        items, cats, stamps = self.hist
        return Sample(sample_id(partition, self.offset), self.user_id, self.item_id,
                      self.category_id, label, self.ts_ms, items, cats, stamps, partition,
                      self.offset, self.request_id, self.variant, self.model_version)

    def to_json(self) -> list[object]:
        return [self.offset, self.user_id, self.item_id, self.category_id, self.ts_ms,
                self.deadline_ms, *self.hist, self.request_id, self.variant,
                self.model_version, self.emitted]

    @classmethod
    def from_json(cls, row: list, log_offset: int) -> Pending:
        o, u, i, c, t, d, hi, hc, ht, r, v, m, e = row
        return cls(o, u, i, c, t, d, (hi, hc, ht), r, v, m, e, log_offset)


def _index(index: dict[Any, list[int]], key: Any, offset: int) -> None:
    """Append ``offset`` to ``index[key]`` (``setdefault`` would build a list on every call)."""
    offsets = index.get(key)
    if offsets is None:
        index[key] = [offset]
    else:
        offsets.append(offset)


@dataclass
class JoinState:
    """The open impressions and watermark of one partition, plus changelog bookkeeping."""

    window_ms: int
    watermark_ms: int = -(2**62)
    upto: int = -1  # last source offset whose join effects are in this state
    emit_pos: int = 0  # samples-partition offset from which a restore looks for emitted ids
    dlq_pos: int = 0  # DLQ-partition offset from which a restore looks for dead letters
    dead_ahead: set[int] = field(default_factory=set)  # dead-lettered past ``upto`` (crash)
    unborn: bool = False  # no changelog record yet: written when installed (write_birth)
    pending: dict[int, Pending] = field(default_factory=dict)
    ahead: set[str] = field(default_factory=set)
    _by_req: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    _by_user: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    _heap: list[tuple[int, int]] = field(default_factory=list)
    # offsets opened since the last changelog record, in order (a dict: O(1) removal)
    added: dict[int, None] = field(default_factory=dict)
    done: list[int] = field(default_factory=list)

    # -- state changes ---------------------------------------------------------------------
    def add(self, entry: Pending) -> None:
        offset = entry.offset
        self.pending[offset] = entry
        if entry.request_id is not None:
            _index(self._by_req, (entry.request_id, entry.item_id), offset)
        _index(self._by_user, (entry.user_id, entry.item_id), offset)
        heapq.heappush(self._heap, (entry.deadline_ms, offset))

    def _resolve(self, offset: int) -> Pending:
        entry = self.pending.pop(offset)
        if entry.request_id is not None:
            self._by_req[(entry.request_id, entry.item_id)].remove(offset)
            if not self._by_req[(entry.request_id, entry.item_id)]:
                del self._by_req[(entry.request_id, entry.item_id)]
        key = (entry.user_id, entry.item_id)
        self._by_user[key].remove(offset)
        if not self._by_user[key]:
            del self._by_user[key]
        if entry.log_offset is None and offset in self.added:
            del self.added[offset]  # opened and closed between two changelog records
        else:
            self.done.append(offset)
        return entry

    def _close_until(self, partition: int, limit_ms: int) -> Iterator[Sample]:
        while self._heap and self._heap[0][0] < limit_ms:
            _, offset = heapq.heappop(self._heap)
            if offset in self.pending:
                entry = self._resolve(offset)
                if not entry.emitted:
                    yield entry.sample(partition, 0)

    def _match(self, event: Event | EventRow) -> int | None:
        if event.request_id is not None:
            hit = self._by_req.get((event.request_id, event.item_id))
            if hit:
                return hit[0]
        for offset in self._by_user.get((event.user_id, event.item_id), ()):
            other = self.pending[offset].request_id
            if event.request_id is None or other is None:
                return offset
        return None

    # -- the rule ----------------------------------------------------------------------------
    def dead_ahead_hit(self, offset: int) -> bool:
        """True (once) if a crashed run dead-lettered ``offset`` past ``upto``."""
        if offset in self.dead_ahead:
            self.dead_ahead.discard(offset)
            return True
        return False

    def _ahead_hit(self, partition: int, offset: int) -> bool:
        """True (once) if a crashed run emitted the sample of ``offset`` (``ahead`` is empty
        but after a crash: the id is only formatted then)."""
        if not self.ahead:
            return False
        sid = sample_id(partition, offset)
        if sid in self.ahead:
            self.ahead.discard(sid)
            return True
        return False

    def advance(self, offset: int) -> bool:
        """Mark ``offset`` handled; False if this state already covers it (a replay)."""
        if offset <= self.upto:
            return False
        self.upto = offset
        return True

    def on_event(self, partition: int, offset: int, event: Event | EventRow, seq: UserSequence,
                 before: tuple[list[int], list[int], list[int]] | None = None) -> list[Sample]:
        """Samples released by one valid event (``seq`` = the user's sequence before it)."""
        if not self.advance(offset):
            return []  # a replay of an event whose join effects the restored state holds
        ts = event.ts_ms
        wm_before = self.watermark_ms
        self.watermark_ms = max(self.watermark_ms, ts)
        out = (list(self._close_until(partition, self.watermark_ms))
               if self._heap and self._heap[0][0] < self.watermark_ms else [])
        if event.event_type is EventType.IMPRESSION:
            # a crashed run already labelled it: stay silent
            emitted = self._ahead_hit(partition, offset)
            # history_before slices: the snapshot is a copy, later clicks do not change it
            snap = (seq.item_ids, seq.cat_ids, seq.ts_ms)
            self.add(Pending(offset, event.user_id, event.item_id, event.category_id, ts,
                             max(ts, wm_before) + self.window_ms, history_before(snap, ts),
                             event.request_id, event.variant, event.model_version, emitted))
            self.added[offset] = None
            return out
        hit = self._match(event)
        if hit is not None:
            entry = self._resolve(hit)
            if entry.request_id is None:
                entry.request_id = event.request_id
            entry.variant = entry.variant or event.variant
            entry.model_version = entry.model_version or event.model_version
            if not entry.emitted:
                out.append(entry.sample(partition, 1))
        elif not self._ahead_hit(partition, offset):
            snap = before or (seq.item_ids, seq.cat_ids, seq.ts_ms)
            items, cats, stamps = history_before(snap, ts)
            out.append(Sample(sample_id(partition, offset), event.user_id, event.item_id,
                              event.category_id, 1, ts, items, cats, stamps, partition, offset,
                              event.request_id, event.variant, event.model_version))
        return out

    def mark_emitted(self, offset: int) -> None:
        """An open impression whose sample a crashed run emitted: keep it open, silently.

        It stays open so that its click still matches it (and does not become a lone click);
        it is re-logged (done + add) so the next changelog record carries the flag.
        """
        entry = self.pending[offset]
        entry.emitted = True
        if entry.log_offset is not None:
            self.done.append(offset)
            entry.log_offset = None
            self.added[offset] = None

    def flush(self, partition: int, now_ms: int) -> list[Sample]:
        """Idle flush: close entries whose deadline is before the wall clock ``now_ms``."""
        return list(self._close_until(partition, now_ms))
