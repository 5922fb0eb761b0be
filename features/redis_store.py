"""Feast's Redis online store with a client that fails fast, and writes that never move a
user's sequence back.

Selected by ``features.store.repo_config`` when ``FeastConfig.online_store == "redis"``
(``type: features.redis_store.FastFailRedisOnlineStore``); everything but the client's
settings and the write of rows that carry a Kafka position is Feast's own
``RedisOnlineStore``: the same keys, the same fields, the same bytes.

Fenced writes: a row whose values hold both ``position_features`` (``last_partition``,
``last_offset``: the Kafka position of the last click applied to the sequence) is written by
a Lua script, atomically, only if the stored row's position is not later in the same
partition; else it is refused (:meth:`FastFailRedisOnlineStore.write_fenced` names the
refused rows). The position is also kept as plain text in one more field of the hash,
``_pos:{feature view}`` (Feast reads only its own fields). Refused: the late bytes of a write
whose call timed out, delivered after the replay's newer write (a partition that healed),
and a stalled member's write after the partition's new owner moved the row on. Equal
positions are written (the same clicks make the same sequence).

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
their libraries' defaults, and on a Redis Cluster (``redis_type: redis_cluster``, whose
pipelines run no scripts) rows are written by Feast's code, unfenced; recstream's
``FeastConfig`` selects none of these.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal

from feast import FeatureView, RepoConfig, utils
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.infra.online_stores.redis import (
    RedisOnlineStore,
    RedisOnlineStoreConfig,
    _versioned_fv_name,
)
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from google.protobuf.timestamp_pb2 import Timestamp
from redis import RedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ConstantBackoff
from redis.retry import Retry

_Type = Literal["features.redis_store.FastFailRedisOnlineStore"]
_Row = tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]

# KEYS[1] the row's hash; ARGV: position field, partition, offset, then field/value pairs.
# Refuses (0) when the stored position is in the same partition at a later offset; a stored
# position it cannot read counts as none (the write repairs it). Sent whole with EVAL (Redis
# caches the compiled script): EVALSHA fails with NOSCRIPT after a restart or a flush.
_FENCED_HSET = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local sep = string.find(cur, ':', 1, true)
  local stored = sep and tonumber(string.sub(cur, sep + 1))
  if stored and string.sub(cur, 1, sep - 1) == ARGV[2] and stored > tonumber(ARGV[3]) then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. ARGV[3], unpack(ARGV, 4))
return 1
"""


class FastFailRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    """Feast's Redis settings plus the client's timeouts and retries."""

    type: _Type = "features.redis_store.FastFailRedisOnlineStore"  # type: ignore[assignment]
    socket_timeout_s: float = 1.0
    connect_timeout_s: float = 0.5
    retries: int = 1
    # the features holding a row's Kafka position (partition, offset): fenced writes
    position_features: tuple[str, str] | None = ("last_partition", "last_offset")


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

    def online_write_batch(self, config: RepoConfig, table: FeatureView, data: list[_Row],
                           progress: Callable[[int], Any] | None) -> None:
        self.write_fenced(config, table, data, progress)

    def write_fenced(self, config: RepoConfig, table: FeatureView, data: Sequence[_Row],
                     progress: Callable[[int], Any] | None = None) -> list[int]:
        """Write ``data``: rows with a position fenced (module docstring), the others as
        Feast writes them; return the indices of the refused rows."""
        cfg = _fast_fail(config.online_store)
        client = self._get_client(cfg)
        if isinstance(client, RedisCluster):  # its pipelines run no scripts: Feast's write
            super().online_write_batch(config, table, list(data), progress)
            return []
        positions = [_position(cfg, values) for _, values, _, _ in data]
        fenced = {i: at for i, at in enumerate(positions) if at is not None}
        if len(fenced) < len(data):
            super().online_write_batch(config, table, [r for i, r in enumerate(data)
                                                       if i not in fenced], progress)
        if not fenced:
            return []
        view = _versioned_fv_name(table, config)
        ts_field, pos_field = f"_ts:{view}", f"_pos:{view}"
        names: dict[str, bytes] = {}
        with client.pipeline(transaction=False) as pipe:
            for i, (part, offset) in fenced.items():
                entity_key, values, stamp, _ = data[i]
                key = _redis_key(config.project, entity_key,
                                 entity_key_serialization_version=(
                                     config.entity_key_serialization_version))
                ts = Timestamp()
                ts.FromDatetime(utils.make_tzaware(stamp))
                args: list[Any] = [pos_field, part, offset, ts_field, ts.SerializeToString()]
                for name, value in values.items():
                    if name not in names:
                        names[name] = _mmh3(f"{view}:{name}")
                    args += [names[name], value.SerializeToString()]
                pipe.eval(_FENCED_HSET, 1, key, *args)
                if cfg.key_ttl_seconds:
                    pipe.expire(name=key, time=cfg.key_ttl_seconds)
            results = pipe.execute()
        if cfg.key_ttl_seconds:
            results = results[::2]
        if progress:
            progress(len(fenced))
        return [i for i, written in zip(fenced, results, strict=True) if not written]

    async def _get_client_async(self, online_store_config: Any) -> Any:
        if not self._client_async:
            cfg = _fast_fail(online_store_config)
            client = await super()._get_client_async(
                cfg.model_copy(update={"connection_string": client_connection_string(cfg)}))
            client.set_retry(_async_retry(cfg))
        return self._client_async


def _position(cfg: FastFailRedisOnlineStoreConfig, values: dict[str, ValueProto]
              ) -> tuple[int, int] | None:
    """The row's (partition, offset), or None when it holds no position."""
    if cfg.position_features is None:
        return None
    part, off = (values.get(name) for name in cfg.position_features)
    if part is None or off is None or not (part.HasField("int64_val")
                                           and off.HasField("int64_val")):
        return None
    return part.int64_val, off.int64_val


def _fast_fail(config: Any) -> FastFailRedisOnlineStoreConfig:
    if not isinstance(config, FastFailRedisOnlineStoreConfig):
        raise TypeError(f"expected FastFailRedisOnlineStoreConfig, got {type(config).__name__}")
    return config
