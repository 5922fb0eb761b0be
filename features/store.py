"""Access layer over the Feast repo: open the store, apply definitions, read and write rows.

The stream consumer writes user sequences and item categories straight to the online store
(``provider.online_write_batch`` with the feature views looked up once, values built as
protobuf directly) and reads them back with ``provider.online_read``: the rows are exactly
those a ``push`` to ``user_behavior_push`` / ``item_push`` would write, without the
DataFrame → Arrow → protobuf conversion and the registry lookups a push pays on every call
(~15 ms each in Feast 0.67). The serving path reads through the ``ranker_v1``
FeatureService. Both go through this module so that the row layout lives in one place.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

import yaml
from feast import FeatureStore, RepoConfig
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from pydantic import BaseModel

from features import definitions
from features.redis_store import FastFailRedisOnlineStore

REPO_DIR = Path(__file__).resolve().parent
_TICK = timedelta(microseconds=1)


def _store_errors() -> tuple[type[Exception], ...]:
    """What the online stores raise when they cannot be reached or written for now (not a
    missing file or a refused permission: those need a person, and a restart says so)."""
    errors: list[type[Exception]] = [sqlite3.OperationalError, ConnectionError, TimeoutError]
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # the client comes with feast[redis]
        pass
    else:
        errors += [RedisConnectionError, RedisTimeoutError]
    return tuple(errors)


# What a read or write of the online store raises when it failed for now (the SQLite file
# locked by another writer, Redis unreachable or slow); ``unavailable`` tells those apart from
# SQLite's permanent errors of the same type, and ``FeatureAccess`` raises
# ``StoreUnavailable`` for them.
STORE_ERRORS = _store_errors()
try:  # redis-py's auth errors subclass its ConnectionError, but a retry cannot mend them
    from redis.exceptions import AuthenticationError, AuthenticationWrongNumberOfArgsError
    _NEEDS_A_PERSON: tuple[type[Exception], ...] = (AuthenticationError,
                                                    AuthenticationWrongNumberOfArgsError)
except ImportError:
    _NEEDS_A_PERSON = ()
# SQLite's codes of a database another connection holds (the low byte of extended codes)
_SQLITE_FOR_NOW = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


def unavailable(err: BaseException) -> bool:
    """Whether ``err`` means the online store cannot be used for now: one of
    ``STORE_ERRORS``, and for SQLite's ``OperationalError`` a busy or locked database only
    (not a missing table or an unreadable file, which a retry cannot mend)."""
    if isinstance(err, sqlite3.OperationalError):
        code = getattr(err, "sqlite_errorcode", None)
        if code is None:  # raised by Python code, not by SQLite: judged by its message
            return "locked" in str(err) or "busy" in str(err)
        return (code & 0xFF) in _SQLITE_FOR_NOW
    return isinstance(err, STORE_ERRORS) and not isinstance(err, _NEEDS_A_PERSON)


class StoreUnavailable(Exception):
    """The online store cannot be used for now (locked, down, timed out; the store's own error
    is the cause): the stream consumer rewinds and retries its batch, the ranking service
    answers 503. Errors a retry cannot mend (a missing table or file) are raised as they are."""


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _for_now(call: Callable[_P, _R]) -> Callable[_P, _R]:
    """Raise ``StoreUnavailable`` for the errors of ``call`` that mean the store is down for
    now (:func:`unavailable`); every other error unchanged."""
    @functools.wraps(call)
    def wrapped(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return call(*args, **kwargs)
        except STORE_ERRORS as err:
            if unavailable(err):
                raise StoreUnavailable(repr(err)) from err
            raise
    return wrapped


class FeastConfig(BaseModel):
    """Where the store lives; nested in each part's settings (``*_FEAST__...`` env vars)."""

    data_dir: Path = Path(".recstream/feast")
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_connection_string: str = "127.0.0.1:6379"
    # A file holding the Redis password (its first line), added to the connection string
    # when the store is opened: keeps the secret out of env listings, ``stack status`` and
    # the Serve deployment's arguments (which Ray keeps in plain).
    redis_password_file: Path | None = None
    project: str = "recstream"

    def redis_connection(self) -> str:
        """The connection string the Redis client gets (password from the file, if any)."""
        if self.redis_password_file is None:
            return self.redis_connection_string
        lines = self.redis_password_file.read_text().splitlines()
        password = lines[0].strip() if lines else ""
        return f"{self.redis_connection_string},password={password}"


def repo_config(cfg: FeastConfig) -> RepoConfig:
    """The repo's feature_store.yaml, paths under ``cfg.data_dir``, the chosen online store."""
    raw: dict[str, Any] = yaml.safe_load((REPO_DIR / "feature_store.yaml").read_text())
    data_dir = cfg.data_dir.resolve()
    raw["project"] = cfg.project
    raw["registry"] = str(data_dir / raw["registry"])
    if cfg.online_store == "redis":
        # skip_dedup: no read of the stored stamps before each write. The stamps written
        # here are already forced past the stored ones (``_after``), so Feast's check could
        # never drop one of our rows; it cost a round trip and 13-15% of a write. The flip
        # side: a write through this config with older stamps (a `feast materialize` of
        # the offline store, which recstream never runs) would overwrite newer rows.
        # features/redis_store.py: Feast's Redis store with timeouts and one retry (fails
        # in ~1 s where redis-py's defaults took ~7 s, or hung on a Redis that hangs).
        raw["online_store"] = {"type": "features.redis_store.FastFailRedisOnlineStore",
                               "connection_string": cfg.redis_connection(),
                               "skip_dedup": True}
    else:
        raw["online_store"]["path"] = str(data_dir / raw["online_store"]["path"])
    config = RepoConfig(**raw)
    config.repo_path = data_dir
    return config


def open_store(cfg: FeastConfig) -> FeatureStore:
    """A FeatureStore on ``cfg`` (the data directory is created if missing)."""
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    (cfg.data_dir / "offline").mkdir(exist_ok=True)
    return FeatureStore(config=repo_config(cfg))


def apply_definitions(store: FeatureStore) -> None:
    """Register every object of ``features.definitions`` and create the online tables."""
    store.apply(list(definitions.ALL_OBJECTS))


@dataclass
class UserSequence:
    """A user's recent clicks, oldest first, plus the offset of the last applied event."""

    item_ids: list[int] = field(default_factory=list)
    cat_ids: list[int] = field(default_factory=list)
    ts_ms: list[int] = field(default_factory=list)
    last_partition: int = -1
    last_offset: int = -1
    updated_at: datetime | None = None


def _to_us(stamp: datetime) -> int:
    return int(stamp.timestamp()) * 1_000_000 + stamp.microsecond


def _from_us(value: Any) -> datetime | None:
    if value is None:
        return None
    return datetime.fromtimestamp(int(value) // 1_000_000, UTC) + timedelta(
        microseconds=int(value) % 1_000_000)


def _aware(stamp: datetime) -> datetime:
    """``stamp`` with UTC as its zone when it has none (the stores give naive UTC stamps)."""
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


def _after(now: datetime, previous: datetime | None) -> datetime:
    """``now``, or just past ``previous`` if that is not older (another host's clock)."""
    if previous is None:
        return now
    return max(now, _aware(previous) + _TICK)


def _key(join_key: str, value: int) -> EntityKeyProto:
    return EntityKeyProto(join_keys=[join_key], entity_values=[ValueProto(int64_val=value)])


def _int64s(values: list[int]) -> ValueProto:
    value = ValueProto()
    value.int64_list_val.val.extend(values)  # ~2.0 µs for 50 ids, the constructor ~3.3 µs
    return value


_Row = tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]
_SEQ_FEATURES = ["hist_item_ids", "hist_cat_ids", "hist_ts_ms", "last_partition", "last_offset",
                 "written_at_us"]


@dataclass(frozen=True)
class RankerInputs:
    """What a ranking request needs from the store (see ``FeatureAccess.ranker_inputs``)."""

    hist_item_ids: list[int]
    hist_cat_ids: list[int]
    cand_cat_ids: list[int]
    last_event_ms: int | None  # event time of the newest click in the sequence


# The ranker_v1 FeatureService, view by view: ranker_inputs reads these (checked at open).
_RANKER_USER = ("hist_item_ids", "hist_cat_ids")
_RANKER_ITEM = ("category_id",)


def _expired(stamp: datetime | None, ttl: timedelta | None, now: datetime) -> bool:
    if stamp is None or not ttl:
        return False
    return _aware(stamp) < now - ttl


class FeatureAccess:
    """Reads and writes recstream's feature rows on one FeatureStore."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self._ranker = store.get_feature_service("ranker_v1")
        # Looked up once: a push looks its feature views up in the registry on every call.
        self._user_fv = store.get_feature_view("user_behavior_fv")
        self._item_fv = store.get_feature_view("item_fv")
        served = {p.name: tuple(f.name for f in p.features)
                  for p in self._ranker.feature_view_projections}
        if served != {"user_behavior_fv": _RANKER_USER, "item_fv": _RANKER_ITEM}:
            raise RuntimeError(f"ranker_v1 serves {served}: FeatureAccess.ranker_inputs reads "
                               "the old contract; change it with the service")

    @classmethod
    def open(cls, cfg: FeastConfig) -> FeatureAccess:
        return cls(open_store(cfg))

    @_for_now
    def read_sequences(self, user_ids: Iterable[int]) -> dict[int, UserSequence]:
        """Current sequences of ``user_ids``; users with no row are absent from the result."""
        ids = sorted(set(int(u) for u in user_ids))
        if not ids:
            return {}
        rows = self.store.provider.online_read(
            self.store.config, self._user_fv, [_key("user_id", u) for u in ids], _SEQ_FEATURES)
        out: dict[int, UserSequence] = {}
        for uid, (_, values) in zip(ids, rows, strict=True):
            if not values or not values["last_offset"].HasField("int64_val"):
                continue
            out[uid] = UserSequence(  # a slice copies to a list in ~0.65x the time of list()
                item_ids=values["hist_item_ids"].int64_list_val.val[:],
                cat_ids=values["hist_cat_ids"].int64_list_val.val[:],
                ts_ms=values["hist_ts_ms"].int64_list_val.val[:],
                last_partition=values["last_partition"].int64_val,
                last_offset=values["last_offset"].int64_val,
                updated_at=_from_us(values["written_at_us"].int64_val
                                    if values["written_at_us"].HasField("int64_val") else None),
            )
        return out

    @_for_now
    def write_sequences(self, sequences: Mapping[int, UserSequence]) -> set[int]:
        """One online write of all ``sequences`` (the rows a push would write); return the
        users whose row the store refused because it holds a later Kafka position of the same
        partition (Redis: :mod:`features.redis_store`; SQLite refuses none).

        Each row's timestamp is the write time, forced strictly past the row's previous
        one (``updated_at``, read back from the row's ``written_at_us``): the Redis store
        drops a write whose timestamp is not newer than the stored one, and the previous
        writer may have been another host with a clock ahead of ours.
        """
        if not sequences:
            return set()
        now = datetime.now(UTC)
        rows: list[_Row] = []
        for uid, seq in sequences.items():
            stamp = _after(now, seq.updated_at)
            seq.updated_at = stamp
            values = {
                "hist_item_ids": _int64s(seq.item_ids),
                "hist_cat_ids": _int64s(seq.cat_ids),
                "hist_ts_ms": _int64s(seq.ts_ms),
                "last_partition": ValueProto(int64_val=seq.last_partition),
                "last_offset": ValueProto(int64_val=seq.last_offset),
                "written_at_us": ValueProto(int64_val=_to_us(stamp)),
            }
            rows.append((_key("user_id", int(uid)), values, stamp, None))
        online = self.store.provider.online_store
        if isinstance(online, FastFailRedisOnlineStore):
            users = list(sequences)
            refused = online.write_fenced(self.store.config, self._user_fv, rows)
            return {int(users[i]) for i in refused}
        self.store.provider.online_write_batch(self.store.config, self._user_fv, rows, None)
        return set()

    @_for_now
    def write_items(self, categories: Mapping[int, int]) -> None:
        """Record each item's category (one read of the stored stamps, one online write).

        As for sequences, each row's timestamp is forced strictly past the stored one, so a
        category change written by a host whose clock is behind the previous writer's is
        not dropped by the Redis store.
        """
        if not categories:
            return
        items = [int(i) for i in categories]
        keys = [_key("item_id", i) for i in items]
        stored = self.store.provider.online_read(self.store.config, self._item_fv, keys,
                                                 ["category_id"])
        now = datetime.now(UTC)
        rows: list[_Row] = [
            (key, {"category_id": ValueProto(int64_val=int(categories[item]))},
             _after(now, ts), None)
            for item, key, (ts, _) in zip(items, keys, stored, strict=True)]
        self.store.provider.online_write_batch(self.store.config, self._item_fv, rows, None)

    @_for_now
    def ranker_inputs(self, user_id: int, item_ids: Sequence[int]) -> RankerInputs:
        """The ``ranker_v1`` features of one request and the time of the user's last event.

        Two reads of the online store (the user's row, the candidates' rows), Feast's
        ``online_read`` as ``get_online_features`` does, without its per-row work (a
        200-candidate request read 200 user keys that way). Rows past their view's TTL count
        as missing, as there. A user with no clicks yet has an empty history; an item never
        seen gets category 0.
        """
        config, provider = self.store.config, self.store.provider
        now = datetime.now(UTC)
        [(ts, user)] = provider.online_read(config, self._user_fv, [_key("user_id", user_id)],
                                            [*_RANKER_USER, "hist_ts_ms"])
        if not user or _expired(ts, self._user_fv.ttl, now):
            user = {}
        items = provider.online_read(config, self._item_fv,
                                     [_key("item_id", int(i)) for i in item_ids],
                                     list(_RANKER_ITEM)) if len(item_ids) else []
        cats = [int(v["category_id"].int64_val) if v and "category_id" in v
                and not _expired(t, self._item_fv.ttl, now) else 0 for t, v in items]
        stamps = user["hist_ts_ms"].int64_list_val.val if "hist_ts_ms" in user else []
        return RankerInputs(
            hist_item_ids=user["hist_item_ids"].int64_list_val.val[:] if user else [],
            hist_cat_ids=user["hist_cat_ids"].int64_list_val.val[:] if user else [],
            cand_cat_ids=cats, last_event_ms=int(stamps[-1]) if len(stamps) else None)

    def ranker_features(
        self, user_id: int, item_ids: Sequence[int]
    ) -> tuple[list[int], list[int], list[int]]:
        """Inputs of ``ranker_v1`` for one request: (hist items, hist cats, candidate cats)."""
        got = self.ranker_inputs(user_id, item_ids)
        return got.hist_item_ids, got.hist_cat_ids, got.cand_cat_ids
