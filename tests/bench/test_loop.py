"""The live loop: the simulated world is deterministic by seed and changes as documented; a
short run on the real stack (broker, Feast, Ray Serve, consumer, trainer) answers every
request, loses and duplicates no impression, and its report's counts match the topics."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from bench.loop import run_loop
from bench.loop_report import freshness, online_auc, plot, report
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


def test_online_auc_joins_served_scores_to_their_labels() -> None:
    preds = pd.DataFrame({"request_id": ["a", "a", "b", "b", "c", "c"],
                          "user_id": [1, 1, 2, 2, 3, 3],
                          "variant": ["x", "x", "x", "x", "y", "y"], "model_version": "v",
                          "item_id": [1, 2, 1, 3, 5, 6], "score": [0.9, 0.1, 0.2, 0.8, 0.3, 0.6]})
    samples = pd.DataFrame({"request_id": ["a", "a", "b", "b", "c", "c", None],
                            "item_id": [1, 2, 1, 3, 5, 6, 9], "user_id": [1, 1, 2, 2, 3, 3, 4],
                            "label": [1, 0, 1, 0, 0, 1, 1]})
    got = online_auc({"predictions": preds, "samples": samples})
    assert got["x"]["impressions"] == 4 and got["y"]["impressions"] == 2
    assert got["x"]["auc"] == roc_auc_score([1, 0, 1, 0], [0.9, 0.1, 0.2, 0.8]) == 0.75
    assert got["x"]["gauc"] == 0.5  # user 1 ranked right, user 2 wrong
    assert got["y"]["auc"] == 1.0


class _Registry:
    """The registry calls the freshness figures make: versions with their newest sample."""

    def versions(self, family: str) -> list[dict]:
        return [{"version": v, "sample_range": {"newest_event_ts_ms": ms}}
                for v, ms in (("first", 1_000_000), ("v1", 1_030_000), ("v2", 1_040_000))]


def test_freshness_over_the_trainers_versions_and_with_the_first_model() -> None:
    # the clients start at 1,040 s (the first model 40 s old); v1 and v2 serve 2 s later
    clients = SimpleNamespace(wall_start=1_040.0)
    served = pd.DataFrame({"t_s": [0.5, 1.0, 5.0, 6.0, 7.0, 1.0],
                           "model_version": ["first", "first", "v1", "v2", "v2", "first"],
                           "variant": ["incremental"] * 5 + ["static"],
                           "ok": [True, True, True, True, False, True]})
    got = freshness({"registry": _Registry(), "clients": clients, "first": "first"}, served)
    assert got["first_model_requests"] == 2 and got["first_model_age_s"] == 40.0
    loop_ages = [1_045.0 - 1_030.0, 1_046.0 - 1_040.0]  # v1 at 5 s, v2 at 6 s; failed left out
    assert got["p50"] == pytest.approx(np.percentile(loop_ages, 50))
    assert got["p99"] == pytest.approx(np.percentile(loop_ages, 99))
    with_first = [40.5, 41.0, *loop_ages]
    assert got["p99_all"] == pytest.approx(np.percentile(with_first, 99))


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
        # every shown item's served score, from the predictions topic, found its label
        assert result["online_auc"][arm]["impressions"] == row["impressions"]
    assert set(result["arms"]) == {"static", "incremental"}
    plot(raw, tmp_path / "loop.png")
    assert (tmp_path / "loop.png").stat().st_size > 10_000
