"""Turn an events frame into contract events and write them to Kafka at a given rate.

An events frame has columns ``user_id, item_id, category_id, ts, label`` in time order
(the synthetic generator and the MovieLens reader both make one). Each row becomes an
impression; a row with ``label == 1`` is also followed by a click on the same request.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta

import pandas as pd
from kafka import KafkaProducer

from stream.events import Event, EventType
from stream.kafka import KafkaConfig, make_producer


def events_from_frame(
    frame: pd.DataFrame,
    *,
    live: bool = False,
    click_delay: timedelta = timedelta(seconds=1),
    id_prefix: str = "ev",
) -> Iterator[Event]:
    """Contract events of ``frame``: an impression per row, a click after each positive.

    With ``live`` the events are stamped with the wall clock as they are generated (for a
    demo that streams "now"); otherwise with the frame's ``ts`` (a historical replay).
    Event ids are ``{id_prefix}-{row}-imp`` / ``-clk``, so a replay is recognisable.
    """
    cols = [frame[c].to_numpy() for c in ("user_id", "item_id", "category_id", "ts", "label")]
    for row, (user, item, cat, ts, label) in enumerate(zip(*cols, strict=True)):
        stamp = datetime.now(UTC) if live else datetime.fromtimestamp(int(ts), UTC)
        common = {
            "user_id": int(user),
            "item_id": int(item),
            "category_id": int(cat),
            "request_id": f"{id_prefix}-{row}",
        }
        yield Event(event_id=f"{id_prefix}-{row}-imp", event_type=EventType.IMPRESSION,
                    ts=stamp, **common)
        if int(label) == 1:
            click_ts = datetime.now(UTC) if live else stamp + click_delay
            yield Event(event_id=f"{id_prefix}-{row}-clk", event_type=EventType.CLICK,
                        ts=click_ts, **common)


class ProduceError(RuntimeError):
    """Some events were not acknowledged by the broker."""


def produce(
    events: Iterable[Event],
    cfg: KafkaConfig,
    *,
    rate: float | None = None,
    producer: KafkaProducer | None = None,
    on_sent: Callable[[int], None] | None = None,
) -> int:
    """Send ``events`` to the events topic, at most ``rate`` per second; return the count.

    Keyed by user id. Blocks until every message is acknowledged (flush) before returning;
    raises :class:`ProduceError` if any send failed (the broker does not have those events).
    """
    own = producer is None
    prod = producer or make_producer(cfg)
    sent = 0
    failed: list[BaseException] = []
    start = time.perf_counter()
    try:
        for event in events:
            if rate:
                ahead = start + sent / rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
            prod.send(cfg.topics.events, key=event.key(),
                      value=event.to_bytes()).add_errback(failed.append)
            sent += 1
            if on_sent is not None and sent % 500 == 0:
                on_sent(sent)
        prod.flush()
        if failed:
            raise ProduceError(f"{len(failed)} of {sent} events were not acknowledged by the "
                               f"broker (first error: {failed[0]!r})")
        if on_sent is not None:
            on_sent(sent)
    finally:
        if own:
            prod.close()
    return sent
