"""The Feast access layer on real online stores: SQLite (embedded default) and Redis."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from features.store import (
    STORE_ERRORS,
    FeastConfig,
    FeatureAccess,
    StoreUnavailable,
    UserSequence,
    _key,
    apply_definitions,
    open_store,
    repo_config,
    unavailable,
)
from infra.stack import redis_up


@pytest.fixture(params=["sqlite", "redis"])
def access(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FeatureAccess]:
    kind = request.param
    if kind == "redis" and not redis_up():
        pytest.skip("no Redis server on 127.0.0.1:6379")
    # A unique project keeps this run's Redis keys apart from any other.
    cfg = FeastConfig(data_dir=tmp_path / "feast", online_store=kind,
                      project=f"t{uuid.uuid4().hex[:10]}")
    store = open_store(cfg)
    apply_definitions(store)
    yield FeatureAccess(store)
    store.teardown()  # Redis: this project's keys go


def test_sequences_round_trip_and_unknown_users_are_absent(access: FeatureAccess) -> None:
    seq = UserSequence(item_ids=[5, 9], cat_ids=[1, 2], ts_ms=[1000, 2000],
                       last_partition=3, last_offset=41)
    access.write_sequences({7: seq})
    got = access.read_sequences([7, 8])
    assert set(got) == {7}
    assert (got[7].item_ids, got[7].cat_ids, got[7].ts_ms) == ([5, 9], [1, 2], [1000, 2000])
    assert (got[7].last_partition, got[7].last_offset) == (3, 41)


def test_back_to_back_writes_all_land(access: FeatureAccess) -> None:
    """Redis drops a row not newer than the stored one: stamps must strictly increase,
    also after the row was last written by a host whose clock is ahead of ours."""
    ahead = datetime.now(UTC) + timedelta(hours=1)
    access.write_sequences({1: UserSequence(item_ids=[1], cat_ids=[1], ts_ms=[1],
                                            last_offset=1, updated_at=ahead)})
    for n in range(2, 21):
        seq = access.read_sequences([1])[1]  # as a new owner after a rebalance would
        assert seq.updated_at is not None and seq.updated_at > ahead
        seq.item_ids.append(n)
        seq.cat_ids.append(n % 3)
        seq.ts_ms.append(n)
        seq.last_offset = n
        access.write_sequences({1: seq})
    assert access.read_sequences([1])[1].item_ids == list(range(1, 21))


def test_ranker_v1_serves_history_and_candidate_categories(access: FeatureAccess) -> None:
    access.write_items({10: 4, 11: 5})
    access.write_sequences({1: UserSequence(item_ids=[10], cat_ids=[4], ts_ms=[1],
                                            last_partition=0, last_offset=0)})
    assert access.ranker_features(1, [11, 10, 99]) == ([10], [4], [5, 4, 0])
    assert access.ranker_features(2, [10]) == ([], [], [4])  # a user with no clicks yet


def test_direct_writes_are_what_feast_reads(access: FeatureAccess) -> None:
    """Rows written with online_write_batch read back through Feast's own online path."""
    access.write_sequences({3: UserSequence(item_ids=[4, 6], cat_ids=[1, 1], ts_ms=[10, 20],
                                            last_partition=2, last_offset=9)})
    names = ["hist_item_ids", "hist_cat_ids", "hist_ts_ms", "last_partition", "last_offset"]
    got = access.store.get_online_features(
        features=[f"user_behavior_fv:{n}" for n in names], entity_rows=[{"user_id": 3}]).to_dict()
    assert [got[n][0] for n in names] == [[4, 6], [1, 1], [10, 20], 2, 9]


def test_item_category_changes_land_after_a_writer_with_a_clock_ahead(
    access: FeatureAccess,
) -> None:
    """An item row stamped an hour ahead (another host's clock): later changes still land."""
    ahead = datetime.now(UTC) + timedelta(hours=1)
    row = (_key("item_id", 10), {"category_id": ValueProto(int64_val=4)}, ahead, None)
    access.store.provider.online_write_batch(access.store.config, access._item_fv, [row], None)
    for cat in (5, 6, 7):
        access.write_items({10: cat, 11: cat})
        assert access.ranker_features(1, [10, 11])[2] == [cat, cat]


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_an_unusable_online_store_raises_one_of_the_store_errors(kind: str,
                                                                 tmp_path: Path) -> None:
    """What the stream consumer rewinds and retries on (``StoreUnavailable``, raised for one of
    ``STORE_ERRORS`` that means "for now") covers what each
    store raises when it cannot be written: the SQLite file locked by another writer (after
    the store's busy timeout of 0.5 s), Redis refusing the connection (after one retry of
    the client: features/redis_store.py)."""
    cfg = FeastConfig(data_dir=tmp_path / "feast", online_store=kind,
                      redis_connection_string="127.0.0.1:1", project=f"t{uuid.uuid4().hex[:10]}")
    store = open_store(cfg)
    apply_definitions(store)  # Redis: the registry only, no call to the server
    access = FeatureAccess(store)
    if kind == "sqlite":
        access.write_sequences({1: UserSequence(item_ids=[1], cat_ids=[1], ts_ms=[1])})
        other = sqlite3.connect(store.config.online_store.path, timeout=0)
        other.execute("BEGIN EXCLUSIVE")  # another writer holds the file
        # The store waits 0.5 s for another writer's lock, not sqlite3's default 5 s.
        conn = store.provider.online_store._get_conn(store.config)
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 500
    with pytest.raises(StoreUnavailable) as raised:
        access.write_sequences({2: UserSequence(item_ids=[2], cat_ids=[2], ts_ms=[2])})
    cause = raised.value.__cause__
    assert isinstance(cause, STORE_ERRORS) and unavailable(cause)


def test_a_store_without_its_tables_is_not_unavailable_for_now(tmp_path: Path) -> None:
    """SQLite raises the same type for a missing table as for a locked file; retrying cannot
    mend the first, so it must not count as the store being down for a while."""
    cfg = FeastConfig(data_dir=tmp_path / "feast")
    apply_definitions(open_store(cfg))
    Path(repo_config(cfg).online_store.path).unlink()  # the online tables go with their file
    access = FeatureAccess.open(cfg)
    with pytest.raises(sqlite3.OperationalError) as raised:
        access.read_sequences([1])
    assert "no such table" in str(raised.value)
    assert not unavailable(raised.value)

