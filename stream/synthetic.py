"""Synthetic users whose interests drift, with a known ground-truth click probability.

Items belong to categories; each user holds a few "current" categories and, every
``drift_every`` impressions on average, swaps one of them for another. An impression is
drawn half from the user's current interests and half at random; it is clicked with

    p = sigmoid(bias + interest_gain * [category is a current interest] + item_quality)

so a sequence model that reads the recent clicks can recover the current interests, and
the best achievable AUC is known from ``p_click``. Deterministic for a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class SyntheticConfig:
    """Shape of the synthetic world."""

    n_users: int = 500
    n_categories: int = 20
    items_per_category: int = 50
    interests_per_user: int = 3
    drift_every: int = 40
    bias: float = -2.0
    interest_gain: float = 2.5
    quality_scale: float = 0.5
    start_ts: int = 1_700_000_000
    seconds_between_events: float = 0.5
    seed: int = 7

    @property
    def n_items(self) -> int:
        return self.n_categories * self.items_per_category


def category_of(item_id: np.ndarray | int, cfg: SyntheticConfig) -> np.ndarray | int:
    """Category id (1-based) of an item id (1-based): consecutive blocks of items."""
    return (np.asarray(item_id) - 1) // cfg.items_per_category + 1


def generate(n_events: int, cfg: SyntheticConfig | None = None) -> pd.DataFrame:
    """``n_events`` impressions in time order.

    Columns: ``user_id, item_id, category_id, ts, label, p_click`` (``ts`` unix seconds,
    ``label`` 1 when clicked). The same columns as a MovieLens events frame, plus the truth.
    """
    cfg = cfg or SyntheticConfig()
    rng = np.random.default_rng(cfg.seed)
    interests = np.stack([
        rng.choice(cfg.n_categories, size=cfg.interests_per_user, replace=False) + 1
        for _ in range(cfg.n_users)
    ])  # (U, K) category ids
    quality = rng.normal(0.0, cfg.quality_scale, size=cfg.n_items + 1)

    users = rng.integers(1, cfg.n_users + 1, size=n_events)
    from_interest = rng.random(n_events) < 0.5
    drift = rng.random(n_events) < 1.0 / cfg.drift_every
    slot = rng.integers(0, cfg.interests_per_user, size=n_events)
    new_cat = rng.integers(1, cfg.n_categories + 1, size=n_events)
    pick_slot = rng.integers(0, cfg.interests_per_user, size=n_events)
    offset = rng.integers(0, cfg.items_per_category, size=n_events)
    random_item = rng.integers(1, cfg.n_items + 1, size=n_events)
    coins = rng.random(n_events)

    items = np.empty(n_events, dtype=np.int64)
    p_click = np.empty(n_events, dtype=np.float64)
    for i in range(n_events):
        u = users[i] - 1
        if drift[i]:
            interests[u, slot[i]] = new_cat[i]
        if from_interest[i]:
            cat = interests[u, pick_slot[i]]
            items[i] = (cat - 1) * cfg.items_per_category + offset[i] + 1
        else:
            items[i] = random_item[i]
        cat_i = (items[i] - 1) // cfg.items_per_category + 1
        logit = cfg.bias + cfg.interest_gain * float(cat_i in interests[u]) + quality[items[i]]
        p_click[i] = 1.0 / (1.0 + np.exp(-logit))

    ts = cfg.start_ts + (np.arange(n_events) * cfg.seconds_between_events).astype(np.int64)
    return pd.DataFrame({
        "user_id": users.astype(np.int64),
        "item_id": items,
        "category_id": np.asarray(category_of(items, cfg), dtype=np.int64),
        "ts": ts,
        "label": (coins < p_click).astype(np.int64),
        "p_click": p_click,
    })
