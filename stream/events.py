"""The event contract: the JSON that producers write to the ``events`` topic.

Every message on ``events`` is one :class:`Event`, serialised as UTF-8 JSON and keyed by
the user id (so one user's events stay ordered in one partition). ``schema_version``
lets the contract evolve: consumers reject versions they do not know (to the DLQ), so a
producer upgrade never silently corrupts features. See docs/events.md.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SCHEMA_VERSION = 1
MAX_EVENT_BYTES = 4096
MAX_FUTURE_SKEW = timedelta(minutes=5)

PositiveId = Annotated[int, Field(gt=0, lt=2**63)]


class EventType(StrEnum):
    """What the user did: saw an item (impression) or clicked it (click)."""

    IMPRESSION = "impression"
    CLICK = "click"


class Event(BaseModel):
    """One user interaction, version 1 of the wire contract."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=64)
    event_type: EventType
    user_id: PositiveId
    item_id: PositiveId
    category_id: Annotated[int, Field(ge=0, lt=2**63)]
    ts: datetime
    request_id: str | None = Field(default=None, max_length=64)
    variant: str | None = Field(default=None, max_length=64)
    model_version: str | None = Field(default=None, max_length=128)

    @field_validator("ts")
    @classmethod
    def _utc_and_not_future(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("ts must carry a timezone (UTC), e.g. 2026-11-22T10:00:00Z")
        value = value.astimezone(UTC)
        if value > datetime.now(UTC) + MAX_FUTURE_SKEW:
            raise ValueError(f"ts {value.isoformat()} is more than {MAX_FUTURE_SKEW} in the future")
        return value

    @property
    def ts_ms(self) -> int:
        """Event time in integer milliseconds since the epoch."""
        return int(self.ts.timestamp() * 1000)

    def key(self) -> bytes:
        """The Kafka message key: the user id, so a user's events share a partition."""
        return str(self.user_id).encode()

    def to_bytes(self) -> bytes:
        """The message value: compact UTF-8 JSON."""
        return self.model_dump_json(exclude_none=True).encode()


class InvalidEvent(ValueError):
    """A message that does not satisfy the contract; ``reason`` is a short machine label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def parse_event(raw: bytes | None) -> Event:
    """Validate one message value; raise :class:`InvalidEvent` with a reason label.

    Reasons: ``empty``, ``oversize``, ``not_json``, ``unknown_schema_version``,
    ``future_ts``, ``invalid_field``.
    """
    if not raw:
        raise InvalidEvent("empty", "message has no value")
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent("oversize", f"{len(raw)} bytes > {MAX_EVENT_BYTES}")
    try:
        return Event.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        kind = first.get("type", "")
        loc = ".".join(str(p) for p in first.get("loc", ()))
        if kind == "json_invalid" or kind == "model_type":
            raise InvalidEvent("not_json", "value is not a JSON object") from None
        if loc == "schema_version":
            raise InvalidEvent("unknown_schema_version", str(first.get("input"))) from None
        if loc == "ts" and "future" in str(first.get("msg", "")):
            raise InvalidEvent("future_ts", str(first.get("msg"))) from None
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        raise InvalidEvent("invalid_field", detail) from None
