"""The `recstream` CLI: produce to a real broker, and clear errors for bad arguments."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import TopicPartition

from infra.cli import main
from stream.kafka import KafkaConfig, make_consumer
from stream.settings import stream_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def cli_env(kafka_cfg: KafkaConfig, monkeypatch: pytest.MonkeyPatch) -> Iterator[KafkaConfig]:
    """Point the CLI's STREAM_ settings at the test broker and topic."""
    monkeypatch.setenv("STREAM_KAFKA__BOOTSTRAP_SERVERS", kafka_cfg.bootstrap_servers)
    monkeypatch.setenv("STREAM_KAFKA__TOPICS__EVENTS", kafka_cfg.topics.events)
    stream_settings.cache_clear()
    yield kafka_cfg
    stream_settings.cache_clear()


def _read_all(cfg: KafkaConfig, want: int) -> list[dict]:
    consumer = make_consumer(cfg, None)
    consumer.assign([TopicPartition(cfg.topics.events, p) for p in range(cfg.partitions)])
    consumer.seek_to_beginning()
    values: list[dict] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(values) < want:
        for records in consumer.poll(500).values():
            values += [json.loads(r.value) for r in records]
    consumer.close()
    return values


def test_produce_synthetic_writes_every_event(cli_env: KafkaConfig) -> None:
    from stream.synthetic import generate

    assert main(["produce", "--source", "synthetic", "--events", "200", "--id-prefix", "c"]) == 0
    want = 200 + int(generate(200).label.sum())
    got = _read_all(cli_env, want)
    assert len(got) == want
    assert sum(v["event_type"] == "impression" for v in got) == 200


def test_produce_movielens_replays_ratings(cli_env: KafkaConfig, ml100k_dir: Path) -> None:
    from models.data.movielens import load_movielens

    assert main(["produce", "--source", "movielens", "--data", str(ml100k_dir),
                 "--limit", "100"]) == 0
    head = load_movielens(ml100k_dir).head(100)
    got = _read_all(cli_env, 100 + int(head.label.sum()))
    clicks = [v for v in got if v["event_type"] == "click"]
    assert len(got) - len(clicks) == 100 and len(clicks) == int((head.rating >= 4).sum())


def test_unknown_subcommand_exits_with_usage() -> None:
    with pytest.raises(SystemExit) as info:
        main(["nope"])
    assert info.value.code == 2


def test_produce_reports_unacknowledged_events_and_exits_1(
    cli_env: KafkaConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import stream.producer

    def fails(*args: object, **kw: object) -> int:
        raise stream.producer.ProduceError("3 of 10 events were not acknowledged by the broker")

    monkeypatch.setattr(stream.producer, "produce", fails)
    assert main(["produce", "--source", "synthetic", "--events", "10"]) == 1
    assert "3 of 10 events were not acknowledged" in capsys.readouterr().out
