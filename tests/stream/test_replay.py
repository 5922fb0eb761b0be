"""Replaying dead letters (stream.replay) on the real broker and Feast: what passes now goes
back once, crash or not, and the pipeline applies it once; what still fails stays."""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from kafka import TopicPartition

from features.store import FeatureAccess
from stream import failpoints, replay
from stream.events import Event, EventType
from stream.kafka import make_consumer, make_producer
from stream.replay import REPLAY_GROUP, REPLAY_SOURCE, Replayer, ReplayFenced
from stream.settings import StreamSettings
from stream.topicread import read_range
from tests.stream.conftest import assert_exact, read_dlq, run_to_end, verify

AHEAD = timedelta(seconds=120)  # past the first consumer's skew limit, within the second's


def _event(n: int, kind: EventType, ts: datetime) -> Event:
    return Event(event_id=f"e{n}", event_type=kind, user_id=10 + n % 4, item_id=100 + n,
                 category_id=n % 3, ts=ts, request_id=f"r{n}")


def _produce_with_clock_ahead(s: StreamSettings, n_ahead: int) -> None:
    """Impressions and clicks of 4 users; ``n_ahead`` clicks stamped AHEAD in the future (a
    producer whose clock runs ahead); one message that is not JSON, one with a wrong key."""
    now = datetime.now(UTC).replace(microsecond=0)
    producer = make_producer(s.kafka)
    for n in range(24):
        ts = now - timedelta(minutes=30) + timedelta(seconds=n)
        for kind in (EventType.IMPRESSION, EventType.CLICK) if n % 2 else (EventType.IMPRESSION,):
            ev = _event(n, kind, ts)
            producer.send(s.kafka.topics.events, key=ev.key(), value=ev.to_bytes())
    for n in range(n_ahead):
        ev = _event(100 + n, EventType.CLICK, now + AHEAD + timedelta(seconds=n))
        producer.send(s.kafka.topics.events, key=ev.key(), value=ev.to_bytes())
    producer.send(s.kafka.topics.events, key=b"10", value=b"{not json")
    wrong = _event(7, EventType.CLICK, now - timedelta(minutes=1))
    producer.send(s.kafka.topics.events, key=b"999", value=wrong.to_bytes())
    producer.flush()
    producer.close()


def _replays_by_source(s: StreamSettings) -> Counter[str]:
    """How often each source event was sent back to the events topic by a replay."""
    out: Counter[str] = Counter()
    reader = make_consumer(s.kafka, None)
    try:
        for p in sorted(reader.partitions_for_topic(s.kafka.topics.events) or ()):
            for rec in read_range(reader, TopicPartition(s.kafka.topics.events, p), 0):
                h = dict(rec.headers or ())
                if h.get(REPLAY_GROUP) == s.group_id.encode():
                    out[h[REPLAY_SOURCE].decode()] += 1
    finally:
        reader.close()
    return out


@pytest.fixture
def strict(settings: StreamSettings) -> StreamSettings:
    """The consumer's settings before the fix: a 10 s future skew limit."""
    return settings.model_copy(update={"max_future_skew_s": 10.0})


def test_letters_that_pass_now_are_replayed_once_and_applied(strict: StreamSettings) -> None:
    _produce_with_clock_ahead(strict, n_ahead=5)
    run_to_end(strict, "strict")
    assert Counter(d.reason for d in read_dlq(strict.kafka)) == {
        "future_ts": 5, "not_json": 1, "key_mismatch": 1}

    before_fix = Replayer(strict).run()  # the stamps are still too far ahead for the service
    assert before_fix.replayed == []
    assert before_fix.still_invalid == {"future_ts": 5, "not_json": 1, "key_mismatch": 1}

    relaxed = strict.model_copy(update={"max_future_skew_s": 290.0})  # the operator's fix
    dry = Replayer(relaxed).run(dry_run=True)
    assert (len(dry.replayed), dry.still_invalid) == (5, {"not_json": 1, "key_mismatch": 1})
    assert _replays_by_source(relaxed) == {}  # a dry run sends nothing

    report = Replayer(relaxed).run()
    assert [x.letter.reason for x in report.replayed] == ["future_ts"] * 5
    assert report.still_invalid == {"not_json": 1, "key_mismatch": 1}
    assert (report.already, report.other, report.duplicates) == (0, 0, 0)
    again = Replayer(relaxed).run()  # every letter is looked at again; none is sent twice
    assert (again.replayed, again.already) == ([], 5)
    assert again.still_invalid == {"not_json": 1, "key_mismatch": 1}

    run_to_end(relaxed, "relaxed")
    outcome = verify(relaxed)  # the originals stay dead, the replayed records count once
    assert_exact(outcome)
    seqs = FeatureAccess.open(relaxed.feast).read_sequences(range(10, 14))
    assert sum(item in seq.item_ids for seq in seqs.values() for item in range(200, 205)) == 5
    assert len(read_dlq(relaxed.kafka)) == 7  # the letters stay on the DLQ


def test_a_replay_crashing_anywhere_sends_each_event_once(
    strict: StreamSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of 2 letters and a crash at each of the three points with probability 0.3:
    runs are repeated until one completes; every event went back exactly once."""
    monkeypatch.setattr(replay, "CHUNK", 2)
    _produce_with_clock_ahead(strict, n_ahead=9)
    run_to_end(strict, "strict")
    relaxed = strict.model_copy(update={"max_future_skew_s": 290.0})
    failpoints.configure("replay_after_intent=0.3,replay_after_send=0.3,replay_after_done=0.3",
                         raise_=True, seed=5)
    crashes: Counter[str] = Counter()
    recovered = 0
    try:
        for _ in range(60):
            try:
                recovered += Replayer(relaxed).run().recovered
                break
            except failpoints.Crash as crash:
                crashes[str(crash)] += 1
        else:
            pytest.fail("no replay run completed")
    finally:
        failpoints.configure("")
    assert set(crashes) == {"replay_after_intent", "replay_after_send", "replay_after_done"}
    assert recovered >= 1, crashes
    sent = _replays_by_source(relaxed)
    assert len(sent) == 9 and set(sent.values()) == {1}
    assert Replayer(relaxed).run().already == 9
    run_to_end(relaxed, "relaxed")
    assert_exact(verify(relaxed))


def test_a_newer_replay_fences_off_an_older_one_still_running(
    strict: StreamSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first run pauses after its first intent (its sends not made yet); a second run
    fences it, recovers that intent (nothing landed) and sends every letter; the first,
    resumed, is refused by the broker: each event went back once (twice without the fence)."""
    monkeypatch.setattr(replay, "CHUNK", 2)
    _produce_with_clock_ahead(strict, n_ahead=4)
    run_to_end(strict, "strict")
    relaxed = strict.model_copy(update={"max_future_skew_s": 290.0})
    paused, resume = threading.Event(), threading.Event()

    def hold(name: str) -> None:
        if name == "replay_after_intent" and threading.current_thread().name == "older":
            paused.set()
            resume.wait(60)

    monkeypatch.setattr(replay, "failpoint", hold)
    errors: list[Exception] = []

    def older() -> None:
        try:
            Replayer(relaxed).run()
        except Exception as exc:  # handed to the test
            errors.append(exc)

    thread = threading.Thread(target=older, name="older", daemon=True)
    thread.start()
    try:
        assert paused.wait(60), "the older run never reached its first intent"
        newer = Replayer(relaxed).run()
    finally:
        resume.set()
        thread.join(60)
    assert len(newer.replayed) == 4 and newer.recovered == 0
    assert len(errors) == 1 and isinstance(errors[0], ReplayFenced), errors
    sent = _replays_by_source(relaxed)
    assert len(sent) == 4 and set(sent.values()) == {1}, sent
    run_to_end(relaxed, "relaxed")
    assert_exact(verify(relaxed))


def test_one_replay_per_event_of_this_group_and_one_of_a_rejected_replay(
    strict: StreamSettings,
) -> None:
    """A second letter of the same event, another group's letter, a record that is not a
    letter: none of them is sent; a letter of a replay the consumer rejected goes once."""
    _produce_with_clock_ahead(strict, n_ahead=2)
    run_to_end(strict, "strict")
    letter = read_dlq(strict.kafka)[0]
    assert letter.reason == "future_ts"
    producer = make_producer(strict.kafka)
    for copy in (letter, replace(letter, source_group="another-group")):
        producer.send(strict.kafka.topics.dlq, key=copy.key, value=copy.value,
                      headers=copy.headers())
    producer.send(strict.kafka.topics.dlq, value=json.dumps({"not": "a letter"}).encode())
    producer.flush()
    relaxed = strict.model_copy(update={"max_future_skew_s": 290.0})
    report = Replayer(relaxed).run()
    assert (len(report.replayed), report.duplicates, report.other) == (2, 1, 2)

    p, o = report.landed[0]  # the consumer (with stricter settings) rejects the replay again
    bounce = replace(letter, source_partition=p, source_offset=o)
    producer.send(strict.kafka.topics.dlq, key=bounce.key, value=bounce.value,
                  headers=bounce.headers())
    producer.flush()
    producer.close()
    again = Replayer(relaxed).run()  # a rejected replay was never applied: it goes again
    assert (len(again.replayed), again.bounced, again.already) == (1, 1, 3)  # 3 letters, 2 events
    assert Replayer(relaxed).run().already == 4  # and only once
