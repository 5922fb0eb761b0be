"""Samples reach the offline store as parquet, each exactly once for readers."""

from __future__ import annotations

from stream.consumer import StreamConsumer
from stream.offline import SampleExporter, read_samples, samples_dir
from stream.producer import events_from_frame, produce
from stream.recompute import read_topic, recompute
from stream.settings import StreamSettings
from stream.synthetic import SyntheticConfig, generate
from tests.stream.conftest import drain


def test_exported_parquet_holds_every_sample_once(settings: StreamSettings) -> None:
    produce(events_from_frame(generate(600, SyntheticConfig(n_users=40)), id_prefix="o"),
            settings.kafka)
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
