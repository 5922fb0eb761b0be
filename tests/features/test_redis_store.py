"""The Redis online store's client settings (features/redis_store.py), on a real Redis server."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from redis.asyncio.retry import Retry as AsyncRetry
from redis.retry import Retry

from features.redis_store import FastFailRedisOnlineStoreConfig, client_connection_string
from features.store import (
    STORE_ERRORS,
    FeastConfig,
    FeatureAccess,
    UserSequence,
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
            assert isinstance(outcome[0], STORE_ERRORS), (op, outcome[0])
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
