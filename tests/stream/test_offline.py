"""Samples reach the offline store as parquet, each exactly once for readers."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.errors import KafkaTimeoutError
from prometheus_client import REGISTRY

from features import definitions
from stream import offline
from stream.consumer import StreamConsumer
from stream.kafka import make_producer
from stream.offline import SampleExporter, item_rows, read_samples, samples_dir
from stream.producer import events_from_frame, produce
from stream.recompute import read_topic, recompute
from stream.samples import Sample, encode_batch, sample_id
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


def _send_records(settings: StreamSettings, first: int, n: int, per_record: int = 10
                  ) -> set[str]:
    """``n`` samples-topic records of ``per_record`` samples each (source partition 0); the
    ids sent."""
    producer = make_producer(settings.kafka)
    sent: set[str] = set()
    try:
        for r in range(first, first + n):
            group = [Sample(sample_id(0, r * per_record + i), 1, 2, 3, i % 2,
                            1_700_000_000_000 + r * per_record + i, [5], [6],
                            [1_600_000_000_000], 0, r * per_record + i)
                     for i in range(per_record)]
            producer.send(settings.kafka.topics.samples, key=b"0", value=encode_batch(0, group))
            sent.update(s.sample_id for s in group)
        producer.flush()
    finally:
        producer.close()
    return sent


def test_an_export_stops_at_its_bound_and_the_next_ones_catch_up(
        settings: StreamSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """More samples than one export takes (it used to read until a poll came back empty,
    which steady traffic never gives): each export writes at most its bound (plus the rest of
    its last poll), and the following ones write the rest, every sample once."""
    sent = _send_records(settings, 0, 60)  # 600 samples
    monkeypatch.setattr(offline, "POLL_RECORDS", 5)  # 50 samples a poll
    exporter = SampleExporter(settings)
    sizes = []
    try:
        while written := exporter.export_once(timeout_ms=5000, max_samples=100):
            sizes.append(written)
    finally:
        exporter.close()
    assert sum(sizes) == 600 and max(sizes) <= 150 and len(sizes) >= 4, sizes
    frame = read_samples(samples_dir(settings))
    assert sorted(frame["sample_id"]) == sorted(sent)


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_a_failed_export_is_counted_and_rewound_so_nothing_is_skipped(
        settings: StreamSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    sent = _send_records(settings, 0, 3)
    real_write = offline._write_part
    calls: list[Path] = []

    def full_disk(path: Path, frame: pd.DataFrame) -> None:
        calls.append(path)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        real_write(path, frame)

    monkeypatch.setattr(offline, "_write_part", full_disk)
    errors = _metric("recstream_stream_offline_export_errors_total")
    exporter = SampleExporter(settings)
    real_committed = exporter.consumer.committed
    coordinator_down = [True]

    def committed(tp: object) -> object:  # the rewind's first try fails too
        if coordinator_down.pop() if coordinator_down else False:
            raise KafkaTimeoutError("injected: no coordinator")
        return real_committed(tp)  # type: ignore[arg-type]

    monkeypatch.setattr(exporter.consumer, "committed", committed)
    try:
        assert exporter.export_or_rewind(timeout_ms=5000) == 0
        assert exporter.export_or_rewind(timeout_ms=3000) == 0
        assert _metric("recstream_stream_offline_export_errors_total") == errors + 2
        assert exporter.export_or_rewind(timeout_ms=3000) == len(sent)
    finally:
        exporter.close()
    assert _metric("recstream_stream_offline_last_export_timestamp_seconds") > time.time() - 60
    assert set(read_samples(samples_dir(settings))["sample_id"]) == sent
    users = settings.feast.data_dir / definitions.user_behavior_source.path
    assert sum(len(pd.read_parquet(p)) for p in Path(users).glob("part-*.parquet")) == len(sent)
