"""Offline recomputation: what the sequences and samples must be, from the events topic.

Used by the crash tests and the benchmark to count ``lost`` and ``duplicated``. It reads the
events topic back in partition order and applies the rules of docs/stream.md in the plainest
way (lists and loops, no shared code with the online join), assuming the stream ends with an
idle flush that closes every open impression.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from kafka import TopicPartition

from stream.dlq import validate
from stream.events import MAX_FUTURE_SKEW_S, EventType, InvalidEvent
from stream.kafka import KafkaConfig, make_consumer
from stream.topicread import read_range


def read_topic(cfg: KafkaConfig, topic: str
               ) -> dict[int, list[tuple[int, bytes | None, bytes | None]]]:
    """Every record of ``topic`` as ``{partition: [(offset, key, value), ...]}``."""
    reader = make_consumer(cfg, None)
    try:
        parts = sorted(reader.partitions_for_topic(topic) or ())
        return {p: [(r.offset, r.key, r.value)
                    for r in read_range(reader, TopicPartition(topic, p), 0)] for p in parts}
    finally:
        reader.close()


@dataclass
class Expected:
    """Sequences by user (``(items, cats, ts)``) and samples by id (dicts)."""

    sequences: dict[int, tuple[list[int], list[int], list[int]]] = field(default_factory=dict)
    samples: dict[str, dict[str, Any]] = field(default_factory=dict)


def recompute(events: dict[int, list[tuple[int, bytes | None, bytes | None]]],
              max_history: int, window_s: float, max_future_skew_s: float = MAX_FUTURE_SKEW_S,
              dead: Collection[tuple[int, int]] = ()) -> Expected:
    """Apply the sequence and join rules to ``events`` (as returned by :func:`read_topic`).

    ``dead``: ``(partition, offset)`` of the records the pipeline dead-lettered. Their verdict
    stands (docs/stream.md) even where validation would pass them now (a timestamp that was
    in the future then); their events come back, if at all, as replayed records.
    """
    dead = set(dead)
    window = int(window_s * 1000)
    out = Expected()
    seqs: dict[int, list[tuple[int, int, int]]] = {}  # user -> [(ts, item, cat)], ts order
    for p, records in sorted(events.items()):
        wm = -(2**62)
        open_: list[dict[str, Any]] = []
        for offset, key, value in records:
            if (p, offset) in dead:
                continue
            try:
                ev = validate(key, value, max_future_skew_s)
            except InvalidEvent:
                continue
            ts, user = ev.ts_ms, ev.user_id
            wm_before, wm = wm, max(wm, ts)
            for entry in sorted((e for e in open_ if e["deadline"] < wm),
                                key=lambda e: (e["deadline"], e["source_offset"])):
                open_.remove(entry)
                out.samples[entry["sample_id"]] = {**entry, "label": 0}
            seq = seqs.setdefault(user, [])
            hist = [x for x in seq if x[0] <= ts]
            base = {"sample_id": f"{p}-{offset}", "user_id": user, "item_id": ev.item_id,
                    "category_id": ev.category_id, "event_ts_ms": ts,
                    "hist_item_ids": [x[1] for x in hist], "hist_cat_ids": [x[2] for x in hist],
                    "hist_ts_ms": [x[0] for x in hist], "source_partition": p,
                    "source_offset": offset, "request_id": ev.request_id,
                    "variant": ev.variant, "model_version": ev.model_version}
            if ev.event_type is EventType.IMPRESSION:
                open_.append({**base, "deadline": max(ts, wm_before) + window})
                continue
            match = [e for e in open_ if ev.request_id is not None
                     and e["request_id"] == ev.request_id and e["item_id"] == ev.item_id]
            if not match:
                match = [e for e in open_ if e["user_id"] == user and e["item_id"] == ev.item_id
                         and (ev.request_id is None or e["request_id"] is None)]
            if match:
                entry = match[0]
                open_.remove(entry)
                entry["request_id"] = entry["request_id"] or ev.request_id
                entry["variant"] = entry["variant"] or ev.variant
                entry["model_version"] = entry["model_version"] or ev.model_version
                out.samples[entry["sample_id"]] = {**entry, "label": 1}
            else:
                out.samples[f"{p}-{offset}"] = {**base, "label": 1}
            pos = sum(1 for x in seq if x[0] <= ts)
            seq.insert(pos, (ts, ev.item_id, ev.category_id))
            del seq[:max(0, len(seq) - max_history)]
        for entry in open_:
            out.samples[entry["sample_id"]] = {**entry, "label": 0}
    for entry in out.samples.values():
        entry.pop("deadline", None)
    out.sequences = {u: ([x[1] for x in s], [x[2] for x in s], [x[0] for x in s])
                     for u, s in seqs.items() if s}
    return out


def compare_samples(expected: dict[str, dict[str, Any]], emitted: list[dict[str, Any]]
                    ) -> tuple[int, int, int]:
    """``(lost, duplicated, wrong)``: missing ids, extra copies, and copies that differ."""
    counts = Counter(s["sample_id"] for s in emitted)
    lost = sum(1 for sid in expected if sid not in counts)
    duplicated = sum(n - 1 for n in counts.values() if n > 1)
    duplicated += sum(n for sid, n in counts.items() if sid not in expected)
    wrong = sum(1 for s in emitted if s["sample_id"] in expected
                and {k: s.get(k) for k in expected[s["sample_id"]]} != expected[s["sample_id"]])
    return lost, duplicated, wrong
