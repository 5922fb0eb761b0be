"""Frames become contract events; the synthetic world is deterministic and learnable."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.producer.future import FutureRecordMetadata

from stream.events import EventType, parse_event
from stream.kafka import KafkaConfig, make_producer
from stream.producer import ProduceError, events_from_frame, produce
from stream.synthetic import SyntheticConfig, category_of, generate
from tests.stream.conftest import failed_send


def test_each_row_is_an_impression_and_each_positive_also_a_click() -> None:
    frame = generate(300, SyntheticConfig(n_users=20))
    events = list(events_from_frame(frame, id_prefix="t"))
    imps = [e for e in events if e.event_type is EventType.IMPRESSION]
    clicks = [e for e in events if e.event_type is EventType.CLICK]
    assert len(imps) == len(frame) and len(clicks) == int(frame.label.sum())
    for click in clicks:
        row = int(click.event_id.split("-")[1])
        assert click.item_id == frame.item_id.iloc[row]
        assert click.request_id == f"t-{row}" and click.ts > imps[row].ts
    assert all(parse_event(e.to_bytes()) == e for e in events[:50])
    assert len({e.event_id for e in events}) == len(events)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 400))
def test_synthetic_world_is_deterministic_and_consistent(seed: int, n: int) -> None:
    cfg = SyntheticConfig(n_users=30, seed=seed)
    a, b = generate(n, cfg), generate(n, cfg)
    assert a.equals(b)
    assert (a.category_id == category_of(a.item_id.to_numpy(), cfg)).all()
    assert a.ts.is_monotonic_increasing
    assert ((a.p_click > 0) & (a.p_click < 1)).all()
    assert set(a.label.unique()) <= {0, 1}


def test_truth_separates_clicks_from_non_clicks() -> None:
    frame = generate(20_000)
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(frame.label, frame.p_click)
    assert auc > 0.7  # the planted signal is strong enough to learn
    assert 0.05 < frame.label.mean() < 0.6
    assert np.isclose(frame.label.mean(), frame.p_click.mean(), atol=0.02)


def test_unacknowledged_sends_raise_instead_of_passing_silently(
    kafka_cfg: KafkaConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every third send fails as an unacknowledged one: produce reports how many."""
    events = list(events_from_frame(generate(30, SyntheticConfig(n_users=5)), id_prefix="f"))
    producer = make_producer(kafka_cfg)
    real_send = producer.send
    calls = [0]

    def send(topic: str, **kw: object) -> FutureRecordMetadata:
        calls[0] += 1
        if calls[0] % 3:
            return real_send(topic, **kw)  # type: ignore[arg-type]
        return failed_send(topic)

    monkeypatch.setattr(producer, "send", send)
    try:
        with pytest.raises(ProduceError, match=f"{len(events) // 3} of {len(events)} events"):
            produce(events, kafka_cfg, producer=producer)
    finally:
        producer.close()
