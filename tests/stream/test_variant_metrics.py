"""The consumer counts the valid impressions and clicks of each A/B variant (the online side
of the A/B test: per-variant counters, the SRM alert in infra/prometheus/stream_rules.yml), and
keeps the client-given variant names few."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from stream import metrics
from stream.events import Event, EventType
from stream.kafka import make_producer
from stream.settings import StreamSettings

from .conftest import run_to_end


def _count(variant: str, event_type: str) -> float:
    value = REGISTRY.get_sample_value("recstream_stream_variant_events_total",
                                      {"variant": variant, "event_type": event_type})
    return value or 0.0


def test_the_consumer_counts_events_by_variant(settings: StreamSettings) -> None:
    t0 = datetime.now(UTC) - timedelta(minutes=1)
    before = {(v, t): _count(v, t) for v in ("vA", "vB") for t in ("impression", "click")}
    producer = make_producer(settings.kafka)
    sent = {("vA", "impression"): 0, ("vA", "click"): 0, ("vB", "impression"): 0}
    for n in range(30):
        variant = "vA" if n % 3 else "vB"
        kinds = [EventType.IMPRESSION] + ([EventType.CLICK] if variant == "vA" and n % 2 else [])
        for kind in kinds:
            ev = Event(event_id=f"e{n}-{kind.value}", event_type=kind, user_id=1 + n % 5,
                       item_id=100 + n, category_id=1, ts=t0 + timedelta(seconds=n),
                       request_id=f"r{n}", variant=variant, model_version="m1")
            producer.send(settings.kafka.topics.events, key=ev.key(), value=ev.to_bytes())
            sent[(variant, kind.value)] += 1
    bare = Event(event_id="bare", event_type=EventType.IMPRESSION, user_id=1, item_id=1,
                 category_id=1, ts=t0)  # no variant: not counted
    producer.send(settings.kafka.topics.events, key=bare.key(), value=bare.to_bytes())
    producer.flush()
    producer.close()
    run_to_end(settings, "variants")
    for key, n in sent.items():
        assert _count(*key) - before[key] == n, key
    assert _count("vB", "click") == before[("vB", "click")]


def test_variant_names_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_variants", set())
    other = _count("other", "click")
    for n in range(metrics.MAX_VARIANTS + 5):
        metrics.count_variant(f"flood-{n}", "click", 1)
    assert _count("other", "click") - other == 5
    assert _count(f"flood-{metrics.MAX_VARIANTS - 1}", "click") >= 1
