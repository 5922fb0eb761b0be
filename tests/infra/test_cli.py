"""The `recstream` CLI: produce to a real broker, and clear errors for bad arguments."""

from __future__ import annotations

import base64
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
    monkeypatch.setenv("STREAM_KAFKA__TOPICS__DLQ", kafka_cfg.topics.dlq)
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


def test_dlq_lists_the_letters_with_their_reasons_and_original_bytes(
        cli_env: KafkaConfig, capsys: pytest.CaptureFixture[str]) -> None:
    from stream.dlq import DeadLetter
    from stream.kafka import make_producer

    cfg = cli_env
    values = [b"this is not json {", b"\xff\xfe raw bytes", b'{"ts": "2999-01-01T00:00:00Z"}']
    letters = [DeadLetter(key=b"7", value=v, reason=r, detail=f"detail {i}",
                          source_topic=cfg.topics.events, source_partition=i % 2,
                          source_offset=10 + i, source_group="g")
               for i, (v, r) in enumerate(zip(values, ["not_json", "not_json", "future_ts"],
                                              strict=True))]
    producer = make_producer(cfg)
    for d in letters:
        producer.send(cfg.topics.dlq, key=d.key, value=d.value, headers=d.headers(), partition=0)
    producer.send(cfg.topics.dlq, value=b"not a letter", partition=1)  # another producer's
    producer.flush()
    producer.close()

    assert main(["dlq", "--json", "--limit", "0"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["reason"], r["source_partition"], r["source_offset"]) for r in rows] == [
        ("not_json", 0, 10), ("not_json", 1, 11), ("future_ts", 0, 12)]
    assert [base64.b64decode(r["value_b64"]) for r in rows] == values  # bytes exactly

    assert main(["dlq", "--json", "--reason", "future_ts"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["detail"] for r in rows] == ["detail 2"]

    assert main(["dlq"]) == 0
    table = capsys.readouterr().out
    assert "not_json" in table and "future_ts" in table and "1 records" in table


def test_dlq_replay_sends_back_what_passes_now_and_reports_the_rest(
        cli_env: KafkaConfig, capsys: pytest.CaptureFixture[str]) -> None:
    """A letter whose event passes the contract now, one that still fails: a dry run lists,
    the replay sends the first back to its source partition, once."""
    from datetime import UTC, datetime

    from stream.dlq import DeadLetter
    from stream.events import Event, EventType
    from stream.kafka import make_producer
    from stream.recompute import read_topic

    cfg = cli_env
    group = stream_settings().group_id
    ok = Event(event_type=EventType.CLICK, user_id=7, item_id=3, category_id=1,
               ts=datetime(2026, 1, 1, tzinfo=UTC)).to_bytes()
    letters = [DeadLetter(key=b"7", value=v, reason=r, detail="d", source_topic=cfg.topics.events,
                          source_partition=2, source_offset=40 + i, source_group=group)
               for i, (v, r) in enumerate([(ok, "unexpected"), (b"{bad", "not_json")])]
    producer = make_producer(cfg)
    for d in letters:
        producer.send(cfg.topics.dlq, key=d.key, value=d.value, headers=d.headers(), partition=0)
    producer.flush()
    producer.close()

    assert main(["dlq", "replay", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would replay 1 letters" in out and "1 letters still fail (not_json)" in out
    assert read_topic(cfg, cfg.topics.events) == {p: [] for p in range(cfg.partitions)}

    assert main(["dlq", "replay"]) == 0
    assert "replayed 1 letters" in capsys.readouterr().out
    assert main(["dlq", "replay"]) == 0
    assert "replayed 0 letters" in capsys.readouterr().out
    events = read_topic(cfg, cfg.topics.events)
    assert [(p, v) for p, recs in events.items() for _, _, v in recs] == [(2, ok)]


@pytest.mark.parametrize("argv", [["dlq"], ["dlq", "replay"], ["stream", "run"],
                                  ["produce", "--events", "3"]])
def test_kafka_commands_say_which_broker_they_cannot_reach(
        argv: list[str], monkeypatch: pytest.MonkeyPatch, free_tcp_port: int,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STREAM_KAFKA__BOOTSTRAP_SERVERS", f"127.0.0.1:{free_tcp_port}")
    monkeypatch.setenv("STREAM_KAFKA__BOOTSTRAP_TIMEOUT_MS", "1500")
    monkeypatch.setenv("STREAM_METRICS_PORT", "0")
    stream_settings.cache_clear()
    try:
        assert main(argv) == 1
    finally:
        stream_settings.cache_clear()
    out = capsys.readouterr().out
    assert f"kafka: KafkaTimeoutError: Unable to bootstrap from ['127.0.0.1:{free_tcp_port}']" \
        in out and "STREAM_KAFKA__BOOTSTRAP_SERVERS" in out
