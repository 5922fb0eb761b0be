"""The simulated world of the live loop: users who click on what they are shown, by rules
that change while the loop runs. Deterministic by seed.

Run: ``world = World(WorldConfig(seed=7))``; ``world.candidates(user, t)`` draws a request's
candidates, ``world.p_click(user, items, t)`` gives the true click probabilities at time
``t`` (seconds since the start), ``world.history(user)`` the user's recent clicks, and
``world.record_click(user, item)`` updates it. ``world.logged(n)`` simulates a pre-period
of random exposure (an events frame) to train the first model on.

The rules (``p = sigmoid(logit)``):

* ``logit = bias + interest * [category is one of the user's interests]
  + recency(t) * [category is among the user's last 5 clicked categories]
  + quality[item] + trend(t)[category]``;
* **trends**: every ``trend_period_s`` a new set of ``hot_categories`` categories (drawn from
  the seed and the period's index) adds ``trend_gain`` for everyone, until the next period;
  a model frozen before a trend cannot know which categories are hot, a top network retrained
  every few seconds can learn it from the category embeddings it already has. The loop runs
  on a compressed clock (an update every 5 s where production updates every few minutes), so
  what keeps a trend realistic is its length in updates: 180 s is 36 updates, as a 3-hour
  trend is at an update every 5 minutes (a sale, a news cycle). The first loops used 40 s
  (8 updates: a trend over before the replay buffer had seen it whole), where retraining
  could not show a gain (docs/log/loop-benchmark-runs.md);
* **recency shift**: ``recency(t)`` steps from ``recency_before`` to ``recency_after`` at
  ``shift_at_s``: how much the last clicks matter changes mid-run;
* **new items**: ``new_items`` items (ids above the initial catalogue, so out of the first
  bank's vocabulary: OOV until a full refresh) enter at ``new_items_at_s``, with a quality
  bonus ``new_item_gain`` (novelty), and are offered from then on.

Candidates of a request: half from the user's interests, half from the whole catalogue
(new items included once they exist).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class WorldConfig:
    """The world's sizes and rules (see the module docstring)."""

    n_users: int = 400
    n_categories: int = 12
    items_per_category: int = 25
    interests_per_user: int = 2
    bias: float = -2.6
    interest: float = 1.2
    recency_before: float = 0.4
    recency_after: float = 1.6
    shift_at_s: float = 120.0
    quality_scale: float = 0.4
    trend_period_s: float = 180.0
    hot_categories: int = 3
    trend_gain: float = 1.6
    new_items: int = 30
    new_items_at_s: float = 60.0
    new_item_gain: float = 0.5
    candidates: int = 20
    seed: int = 7

    @property
    def n_items(self) -> int:
        return self.n_categories * self.items_per_category


class World:
    """Users, items and the click rules of :class:`WorldConfig`."""

    def __init__(self, cfg: WorldConfig | None = None) -> None:
        self.cfg = cfg = cfg or WorldConfig()
        rng = np.random.default_rng(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed + 1)
        self.interests = np.stack([rng.choice(cfg.n_categories, cfg.interests_per_user,
                                              replace=False) + 1 for _ in range(cfg.n_users)])
        total = cfg.n_items + cfg.new_items
        self.quality = rng.normal(0.0, cfg.quality_scale, total + 1)
        self.quality[cfg.n_items + 1:] += cfg.new_item_gain
        # new items take categories round-robin
        self.category = np.zeros(total + 1, np.int64)
        self.category[1:cfg.n_items + 1] = np.arange(cfg.n_items) // cfg.items_per_category + 1
        self.category[cfg.n_items + 1:] = np.arange(cfg.new_items) % cfg.n_categories + 1
        self.recent: dict[int, deque[int]] = {}

    def hot(self, t: float) -> np.ndarray:
        """The hot categories at time ``t`` (drawn from the seed and the period's index)."""
        period = int(max(t, 0.0) // self.cfg.trend_period_s)
        rng = np.random.default_rng([self.cfg.seed, period])
        return rng.choice(self.cfg.n_categories, self.cfg.hot_categories, replace=False) + 1

    def items_at(self, t: float) -> int:
        """The highest item id on offer at ``t``."""
        cfg = self.cfg
        return cfg.n_items + (cfg.new_items if t >= cfg.new_items_at_s else 0)

    def candidates(self, user: int, t: float) -> list[int]:
        """A request's candidates (distinct item ids)."""
        cfg = self.cfg
        n_own = cfg.candidates // 2
        cats = self.rng.choice(self.interests[user - 1], n_own)
        own = (cats - 1) * cfg.items_per_category + self.rng.integers(
            1, cfg.items_per_category + 1, n_own)
        anyone = self.rng.integers(1, self.items_at(t) + 1, cfg.candidates - n_own)
        return list(dict.fromkeys(int(i) for i in np.concatenate([own, anyone])))

    def p_click(self, user: int, items: list[int], t: float) -> np.ndarray:
        """True click probabilities of ``items`` for ``user`` at ``t``."""
        cfg = self.cfg
        ids = np.asarray(items, np.int64)
        cats = self.category[ids]
        recency = cfg.recency_after if t >= cfg.shift_at_s else cfg.recency_before
        recent = set(self.category[list(self.recent.get(user, ()))].tolist())
        logit = (cfg.bias + cfg.interest * np.isin(cats, self.interests[user - 1])
                 + recency * np.isin(cats, list(recent)) + self.quality[ids]
                 + cfg.trend_gain * np.isin(cats, self.hot(t)))
        return 1.0 / (1.0 + np.exp(-logit))

    def record_click(self, user: int, item: int) -> None:
        self.recent.setdefault(user, deque(maxlen=5)).append(item)

    def clicks(self, p: np.ndarray) -> np.ndarray:
        """Draws of the clicks of shown items with true probabilities ``p``."""
        return self.rng.random(len(p)) < p

    def logged(self, n: int, t0: float = -600.0, start_ts: int = 1_700_000_000
               ) -> pd.DataFrame:
        """``n`` impressions of random exposure over the ``600`` s before the start: the
        events frame (user_id, item_id, category_id, ts, label) the first model trains on."""
        rows = []
        for k in range(n):
            t = t0 + 600.0 * k / n
            user = int(self.rng.integers(1, self.cfg.n_users + 1))
            item = int(self.rng.choice(self.candidates(user, t)))
            clicked = bool(self.clicks(self.p_click(user, [item], t))[0])
            if clicked:
                self.record_click(user, item)
            rows.append((user, item, int(self.category[item]), start_ts + math.floor(t - t0),
                         int(clicked)))
        self.recent.clear()
        return pd.DataFrame(rows, columns=["user_id", "item_id", "category_id", "ts", "label"])
