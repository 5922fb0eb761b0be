"""Fixtures of the model tests: tiny models, tiny batches and a planted-pattern events frame."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import torch

from models.ranker import Ranker
from models.train import build_model


@pytest.fixture(autouse=True, scope="module")
def _few_threads() -> Iterator[None]:
    """Keep the model tests light on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def planted_frame(n_users: int = 120, events_per_user: int = 40, n_items: int = 60,
                  n_cats: int = 4, seed: int = 0) -> pd.DataFrame:
    """Events where each user clicks (p = 0.9) items of their favourite category, else 0.1."""
    rng = np.random.default_rng(seed)
    item_ids = np.arange(1, n_items + 1) * 7  # raw ids: not 0..n-1 on purpose
    item_cat = rng.integers(1, n_cats + 1, size=n_items) * 100
    fav = rng.integers(1, n_cats + 1, size=n_users) * 100
    n = n_users * events_per_user
    users = np.repeat(np.arange(1, n_users + 1), events_per_user)
    pick = rng.integers(0, n_items, size=n)
    p = np.where(item_cat[pick] == fav[users - 1], 0.9, 0.1)
    frame = pd.DataFrame({"user_id": users, "item_id": item_ids[pick],
                          "category_id": item_cat[pick], "ts": rng.permutation(n),
                          "label": (rng.random(n) < p).astype(np.int64)})
    return frame.sort_values("ts", kind="mergesort").reset_index(drop=True)


@pytest.fixture(scope="session")
def frame() -> pd.DataFrame:
    return planted_frame()


def random_batch(bank_items: np.ndarray, bank_cats: np.ndarray, b: int = 6, t: int = 7,
                 seed: int = 0, negatives: bool = True) -> dict[str, torch.Tensor]:
    """A right-padded batch of known raw ids with random history lengths (some zero)."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(0, t + 1, size=b)
    lens[0] = t
    mask = np.arange(t)[None, :] < lens[:, None]
    pick = rng.integers(0, len(bank_items), size=(b, t))
    neg = rng.integers(0, len(bank_items), size=(b, t))
    cand = rng.integers(0, len(bank_items), size=b)
    batch = {
        "item_id": torch.from_numpy(bank_items[cand]),
        "cat_id": torch.from_numpy(bank_cats[cand]),
        "hist_item_ids": torch.from_numpy(np.where(mask, bank_items[pick], 0)),
        "hist_cat_ids": torch.from_numpy(np.where(mask, bank_cats[pick], 0)),
        "hist_mask": torch.from_numpy(mask),
    }
    if negatives:
        batch["neg_item_ids"] = torch.from_numpy(np.where(mask, bank_items[neg], 0))
        batch["neg_cat_ids"] = torch.from_numpy(np.where(mask, bank_cats[neg], 0))
    return batch


def item_table(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Known (item ids, their categories) of a frame."""
    pairs = frame.drop_duplicates("item_id")
    return pairs["item_id"].to_numpy(np.int64), pairs["category_id"].to_numpy(np.int64)


@pytest.fixture(params=["base", "din", "dien"])
def model(request: pytest.FixtureRequest, frame: pd.DataFrame) -> Ranker:
    """A tiny untrained model of each architecture, in eval mode."""
    torch.manual_seed(0)
    m = build_model(request.param, frame, dim=4)
    return m.eval()


@pytest.fixture
def batch(frame: pd.DataFrame) -> dict[str, torch.Tensor]:
    return random_batch(*item_table(frame))
