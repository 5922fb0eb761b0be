"""The `recstream` CLI: produce to a real broker, clear errors for bad arguments, `serve`'s
one-line failures, no library warnings on the terminal."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka import TopicPartition

from features.store import FeastConfig
from infra import stack
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


def test_produce_synthetic_writes_every_event(
        cli_env: KafkaConfig, capsys: pytest.CaptureFixture[str]) -> None:
    """``--events N`` is N impressions, each click one event more: the output says both."""
    from stream.synthetic import generate

    assert main(["produce", "--source", "synthetic", "--events", "200", "--id-prefix", "c"]) == 0
    clicks = int(generate(200).label.sum())
    want = 200 + clicks
    assert f"sent {want} events (200 impressions, {clicks} clicks)" in capsys.readouterr().out
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


RECSTREAM = str(Path(sys.executable).with_name("recstream"))


def _recstream(argv: list[str], cwd: Path, timeout: float, **env: str
               ) -> subprocess.CompletedProcess[str]:
    """``recstream ARGV`` as a user runs it: a process of its own, output captured."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("STACK_", "STREAM_", "SERVE_", "TRAIN_"))}
    return subprocess.run([RECSTREAM, *argv], cwd=cwd, env={**clean, **env}, text=True,
                          capture_output=True, timeout=timeout)


def test_stack_status_prints_no_library_warnings(tmp_path: Path, free_tcp_port: int) -> None:
    res = _recstream(["stack", "status"], tmp_path, 60, STACK_KAFKA_PORT=str(free_tcp_port))
    assert res.returncode == 1  # nothing is up
    assert res.stderr == "" and "kafka  down" in res.stdout


def _serve_config(tmp_path: Path, model_dir: Path) -> Path:
    import yaml

    raw = yaml.safe_load((Path(stack.__file__).with_name("serve.yaml")).read_text())
    raw["variants"][0]["model_dir"] = str(model_dir)
    for key in ("family", "pointer", "version"):  # a checkpoint folder instead
        raw["variants"][0].pop(key, None)
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_serve_without_a_model_says_so_in_one_line(tmp_path: Path, free_tcp_port: int) -> None:
    missing = tmp_path / "models" / "din"
    started = time.monotonic()
    res = _recstream(["serve"], tmp_path, 60, SERVE_CONFIG_PATH=str(_serve_config(
        tmp_path, missing)), SERVE_RAY_ADDRESS=f"127.0.0.1:{free_tcp_port}")
    assert res.returncode == 1 and time.monotonic() - started < 60
    assert res.stdout.splitlines() == [
        f"serve: no trained model at {missing}: run `recstream train` first (the serve config "
        f"is {tmp_path / 'serve.yaml'})"], res.stdout + res.stderr
    assert "Traceback" not in res.stderr


def test_serve_without_a_cluster_says_so_in_one_line(tmp_path: Path, free_tcp_port: int) -> None:
    model = tmp_path / "models" / "din"
    model.mkdir(parents=True)
    (model / "model.json").write_text("{}")
    res = _recstream(["serve"], tmp_path, 60, SERVE_CONFIG_PATH=str(_serve_config(tmp_path, model)),
                     SERVE_RAY_ADDRESS=f"127.0.0.1:{free_tcp_port}")
    assert res.returncode == 1
    assert res.stdout.splitlines() == [
        f"serve: no Ray cluster answers at 127.0.0.1:{free_tcp_port}: run `recstream stack up` "
        "first (or set SERVE_RAY_ADDRESS)"], res.stdout + res.stderr


def test_serve_whose_deployment_fails_exits_with_one_line_and_the_log(
        tmp_path: Path, feast_cfg: FeastConfig, free_tcp_port_factory: Callable[[], int]
) -> None:
    """A real Ray head, a checkpoint its replica cannot load: Serve gives up after its
    retries, and `recstream serve` prints one line naming the log that holds the error."""
    ray_port, http_port = free_tcp_port_factory(), free_tcp_port_factory()
    token = tmp_path / "ray_auth_token"
    # not tmp_path/models: the replicas run in this directory, where a `models` folder
    # would shadow recstream's models package
    model = tmp_path / "checkpoints" / "din"
    model.mkdir(parents=True)
    (model / "model.json").write_text("{this is no checkpoint")
    stack.start_ray(ray_port, free_tcp_port_factory(), token, num_cpus=2)
    try:
        started = time.monotonic()
        res = _recstream(["serve"], tmp_path, 240, SERVE_CONFIG_PATH=str(_serve_config(
            tmp_path, model)), SERVE_RAY_ADDRESS=f"127.0.0.1:{ray_port}",
            SERVE_HTTP_PORT=str(http_port), SERVE_RAY_AUTH_TOKEN_PATH=str(token),
            SERVE_FEAST__DATA_DIR=str(feast_cfg.data_dir))
        took = time.monotonic() - started
    finally:
        stack.stop_ray(ray_port)
    lines = res.stdout.splitlines()
    assert res.returncode == 1 and len(lines) == 1, res.stdout + res.stderr
    head, _, log = lines[0].rpartition("; full log: ")
    assert head.startswith("serve: deploying recstream failed: Scorer_din_a could not start ("), \
        lines
    assert "Traceback" not in res.stdout + res.stderr
    error = head.split("could not start (", 1)[1][:-1]  # the exception line of the replica
    assert error in Path(log).read_text() and "Traceback" in Path(log).read_text()
    assert took < 120, took
