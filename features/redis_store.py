"""Feast's Redis online store with a client that fails fast: socket timeouts and one retry.

Selected by ``features.store.repo_config`` when ``FeastConfig.online_store == "redis"``
(``type: features.redis_store.FastFailRedisOnlineStore``); everything but the client's
settings is Feast's own ``RedisOnlineStore``: the same keys, the same rows.

Why: Feast builds redis-py's client from the connection string alone, with redis-py's
defaults: no socket timeout, and 3 retries with exponential backoff from 1 s. Against a
Redis that refuses connections, each call then took ~7 s before it raised; against one that
hangs (a paused process, a network partition without a reset) it never returned. The stream
consumer retries a failed write itself, with a membership check before each try, and must
stay within the group's ``max_poll_interval_ms`` (6 s by default); the ranking service
should answer 503 soon, not after many seconds. This client raises after ``retries``
retries (default 1, after 10 ms: enough for a pooled connection the server closed) of at
most ``socket_timeout_s`` each (``connect_timeout_s`` to connect): ~20 ms against a Redis
that refuses, ~2 s against one that hangs. ``socket_timeout`` or ``socket_connect_timeout``
given in the connection string win over these defaults. Not covered: the clients of
Sentinel's discovery (``redis_type: redis_sentinel``) and the ``glide`` read client keep
their libraries' defaults; recstream's ``FeastConfig`` selects neither.
"""

from __future__ import annotations

from typing import Any, Literal

from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ConstantBackoff
from redis.retry import Retry

_Type = Literal["features.redis_store.FastFailRedisOnlineStore"]


class FastFailRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    """Feast's Redis settings plus the client's timeouts and retries."""

    type: _Type = "features.redis_store.FastFailRedisOnlineStore"  # type: ignore[assignment]
    socket_timeout_s: float = 1.0
    connect_timeout_s: float = 0.5
    retries: int = 1


def client_connection_string(cfg: FastFailRedisOnlineStoreConfig) -> str:
    """``cfg.connection_string`` with the timeouts added where it does not set them."""
    parts = [p.strip() for p in cfg.connection_string.split(",") if p.strip()]
    given = {p.split("=", 1)[0] for p in parts if "=" in p}
    for name, value in (("socket_timeout", cfg.socket_timeout_s),
                        ("socket_connect_timeout", cfg.connect_timeout_s)):
        if name not in given:
            parts.append(f"{name}={value}")
    return ",".join(parts)


def _retry(cfg: FastFailRedisOnlineStoreConfig) -> Retry:
    return Retry(ConstantBackoff(0.01), cfg.retries)


def _async_retry(cfg: FastFailRedisOnlineStoreConfig) -> AsyncRetry:
    """redis.asyncio awaits its retry: the sync ``Retry`` there would not retry at all."""
    return AsyncRetry(ConstantBackoff(0.01), cfg.retries)


class FastFailRedisOnlineStore(RedisOnlineStore):
    """Feast's Redis store; only the clients' timeouts and retries differ (module docstring)."""

    def _get_client(self, online_store_config: Any) -> Any:
        if not self._client:
            cfg = _fast_fail(online_store_config)
            client = super()._get_client(
                cfg.model_copy(update={"connection_string": client_connection_string(cfg)}))
            client.set_retry(_retry(cfg))
        return self._client

    async def _get_client_async(self, online_store_config: Any) -> Any:
        if not self._client_async:
            cfg = _fast_fail(online_store_config)
            client = await super()._get_client_async(
                cfg.model_copy(update={"connection_string": client_connection_string(cfg)}))
            client.set_retry(_async_retry(cfg))
        return self._client_async


def _fast_fail(config: Any) -> FastFailRedisOnlineStoreConfig:
    if not isinstance(config, FastFailRedisOnlineStoreConfig):
        raise TypeError(f"expected FastFailRedisOnlineStoreConfig, got {type(config).__name__}")
    return config
