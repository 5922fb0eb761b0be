"""The event contract: what is valid, what is rejected and with which reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.events import MAX_EVENT_BYTES, Event, EventType, InvalidEvent, parse_event

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def valid(**over: object) -> dict:
    body = {"schema_version": 1, "event_id": "e1", "event_type": "click", "user_id": 7,
            "item_id": 42, "category_id": 3, "ts": "2026-01-01T00:00:00Z"}
    body.update(over)
    return body


def raw(body: dict) -> bytes:
    return json.dumps(body).encode()


def test_valid_event_round_trips() -> None:
    ev = parse_event(raw(valid(request_id="r1", variant="din_a", model_version="v3")))
    assert ev.event_type is EventType.CLICK
    assert ev.ts == NOW and ev.ts.tzinfo is not None
    assert ev.key() == b"7"
    assert parse_event(ev.to_bytes()) == ev
    assert ev.ts_ms == int(NOW.timestamp() * 1000)


def test_timestamps_are_normalised_to_utc() -> None:
    ev = parse_event(raw(valid(ts="2026-01-01T02:00:00+02:00")))
    assert ev.ts == NOW and ev.ts.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "empty"),
        (None, "empty"),
        (b"not json {", "not_json"),
        (b"[1, 2]", "not_json"),
        (b"\xff\xfe", "not_json"),
        (raw(valid(schema_version=2)), "unknown_schema_version"),
        (raw(valid(user_id=-1)), "invalid_field"),
        (raw(valid(item_id=0)), "invalid_field"),
        (raw(valid(category_id=-3)), "invalid_field"),
        (raw(valid(user_id="seven")), "invalid_field"),
        (raw(valid(event_type="purchase")), "invalid_field"),
        (raw(valid(ts="2026-01-01T00:00:00")), "invalid_field"),
        (raw(valid(ts="yesterday")), "invalid_field"),
        (raw({k: v for k, v in valid().items() if k != "item_id"}), "invalid_field"),
        (raw(valid(extra_field=1)), "invalid_field"),
        (raw(valid(user_id=2**63)), "invalid_field"),
        (raw(valid(ts=(datetime.now(UTC) + timedelta(days=1)).isoformat())), "future_ts"),
        (raw(valid(request_id="x" * (MAX_EVENT_BYTES + 1))), "oversize"),
    ],
)
def test_invalid_messages_are_rejected_with_a_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_event(value)
    assert info.value.reason == reason
    assert info.value.detail


@given(
    user=st.integers(1, 2**63 - 1),
    item=st.integers(1, 2**63 - 1),
    cat=st.integers(0, 2**63 - 1),
    kind=st.sampled_from(list(EventType)),
    ts=st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2026, 1, 1),
                    timezones=st.just(UTC)),
)
def test_any_valid_event_survives_the_wire(user: int, item: int, cat: int, kind: EventType,
                                           ts: datetime) -> None:
    ev = Event(event_type=kind, user_id=user, item_id=item, category_id=cat, ts=ts)
    assert parse_event(ev.to_bytes()) == ev


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_parser(blob: bytes) -> None:
    try:
        parse_event(blob)
    except InvalidEvent as exc:
        assert exc.reason in {"empty", "oversize", "not_json", "unknown_schema_version",
                              "future_ts", "invalid_field"}
