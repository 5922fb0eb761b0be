"""bench.feast_write: a short real run on SQLite (and Redis when one listens) reports a
median for every variant and user count, and the variants leave the same rows."""

from __future__ import annotations

from pathlib import Path

from bench.feast_write import REDIS_VARIANTS, _open, _sequences, run
from infra.stack import redis_up


def test_a_short_run_reports_every_variant() -> None:
    variants = ["sqlite_feast", "sqlite_batched"]
    if redis_up():
        variants += REDIS_VARIANTS
    out = run([40], rounds=2, variants=variants)
    per = out["users_40"]
    for v in variants:
        assert per[v]["median_ms"] > 0 and len(per[v]["runs_ms"]) == 2 * 3
    assert per["sqlite_batched_over_feast"] == round(
        per["sqlite_batched"]["median_ms"] / per["sqlite_feast"]["median_ms"], 3)


def test_every_variant_reads_back_what_was_written(tmp_path: Path) -> None:
    seqs = _sequences(30)
    variants = ["sqlite_feast", "sqlite_batched"] + (
        REDIS_VARIANTS if redis_up() else [])
    for v in variants:
        access = _open(tmp_path, v)
        try:
            access.write_sequences(seqs)
            back = access.read_sequences(seqs)
            assert {u: s.item_ids for u, s in back.items()} == {
                u: s.item_ids for u, s in seqs.items()}
        finally:
            access.store.teardown()
