"""The Redis online store's client settings (features/redis_store.py), on a real Redis server."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from feast.infra.online_stores.helpers import _redis_key
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from redis.asyncio.retry import Retry as AsyncRetry
from redis.retry import Retry

from features.redis_store import FastFailRedisOnlineStoreConfig, client_connection_string
from features.store import (
    STORE_ERRORS,
    FeastConfig,
    FeatureAccess,
    StoreUnavailable,
    UserSequence,
    _key,
    apply_definitions,
    open_store,
)
from tests.conftest import OwnRedis


def test_a_redis_that_hangs_fails_the_call_instead_of_blocking_it(
        own_redis: OwnRedis, tmp_path: Path) -> None:
    """A Redis that stops answering (the process paused: connections open, no reply) makes
    reads and writes raise one of the store errors within the client's socket timeout
    (1 s, one retry); with redis-py's defaults under Feast, the call never returned. Each
    call runs in a thread so that a regression fails here after 30 s, not at the suite's
    timeout. After the pause the same client works again."""
    cfg = FeastConfig(data_dir=tmp_path / "feast", online_store="redis",
                      redis_connection_string=own_redis.connection_string, project="hang")
    store = open_store(cfg)
    apply_definitions(store)
    access = FeatureAccess(store)
    access.write_sequences({1: UserSequence(item_ids=[1], cat_ids=[1], ts_ms=[1])})
    calls = {"read": lambda: access.read_sequences([1]),
             "write": lambda: access.write_sequences({2: UserSequence(item_ids=[2],
                                                                      cat_ids=[2], ts_ms=[2])})}
    with own_redis.paused():
        for op, call in calls.items():
            outcome: list[BaseException | None] = []

            def run(call: Any = call, outcome: list[BaseException | None] = outcome) -> None:
                try:
                    call()
                    outcome.append(None)
                except BaseException as err:
                    outcome.append(err)

            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            worker.join(timeout=30)
            assert outcome, f"the {op} blocked on a hung Redis"
            assert isinstance(outcome[0], StoreUnavailable), (op, outcome[0])
            assert isinstance(outcome[0].__cause__, STORE_ERRORS), (op, outcome[0])
    assert access.read_sequences([1])[1].item_ids == [1]


def test_timeouts_in_the_connection_string_win_over_the_defaults() -> None:
    cfg = FastFailRedisOnlineStoreConfig(connection_string="h:1,db=2,socket_timeout=5")
    assert client_connection_string(cfg) == "h:1,db=2,socket_timeout=5,socket_connect_timeout=0.5"
    plain = FastFailRedisOnlineStoreConfig(connection_string="h:1")
    assert client_connection_string(plain) == "h:1,socket_timeout=1.0,socket_connect_timeout=0.5"


def test_the_sync_and_async_clients_get_the_timeouts_and_one_retry(tmp_path: Path) -> None:
    """redis.asyncio awaits its retry object: given the sync ``Retry``, it would not retry."""
    cfg = FeastConfig(data_dir=tmp_path / "feast", online_store="redis",
                      redis_connection_string="127.0.0.1:1", project="clients")
    store = open_store(cfg)
    online, store_cfg = store.provider.online_store, store.config.online_store
    sync_client = online._get_client(store_cfg)
    async_client = asyncio.run(online._get_client_async(store_cfg))
    for client, retry_type in ((sync_client, Retry), (async_client, AsyncRetry)):
        retry = client.get_retry()
        assert type(retry) is retry_type and retry._retries == 1
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (1.0, 0.5)


def _seq(items: list[int], partition: int, offset: int) -> UserSequence:
    return UserSequence(item_ids=items, cat_ids=[1] * len(items), ts_ms=list(range(len(items))),
                        last_partition=partition, last_offset=offset)


@pytest.fixture
def redis_access(own_redis: OwnRedis, tmp_path: Path) -> FeatureAccess:
    cfg = FeastConfig(data_dir=tmp_path / "feast", online_store="redis",
                      redis_connection_string=own_redis.connection_string, project="fence")
    store = open_store(cfg)
    apply_definitions(store)
    return FeatureAccess(store)


def test_a_sequence_write_behind_the_stored_position_is_refused(
        redis_access: FeatureAccess) -> None:
    """A row at a later offset of the same partition is never overwritten by an older state
    (the late bytes of a timed-out write, a stalled member's write); the same position and
    another partition are written; refused rows are named, the others still land."""
    access = redis_access
    assert access.write_sequences({1: _seq([1, 2, 3], 0, 30)}) == set()
    assert access.write_sequences({1: _seq([1, 2], 0, 20), 2: _seq([5], 0, 21)}) == {1}
    got = access.read_sequences([1, 2])
    assert (got[1].item_ids, got[1].last_offset) == ([1, 2, 3], 30)
    assert (got[2].item_ids, got[2].last_offset) == ([5], 21)
    assert access.ranker_features(1, [7])[0] == [1, 2, 3]  # what Feast's read path serves
    assert access.write_sequences({1: _seq([1, 2, 3], 0, 30)}) == set()  # a replay: same state
    assert access.write_sequences({1: _seq([9], 1, 4)}) == set()  # another partition
    assert access.read_sequences([1])[1].item_ids == [9]


def test_fenced_rows_hold_the_bytes_feasts_own_write_would(redis_access: FeatureAccess) -> None:
    """Each field Feast writes (its timestamp, every feature) is byte for byte what Feast's own
    Redis store writes for the same row; the only extra field is the plain-text position."""
    access = redis_access
    store = access.store
    ours = store.provider.online_store
    stamp = datetime(2026, 12, 5, 4, 0, tzinfo=UTC)
    values = {"hist_item_ids": ValueProto(), "last_partition": ValueProto(int64_val=2),
              "last_offset": ValueProto(int64_val=77)}
    values["hist_item_ids"].int64_list_val.val.extend([4, 5, 6])
    rows = [(_key("user_id", 1), values, stamp, None)]
    ours.online_write_batch(store.config, access._user_fv, rows, None)
    feasts = RedisOnlineStore()
    feasts._client = ours._get_client(store.config.online_store)  # same server, Feast's write
    other = [(_key("user_id", 2), values, stamp, None)]
    feasts.online_write_batch(store.config, access._user_fv, other, None)
    client = feasts._client
    version = store.config.entity_key_serialization_version
    mine = client.hgetall(_redis_key(store.config.project, rows[0][0], version))
    theirs = client.hgetall(_redis_key(store.config.project, other[0][0], version))
    assert mine.pop(b"_pos:user_behavior_fv") == b"2:77"
    assert mine == theirs


def test_a_flushed_script_cache_or_an_unreadable_position_does_not_block_writes(
        redis_access: FeatureAccess) -> None:
    """The script goes with every call (EVAL), so a Redis that restarted or flushed its
    script cache still takes the write; a stored position it cannot read counts as none
    and the write puts a good one back."""
    access = redis_access
    access.write_sequences({1: _seq([1], 0, 30)})
    store = access.store
    client = store.provider.online_store._get_client(store.config.online_store)
    key = _redis_key(store.config.project, _key("user_id", 1),
                     store.config.entity_key_serialization_version)
    client.script_flush()
    client.hset(key, "_pos:user_behavior_fv", "0:garbage")
    assert access.write_sequences({1: _seq([2], 0, 10)}) == set()
    assert client.hget(key, "_pos:user_behavior_fv") == b"0:10"
    assert access.write_sequences({1: _seq([3], 0, 5)}) == {1}  # fenced again


def test_password_from_its_file_and_nowhere_in_the_config(own_redis: OwnRedis,
                                                          tmp_path: Path) -> None:
    """A Redis that needs a password: the store opened with SERVE/STREAM_FEAST__
    REDIS_PASSWORD_FILE writes and reads, and the config's dump (what a Serve deployment
    is given) holds the file's path, never the password."""
    import redis

    redis.Redis(port=own_redis.port).config_set("requirepass", "hunter2")
    secret = tmp_path / "redis_password"
    secret.write_text("hunter2\n")
    cfg = FeastConfig(data_dir=tmp_path / "feast", online_store="redis",
                      redis_connection_string=own_redis.connection_string,
                      redis_password_file=secret, project="secret")
    assert "hunter2" not in str(cfg.model_dump(mode="json"))
    store = open_store(cfg)
    apply_definitions(store)
    access = FeatureAccess(store)
    access.write_sequences({1: UserSequence(item_ids=[4, 5], cat_ids=[1, 1], ts_ms=[1, 2])})
    assert access.ranker_inputs(1, [4]).hist_item_ids == [4, 5]
    without = FeatureAccess(open_store(cfg.model_copy(update={"redis_password_file": None})))
    with pytest.raises(redis.exceptions.AuthenticationError):
        without.ranker_inputs(1, [4])
