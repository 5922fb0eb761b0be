"""The sequence rule: event-time order, ties in arrival order, last N kept, replays skipped."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from features.store import UserSequence
from stream.sequences import already_applied, append_click, apply_click, bound_caches, build

clicks = st.lists(st.tuples(st.integers(1, 50), st.integers(0, 5), st.integers(0, 20)),
                  max_size=60)


@given(clicks, st.integers(1, 12))
def test_sequence_is_the_latest_n_in_event_time_order(events: list, n: int) -> None:
    seq = build(events, n)
    # Reference: stable sort by timestamp (arrival order breaks ties), keep the last n.
    ranked = sorted(enumerate(events), key=lambda pair: (pair[1][2], pair[0]))
    want = [e for _, e in ranked][-n:] if events else []
    assert list(zip(seq.item_ids, seq.cat_ids, seq.ts_ms, strict=True)) == want
    assert seq.ts_ms == sorted(seq.ts_ms)
    assert len(seq.ts_ms) <= n


@given(clicks, st.integers(1, 12))
def test_appending_one_at_a_time_equals_building(events: list, n: int) -> None:
    seq = UserSequence()
    for item, cat, ts in events:
        append_click(seq, item, cat, ts, n)
    assert seq == build(events, n)


@given(clicks, st.integers(1, 12), st.integers(0, 60))
def test_replaying_applied_offsets_changes_nothing(events: list, n: int, cut: int) -> None:
    once = UserSequence()
    for offset, (item, cat, ts) in enumerate(events):
        assert apply_click(once, item, cat, ts, 0, offset, n)
    again = UserSequence(list(once.item_ids), list(once.cat_ids), list(once.ts_ms),
                         once.last_partition, once.last_offset)
    # A restarted consumer re-reads from an older commit: every offset is skipped.
    for offset, (item, cat, ts) in list(enumerate(events))[min(cut, len(events)):]:
        assert already_applied(again, 0, offset)
        assert not apply_click(again, item, cat, ts, 0, offset, n)
    assert again == once


def test_a_late_click_older_than_a_full_sequence_is_trimmed_away_at_once() -> None:
    seq = build([(1, 1, 100), (2, 1, 200)], 2)
    assert apply_click(seq, 3, 1, 50, 0, 7, 2)
    assert seq.item_ids == [1, 2] and seq.last_offset == 7


@given(st.lists(st.integers(0, 60), min_size=1, max_size=6), st.integers(1, 200))
def test_bounded_caches_keep_their_latest_users_within_the_limit(sizes: list[int],
                                                                 limit: int) -> None:
    caches = [{1000 * c + u: UserSequence() for u in range(n)} for c, n in enumerate(sizes)]
    before = [list(cache) for cache in caches]
    dropped = bound_caches(caches, limit)
    total = sum(map(len, caches))
    assert dropped == sum(sizes) - total
    if sum(sizes) <= limit:
        assert dropped == 0
    else:  # down to 90% of the limit, and not much further (shares are rounded up)
        assert int(limit * 0.9) - len(sizes) <= total <= int(limit * 0.9)
    for cache, users in zip(caches, before, strict=True):
        assert list(cache) == users[len(users) - len(cache):]  # the latest ones stay
