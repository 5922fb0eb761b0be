"""The per-user behaviour sequence rule: append a click, keep event-time order, trim to N.

Pure functions over :class:`features.store.UserSequence`, shared by the consumer and by the
offline recomputation that tests and the benchmark compare against. The rule (also in
docs/stream.md):

* a click is inserted at its event-time position; among equal timestamps it goes after the
  ones already there (arrival order breaks ties), so a replay in partition order always
  builds the same list;
* the list keeps the ``max_history`` latest elements: a late click older than every element
  of a full list is inserted and trimmed away at once (it is still "applied");
* ``last_partition`` / ``last_offset`` record the Kafka position of the last applied click;
  a click at or below that position in the same partition is a replay and is skipped.

:func:`bound_caches` keeps the consumer's cache of sequences within ``max_cached_users``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import TypeVar

from features.store import UserSequence

V = TypeVar("V")


def already_applied(seq: UserSequence, partition: int, offset: int) -> bool:
    """True when the click at ``partition``/``offset`` is already part of ``seq``."""
    return seq.last_partition == partition and offset <= seq.last_offset


def append_click(
    seq: UserSequence, item_id: int, cat_id: int, ts_ms: int, max_history: int
) -> None:
    """Insert one click into ``seq`` in event-time order and trim to ``max_history``."""
    pos = bisect_right(seq.ts_ms, ts_ms)
    seq.item_ids.insert(pos, item_id)
    seq.cat_ids.insert(pos, cat_id)
    seq.ts_ms.insert(pos, ts_ms)
    extra = len(seq.ts_ms) - max_history
    if extra > 0:
        del seq.item_ids[:extra]
        del seq.cat_ids[:extra]
        del seq.ts_ms[:extra]


def apply_click(
    seq: UserSequence,
    item_id: int,
    cat_id: int,
    ts_ms: int,
    partition: int,
    offset: int,
    max_history: int,
) -> bool:
    """Apply a click at a Kafka position unless already applied; True if ``seq`` changed."""
    if already_applied(seq, partition, offset):
        return False
    append_click(seq, item_id, cat_id, ts_ms, max_history)
    seq.last_partition = partition
    seq.last_offset = offset
    return True


def snapshot(seq: UserSequence) -> tuple[list[int], list[int], list[int]]:
    """A copy of the sequence's three arrays (item ids, category ids, timestamps in ms)."""
    return list(seq.item_ids), list(seq.cat_ids), list(seq.ts_ms)


def build(clicks: Iterable[tuple[int, int, int]], max_history: int) -> UserSequence:
    """The sequence made by applying ``(item, category, ts_ms)`` clicks in arrival order."""
    seq = UserSequence()
    for item_id, cat_id, ts_ms in clicks:
        append_click(seq, item_id, cat_id, ts_ms, max_history)
    return seq


def bound_caches(caches: Sequence[dict[int, V]], limit: int) -> int:
    """Drop the first entries in insertion order when ``caches`` hold more than ``limit``
    together: down to 90% of it, so not at every call, from each cache in proportion to its
    size; return how many were dropped. (The consumer moves a batch's users to the end of
    their cache near the bound, so the first ones are those used longest ago.)

    Only safe where every cached sequence is also its row in the online store (the
    consumer calls it after a batch is written): a dropped user's next event reads it again.
    """
    total = sum(map(len, caches))
    if total <= limit:
        return 0
    drop = total - int(limit * 0.9)
    dropped = 0
    for cache in caches:
        share = min(len(cache), -(-drop * len(cache) // total))  # ceil: reach the target
        for user in list(islice(cache, share)):
            del cache[user]
        dropped += share
    return dropped
