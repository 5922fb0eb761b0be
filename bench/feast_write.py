"""Benchmark of the stream consumer's Feast write: recstream's online stores against Feast's.

Run: ``recstream bench feast --json bench/results/feast_write.json`` (or ``python -m
bench.feast_write --json PATH [--users 500 8000] [--rounds 8]``).

One write = ``FeatureAccess.write_sequences`` of N users with full sequences (50 clicks),
what one micro-batch of the consumer writes: building the protobuf rows plus the online
store's ``online_write_batch``. Variants, each on its own fresh Feast project:

* ``sqlite_feast``: Feast 0.67's ``SqliteOnlineStore`` (one ``execute`` per feature row);
* ``sqlite_batched``: ``features.sqlite_store.BatchedSqliteOnlineStore`` (the default);
* ``redis_feast_dedup``: Feast's own Redis store with its stamp check (a read before each
  write);
* ``redis_feast``: the same with ``skip_dedup`` (recstream's setting until 2026-12-05);
* ``redis_fenced``: ``features.redis_store.FastFailRedisOnlineStore`` (the default since):
  each sequence row written by a Lua script that refuses an older Kafka position (the Redis
  variants are skipped without a Redis server; before 2026-12-05 they were named
  ``redis_dedup`` and ``redis_skip_dedup``).

The variants are run in turn, ``--rounds`` writes each per turn and three turns, so that the
host's drift hits them alike; the figures are medians over all writes but each project's
first (table creation, cold pages). The GC runs as in the consumer (``freeze_startup_heap``).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

from feast.infra.online_stores.redis import RedisOnlineStore
from feast.infra.online_stores.sqlite import SqliteOnlineStore

from bench import write_result
from bench.progress import Phases
from features.store import FeastConfig, FeatureAccess, UserSequence, apply_definitions, open_store
from stream.gcfreeze import freeze_startup_heap
from stream.localservices import redis_up

TURNS = 3
REDIS_VARIANTS = ["redis_feast_dedup", "redis_feast", "redis_fenced"]


def _sequences(n_users: int, seed: int = 1) -> dict[int, UserSequence]:
    rnd = random.Random(seed)
    return {u: UserSequence(item_ids=[rnd.randrange(1682) for _ in range(50)],
                            cat_ids=[rnd.randrange(19) for _ in range(50)],
                            ts_ms=sorted(rnd.randrange(10**12) for _ in range(50)),
                            last_partition=u % 4, last_offset=rnd.randrange(10**6))
            for u in range(n_users)}


def _open(root: Path, variant: str) -> FeatureAccess:
    kind = "redis" if variant.startswith("redis") else "sqlite"
    store = open_store(FeastConfig(data_dir=root / variant, online_store=kind,
                                   project=f"fw{uuid.uuid4().hex[:8]}"))
    apply_definitions(store)
    if variant == "sqlite_feast":
        # The local provider's store instance (private in Feast 0.67): Feast's own class.
        store.provider._online_store = SqliteOnlineStore()  # type: ignore[attr-defined]
        if type(store.provider.online_store) is not SqliteOnlineStore:
            raise RuntimeError("could not put Feast's own SQLite store in place")
    if variant.startswith("redis_feast"):
        store.provider._online_store = RedisOnlineStore()  # type: ignore[attr-defined]
    if variant == "redis_feast_dedup":
        store.config.online_store.skip_dedup = False
    return FeatureAccess(store)


def _timed(write: Callable[[], object], rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        write()
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def run(users: list[int], rounds: int, variants: list[str]) -> dict[str, Any]:
    """Medians (ms a write, µs a user row) of every variant and user count."""
    with (tempfile.TemporaryDirectory(prefix="recstream-feast-bench-") as tmp,
          Phases("bench feast", total=len(users) * TURNS) as phases):
        return {f"users_{n}": _one(Path(tmp) / str(n), n, rounds, variants, phases)
                for n in users}


def _one(root: Path, n: int, rounds: int, variants: list[str], phases: Phases
         ) -> dict[str, Any]:
    seqs = _sequences(n)
    stores: dict[str, FeatureAccess] = {}
    try:
        for v in variants:
            stores[v] = _open(root, v)
        for access in stores.values():
            access.write_sequences(seqs)  # creates the rows: later writes are updates
        runs: dict[str, list[float]] = {v: [] for v in variants}
        for turn in range(TURNS):
            phases(f"{n} users, turn {turn + 1}/{TURNS}")
            for v, access in stores.items():
                runs[v] += _timed(partial(access.write_sequences, seqs), rounds)
        per: dict[str, Any] = {
            v: {"median_ms": round(statistics.median(r), 2),
                "us_per_user": round(statistics.median(r) * 1000.0 / n, 2),
                "runs_ms": [round(x, 2) for x in r]} for v, r in runs.items()}
        if "sqlite_feast" in per:
            per["sqlite_batched_over_feast"] = round(
                per["sqlite_batched"]["median_ms"] / per["sqlite_feast"]["median_ms"], 3)
        if "redis_feast" in per and "redis_fenced" in per:
            per["redis_fenced_over_feast"] = round(
                per["redis_fenced"]["median_ms"] / per["redis_feast"]["median_ms"], 3)
        return per
    finally:
        for access in stores.values():
            access.store.teardown()  # Redis: this project's keys go


def main(argv: list[str] | None = None) -> int:
    """``recstream bench feast --json PATH``: run the benchmark, print and write the JSON."""
    p = argparse.ArgumentParser(prog="recstream bench feast", description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, help="write the result here")
    p.add_argument("--users", type=int, nargs="+", default=[500, 8000],
                   help="users a write (500: the stream benchmark's batches; 8000: 50k users)")
    p.add_argument("--rounds", type=int, default=8, help="writes per variant and turn")
    args = p.parse_args(argv)
    variants = ["sqlite_feast", "sqlite_batched"]
    if redis_up():
        variants += REDIS_VARIANTS
    load_before = list(os.getloadavg())
    freeze_startup_heap()  # the consumer's GC regime: start-up heap frozen, rare full passes
    result = {
        "what": "FeatureAccess.write_sequences of N users (50 clicks each): ms a write",
        "variants": variants, "turns": TURNS, "rounds": args.rounds,
        **run(args.users, args.rounds, variants),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "feast": version("feast"),
                    "load_average_before": load_before, "load_average": list(os.getloadavg()),
                    "redis": "127.0.0.1:6379" if "redis_fenced" in variants else None},
    }
    print(write_result(result, args.json))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
