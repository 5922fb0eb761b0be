"""The impression/click join of one partition against the plain offline recomputation."""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

import stream.samples as samples_mod
from features.store import UserSequence
from stream.events import Event, EventType
from stream.recompute import recompute
from stream.samples import JoinState, Sample, decode_batch, encode_batch, packed_runs
from stream.sequences import apply_click, snapshot

T0 = datetime(2024, 1, 1, tzinfo=UTC)
WINDOW_S = 5.0

event_specs = st.lists(
    st.tuples(
        st.sampled_from([EventType.IMPRESSION, EventType.CLICK]),
        st.integers(1, 3),                       # user
        st.integers(1, 4),                       # item
        st.integers(-3000, 4000),                # time step (ms), negative = out of order
        st.sampled_from([None, "r1", "r2", "r3"]),
    ),
    max_size=80,
)


def build_events(specs: list) -> list[Event]:
    ts, out = T0, []
    for n, (kind, user, item, step, req) in enumerate(specs):
        ts = ts + timedelta(milliseconds=step)
        out.append(Event(event_id=f"e{n}", event_type=kind, user_id=user, item_id=item,
                         category_id=item % 3, ts=ts, request_id=req))
    return out


def run_join(events: list[Event], max_history: int) -> list[Sample]:
    join = JoinState(window_ms=int(WINDOW_S * 1000))
    seqs: dict[int, UserSequence] = {}
    out: list[Sample] = []
    for offset, ev in enumerate(events):
        seq = seqs.setdefault(ev.user_id, UserSequence())
        out.extend(join.on_event(0, offset, ev, seq, snapshot(seq)))
        if ev.event_type is EventType.CLICK:
            apply_click(seq, ev.item_id, ev.category_id, ev.ts_ms, 0, offset, max_history)
    out.extend(join.flush(0, 2**62))
    return out


@settings(max_examples=150)
@given(event_specs, st.integers(1, 6))
def test_join_equals_the_offline_recomputation(specs: list, max_history: int) -> None:
    events = build_events(specs)
    got = {s.sample_id: s.to_dict() for s in run_join(events, max_history)}
    records = [(o, ev.key(), ev.to_bytes()) for o, ev in enumerate(events)]
    want = recompute({0: records}, max_history, WINDOW_S).samples
    assert got == want


@settings(max_examples=150)
@given(event_specs, st.integers(1, 6))
def test_every_event_is_labelled_once_and_history_is_point_in_time(
    specs: list, max_history: int
) -> None:
    events = build_events(specs)
    samples = run_join(events, max_history)
    ids = [s.sample_id for s in samples]
    assert len(ids) == len(set(ids))
    impressions = {f"0-{o}" for o, ev in enumerate(events)
                   if ev.event_type is EventType.IMPRESSION}
    assert impressions <= set(ids)  # every impression becomes exactly one sample
    n_clicks = sum(ev.event_type is EventType.CLICK for ev in events)
    positives_of_impressions = sum(s.label for s in samples if s.sample_id in impressions)
    lone_clicks = len(samples) - len(impressions)
    assert positives_of_impressions + lone_clicks == n_clicks
    for s in samples:
        source = events[s.source_offset]
        clicks_before = [(ev.item_id, ev.ts_ms) for ev in events[: s.source_offset]
                         if ev.event_type is EventType.CLICK and ev.user_id == s.user_id]
        assert all(t <= s.event_ts_ms for t in s.hist_ts_ms)  # nothing later in event time
        assert len(s.hist_ts_ms) <= max_history
        # Every history element is a click at an earlier offset, never the event itself.
        for pair in zip(s.hist_item_ids, s.hist_ts_ms, strict=True):
            assert pair in clicks_before
        assert s.event_ts_ms == source.ts_ms


def test_click_within_window_is_positive_and_silent_impression_negative() -> None:
    imp = [Event(event_type=EventType.IMPRESSION, user_id=1, item_id=i, category_id=0,
                 ts=T0, request_id="r") for i in (1, 2)]
    click = Event(event_type=EventType.CLICK, user_id=1, item_id=2, category_id=0,
                  ts=T0 + timedelta(seconds=1), request_id="r")
    late = Event(event_type=EventType.CLICK, user_id=1, item_id=1, category_id=0,
                 ts=T0 + timedelta(seconds=WINDOW_S + 2), request_id="r")
    samples = {s.sample_id: s for s in run_join([*imp, click, late], 5)}
    assert samples["0-1"].label == 1 and samples["0-1"].hist_item_ids == []
    assert samples["0-0"].label == 0  # its click came after the window closed
    assert samples["0-3"].label == 1 and samples["0-3"].hist_item_ids == [2]


def test_sample_records_are_zstd_json_and_gzip_and_plain_json_still_read() -> None:
    sample = Sample("0-4", 1, 2, 3, 1, 1000, [5], [6], [900], 0, 4, "r", None, None)
    raw = encode_batch(0, [sample])
    assert raw[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame
    assert decode_batch(raw) == [sample.to_dict()]
    plain = json.dumps({"source_partition": 0, "samples": [sample.to_dict()]}).encode()
    assert decode_batch(plain) == [sample.to_dict()]
    assert decode_batch(gzip.compress(plain)) == [sample.to_dict()]  # records of before


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=400), max_size=60),
       st.integers(min_value=1, max_value=9), st.integers(min_value=1, max_value=900))
def test_packed_runs_keep_the_order_and_each_record_within_the_limit(
    sizes: list[int], size: int, limit: int
) -> None:
    """Items of any packed size, any run length and any limit: the runs hold every item once
    in order, at most ``size`` each, and every record is within the limit unless it holds a
    single item (sent as it is)."""
    def pack_run(run: Sequence[int]) -> bytes:
        return b"x" * sum(run)

    original = samples_mod.RECORD_BYTES_MAX
    samples_mod.RECORD_BYTES_MAX = limit
    try:
        runs = list(packed_runs(sizes, pack_run, size))
    finally:
        samples_mod.RECORD_BYTES_MAX = original
    assert [x for run, _ in runs for x in run] == sizes
    assert all(0 < len(run) <= size for run, _ in runs)
    assert all(len(value) <= limit or len(run) == 1 for run, value in runs)
