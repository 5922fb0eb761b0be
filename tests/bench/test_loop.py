"""The live loop: the simulated world is deterministic by seed and changes as documented; a
short run on the real stack (broker, Feast, Ray Serve, consumer, trainer) answers every
request, loses and duplicates no impression, and its report's counts match the topics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.loop import run_loop
from bench.loop_report import plot, report
from bench.world import World, WorldConfig


def test_the_world_is_deterministic_by_seed() -> None:
    a, b, c = World(WorldConfig(seed=3)), World(WorldConfig(seed=3)), World(WorldConfig(seed=4))
    first = a.logged(300)
    assert first.equals(b.logged(300))
    assert not first.equals(c.logged(300))
    for t in (0.0, 55.0, 130.0):
        assert a.candidates(5, t) == b.candidates(5, t)
        assert np.array_equal(a.p_click(5, list(range(1, 40)), t),
                              b.p_click(5, list(range(1, 40)), t))


def test_the_world_changes_as_documented() -> None:
    cfg = WorldConfig(seed=3)
    w = World(cfg)
    assert not np.array_equal(w.hot(0.0), w.hot(cfg.trend_period_s + 1))
    assert np.array_equal(w.hot(0.0), w.hot(cfg.trend_period_s - 1))
    assert w.items_at(0.0) == cfg.n_items < w.items_at(cfg.new_items_at_s)
    hot = int(w.hot(0.0)[0])
    item = (hot - 1) * cfg.items_per_category + 1
    later = cfg.trend_period_s * 7  # a period where that category is not hot
    while hot in w.hot(later):
        later += cfg.trend_period_s
    assert w.p_click(1, [item], 0.0)[0] > w.p_click(1, [item], later)[0]
    calm = World(WorldConfig(seed=3, trend_gain=0.0))  # recency alone
    calm.record_click(1, item)  # the last clicks matter more after the shift
    before = calm.p_click(1, [item + 1], cfg.shift_at_s - 1)[0]
    after = calm.p_click(1, [item + 1], cfg.shift_at_s + 1)[0]
    assert after > before
    assert calm.p_click(2, [item + 1], cfg.shift_at_s + 1)[0] < after  # no such click


@pytest.mark.integration
def test_a_short_live_loop_matches_its_topics(tmp_path: Path) -> None:
    raw = run_loop(0.3, warmup_events=2000, clients=2, interval_s=3.0, log=lambda _: None)
    result = report(raw)
    served = raw["clients"].served
    assert result["requests"] == len(served) > 30
    assert result["failed_requests"] == 0
    assert result["lost"] == 0 and result["duplicated"] == 0
    samples = raw["samples"].dropna(subset=["request_id"])
    assert result["impressions_sent"] == raw["clients"].impressions == len(samples)
    for arm, row in result["arms"].items():
        mine = samples[samples.variant == arm]
        assert row["impressions"] == len(mine) and row["clicks"] == int(mine.label.sum())
        assert row["clicks"] == sum(s.clicks for s in served if s.variant == arm)
    assert set(result["arms"]) == {"static", "incremental"}
    plot(raw, tmp_path / "loop.png")
    assert (tmp_path / "loop.png").stat().st_size > 10_000
