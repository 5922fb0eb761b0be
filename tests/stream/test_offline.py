"""Samples reach the offline store as parquet, each exactly once for readers."""

from __future__ import annotations

import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from stream.consumer import StreamConsumer
from stream.offline import SampleExporter, item_rows, read_samples, samples_dir
from stream.producer import events_from_frame, produce
from stream.recompute import read_topic, recompute
from stream.settings import StreamSettings
from stream.synthetic import SyntheticConfig, generate
from tests.stream.conftest import drain


def _stream_and_export(settings: StreamSettings, cfg: SyntheticConfig, n: int, tag: str
                       ) -> None:
    """Produce ``n`` synthetic impressions, run the pipeline over them, export once."""
    produce(events_from_frame(generate(n, cfg), id_prefix=tag), settings.kafka)
    consumer = StreamConsumer(settings)
    try:
        drain([consumer], settings)
    finally:
        consumer.close()
    exporter = SampleExporter(settings)
    try:
        assert exporter.export_once(timeout_ms=5000) > 0
    finally:
        exporter.close()


def test_exported_parquet_holds_every_sample_once(settings: StreamSettings) -> None:
    _stream_and_export(settings, SyntheticConfig(n_users=40), 600, "o")
    # A second exporter on the same group finds nothing new: the commit followed the write.
    again = SampleExporter(settings)
    try:
        assert again.export_once(timeout_ms=3000) == 0
    finally:
        again.close()
    frame = read_samples(samples_dir(settings))
    expected = recompute(read_topic(settings.kafka, settings.kafka.topics.events),
                         settings.max_history, settings.attribution_window_s).samples
    assert sorted(frame["sample_id"]) == sorted(expected)
    labels = dict(zip(frame["sample_id"], frame["label"], strict=True))
    assert labels == {sid: s["label"] for sid, s in expected.items()}
    assert str(frame["event_timestamp"].dt.tz) == "UTC"


def test_a_point_in_time_join_through_ranker_v1_returns_each_samples_history(
        settings: StreamSettings) -> None:
    """Feast's own offline store (the parquet parts the exporter writes) at each sample's
    event time gives back the history and category the sample carries."""
    from features.store import open_store

    _stream_and_export(settings, SyntheticConfig(n_users=30, seed=5), 400, "pit")
    samples = read_samples(samples_dir(settings))
    # A user with two samples at one instant has two rows there; Feast picks one of them.
    unique = samples.drop_duplicates(["user_id", "event_timestamp"], keep=False)
    assert len(unique) > 0.9 * len(samples)
    store = open_store(settings.feast)
    joined = store.get_historical_features(
        entity_df=unique[["user_id", "item_id", "event_timestamp"]],
        features=store.get_feature_service("ranker_v1")).to_df()
    assert len(joined) == len(unique)
    got = {(r.user_id, r.item_id, r.event_timestamp): (list(r.hist_item_ids),
                                                      list(r.hist_cat_ids), r.category_id)
           for r in joined.itertuples()}
    want = {(r.user_id, r.item_id, r.event_timestamp): (list(r.hist_item_ids),
                                                       list(r.hist_cat_ids), r.category_id)
            for r in unique.itertuples()}
    assert got == want


@given(st.lists(st.tuples(st.integers(1, 3), st.integers(0, 2)), min_size=1, max_size=40))
def test_item_rows_give_each_samples_category_as_of_its_time(
        seen: list[tuple[int, int]]) -> None:
    """Whatever the order of items and categories (one sample a second), the last item row at
    or before a sample's time holds that sample's category: what a point-in-time join reads."""
    samples = pd.DataFrame({"item_id": [i for i, _ in seen],
                            "category_id": [c for _, c in seen],
                            "event_timestamp": pd.to_datetime(range(len(seen)), unit="s",
                                                              utc=True)})
    rows = item_rows(samples.sample(frac=1.0, random_state=0))  # parts come in any order
    for item, cat, ts in samples.itertuples(index=False):
        known = rows[(rows["item_id"] == item) & (rows["event_timestamp"] <= ts)]
        assert known.sort_values("event_timestamp")["category_id"].iloc[-1] == cat
    assert len(rows) <= len(samples)
