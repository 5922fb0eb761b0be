"""The batched SQLite online store writes exactly the rows Feast's own store writes."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from feast import FeatureStore
from feast.infra.online_stores.sqlite import SqliteOnlineStore
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.sqlite_store import BatchedSqliteOnlineStore
from features.store import FeastConfig, FeatureAccess, UserSequence, _key
from features.store import apply_definitions as apply
from features.store import open_store as open_

_INT64 = st.integers(-(2**63), 2**63 - 1)
_STAMP = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1),
                      timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7)), None]))


def _store(root: Path, name: str) -> FeatureStore:
    store = open_(FeastConfig(data_dir=root / name, project="parity"))
    apply(store)
    return store


def _table(store: FeatureStore, view: str) -> list[tuple[object, ...]]:
    db = store.config.online_store.path
    with sqlite3.connect(db) as conn:
        return conn.execute(f'SELECT * FROM "parity_{view}" '
                            "ORDER BY entity_key, feature_name").fetchall()


def _row(values: dict[str, ValueProto], user: int, stamp: datetime,
         created: datetime | None) -> tuple[object, ...]:
    return (_key("user_id", user), values, stamp, created)


def test_the_default_repo_selects_the_batched_store(tmp_path: Path) -> None:
    assert isinstance(_store(tmp_path, "a").provider.online_store, BatchedSqliteOnlineStore)


@pytest.fixture(params=["UTC", "America/Los_Angeles"])
def local_zone(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The process's local time zone: Feast's stamp adapter reads naive times as local time,
    so only a zone other than UTC shows whether aware stamps are converted as Feast does."""
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


def test_rows_are_those_of_feasts_own_store(tmp_path: Path, local_zone: str) -> None:
    ours = _store(tmp_path, "ours")
    feast = _store(tmp_path, "feast")
    feast.provider._online_store = SqliteOnlineStore()  # Feast's own write path
    assert type(feast.provider.online_store) is SqliteOnlineStore  # the swap took effect
    view = ours.get_feature_view("user_behavior_fv")

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(st.integers(0, 30), st.lists(_INT64, max_size=60), _INT64,
                              _STAMP, st.none() | _STAMP), max_size=12))
    def check(rows: list[tuple[int, list[int], int, datetime, datetime | None]]) -> None:
        data = []
        for user, ids, scalar, stamp, created in rows:
            values = {"hist_item_ids": ValueProto(), "last_offset": ValueProto(int64_val=scalar)}
            values["hist_item_ids"].int64_list_val.val.extend(ids)
            data.append(_row(values, user, stamp, created))
        for store in (ours, feast):
            store.provider.online_write_batch(store.config, view, data, None)
        assert _table(ours, "user_behavior_fv") == _table(feast, "user_behavior_fv")

    check()
    assert _table(ours, "user_behavior_fv")  # the property wrote rows at all


def test_stamps_sqlite3_has_no_adapter_for_go_to_feasts_write(tmp_path: Path) -> None:
    """A pandas Timestamp (a datetime subclass sqlite3 cannot bind): Feast's own write
    decides, as before this store; it refuses it, and so does ours."""
    ours = _store(tmp_path, "ours")
    view = ours.get_feature_view("user_behavior_fv")
    row = _row({"last_offset": ValueProto(int64_val=1)}, 1, pd.Timestamp("2026-01-01", tz="UTC"),
               None)
    with pytest.raises(sqlite3.ProgrammingError):
        ours.provider.online_write_batch(ours.config, view, [row], None)


def test_what_it_writes_feast_reads_back(tmp_path: Path) -> None:
    access = FeatureAccess(_store(tmp_path, "ours"))
    seqs = {u: UserSequence(item_ids=list(range(u, u + 50)), cat_ids=[u % 7] * 50,
                            ts_ms=list(range(50)), last_partition=u % 4, last_offset=u)
            for u in range(300)}
    access.write_sequences(seqs)
    back = access.read_sequences(range(301))
    assert set(back) == set(seqs)
    assert all((back[u].item_ids, back[u].last_offset) == (s.item_ids, s.last_offset)
               for u, s in seqs.items())
