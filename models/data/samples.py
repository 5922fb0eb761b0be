"""Training samples from an events frame: each event with the user's earlier clicks.

``build_samples(frame, max_len)`` gives, for every event (in time order), its history: the
same user's earlier clicked (label 1) items, the most recent ``max_len``, oldest first,
right-padded with id 0 (``hist_len`` real positions), their categories, and for DIEN's
auxiliary loss one negative per position sampled uniformly from the items the user had not
clicked before the event (or from all non-clicked events when the user has none yet).
Everything is vectorised with numpy: no per-event Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import torch

REQUIRED = ("user_id", "item_id", "category_id", "ts", "label")


@dataclass
class SampleSet:
    """Samples in time order; (N,) per event and (N, T) per history position."""

    user_id: np.ndarray
    item_id: np.ndarray
    cat_id: np.ndarray
    label: np.ndarray
    ts: np.ndarray
    hist_item: np.ndarray
    hist_cat: np.ndarray
    hist_len: np.ndarray
    neg_item: np.ndarray
    neg_cat: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    @property
    def max_len(self) -> int:
        return int(self.hist_item.shape[1])

    def subset(self, index: slice | np.ndarray) -> SampleSet:
        """The samples at ``index`` (a slice or an index array)."""
        return SampleSet(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def tensors(self) -> dict[str, torch.Tensor]:
        """All arrays as torch tensors (shared memory), under the batch-format names."""
        return {
            "item_id": torch.from_numpy(self.item_id),
            "cat_id": torch.from_numpy(self.cat_id),
            "hist_item_ids": torch.from_numpy(self.hist_item),
            "hist_cat_ids": torch.from_numpy(self.hist_cat),
            "hist_len": torch.from_numpy(self.hist_len),
            "neg_item_ids": torch.from_numpy(self.neg_item),
            "neg_cat_ids": torch.from_numpy(self.neg_cat),
            "label": torch.from_numpy(self.label),
        }


def make_batch(tensors: Mapping[str, torch.Tensor], index: torch.Tensor | slice,
               negatives: bool = False, device: str | torch.device = "cpu"
               ) -> dict[str, torch.Tensor]:
    """The model batch (see models.ranker) of rows ``index``, trimmed to its longest history."""
    lens = tensors["hist_len"][index]
    width = max(int(lens.max()), 1) if len(lens) else 1
    keys = ["item_id", "cat_id", "hist_item_ids", "hist_cat_ids", "label"]
    if negatives:
        keys += ["neg_item_ids", "neg_cat_ids"]
    batch = {}
    for key in keys:
        value = tensors[key][index]
        batch[key] = value[:, :width].contiguous() if value.dim() == 2 else value  # (B, T')
    batch["hist_mask"] = torch.arange(width) < lens.unsqueeze(1)  # (B, T')
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _window(starts: np.ndarray, lens: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, max_len) indices ``starts + t`` and the mask ``t < lens``."""
    steps = np.arange(max_len)
    mask = steps[None, :] < lens[:, None]  # (N, T)
    return np.where(mask, starts[:, None] + steps[None, :], 0), mask


def build_samples(frame: pd.DataFrame, max_len: int = 50, seed: int = 0) -> SampleSet:
    """Samples of every event of the events ``frame`` (time order kept).

    Run: ``build_samples(load_movielens(path), max_len=50)``.
    """
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(f"events frame lacks columns {missing}")
    n = len(frame)
    users = frame["user_id"].to_numpy(np.int64)
    items = frame["item_id"].to_numpy(np.int64)
    cats = frame["category_id"].to_numpy(np.int64)
    labels = frame["label"].to_numpy(np.int64)
    order = np.argsort(users, kind="stable")  # grouped by user, time order inside
    u, it, ct, lb = users[order], items[order], cats[order], labels[order]
    first = np.r_[True, u[1:] != u[:-1]] if n else np.zeros(0, bool)
    group_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))

    def before(flag: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exclusive running count of ``flag`` over all rows, and per user."""
        excl = np.cumsum(flag) - flag
        return excl, excl - excl[group_start]

    click = lb == 1
    click_excl, n_clicks = before(click.astype(np.int64))
    hist_len = np.minimum(n_clicks, max_len)
    idx, mask = _window(click_excl - hist_len, hist_len, max_len)
    clicked_items, clicked_cats = it[click], ct[click]
    if len(clicked_items) == 0:
        clicked_items = clicked_cats = np.zeros(1, np.int64)
    hist_item = np.where(mask, clicked_items[idx], 0)
    hist_cat = np.where(mask, clicked_cats[idx], 0)

    # Negatives (DIEN's auxiliary loss): the user's own earlier non-clicked items; a user with
    # none yet draws from every user's earlier non-clicks (never from later events: those
    # hold the test period's labels); with none at all the slot is padding (item 0).
    rng = np.random.default_rng(seed)
    nonclick = ~click
    pool_items, pool_cats = it[nonclick], ct[nonclick]
    non_excl, n_non = before(nonclick.astype(np.int64))
    time_non = labels != 1  # in time (row) order
    all_items, all_cats = items[time_non], cats[time_non]
    n_earlier = (np.cumsum(time_non) - time_non)[order]  # earlier non-clicks of anyone
    draw = rng.random((n, max_len))
    own = n_non[:, None] > 0
    pick_own = non_excl[:, None] - n_non[:, None] + (draw * n_non[:, None]).astype(np.int64)
    pick_any = (draw * n_earlier[:, None]).astype(np.int64)  # (N, T)
    n_pool = len(pool_items)  # == len(all_items): the same non-clicks, by user / by time
    last = max(n_pool - 1, 0)
    own_item = pool_items[np.clip(pick_own, 0, last)] if n_pool else 0
    own_cat = pool_cats[np.clip(pick_own, 0, last)] if n_pool else 0
    any_item = all_items[np.clip(pick_any, 0, last)] if n_pool else 0
    any_cat = all_cats[np.clip(pick_any, 0, last)] if n_pool else 0
    some = n_earlier[:, None] > 0
    neg_item = np.where(mask, np.where(own, own_item, np.where(some, any_item, 0)), 0)
    neg_cat = np.where(mask, np.where(own, own_cat, np.where(some, any_cat, 0)), 0)

    inv = np.empty_like(order)
    inv[order] = np.arange(n)
    return SampleSet(
        user_id=users, item_id=items, cat_id=cats, label=labels,
        ts=frame["ts"].to_numpy(np.int64),
        hist_item=hist_item[inv], hist_cat=hist_cat[inv], hist_len=hist_len[inv],
        neg_item=neg_item[inv], neg_cat=neg_cat[inv])


def time_split(samples: SampleSet, train_frac: float = 0.8) -> tuple[SampleSet, SampleSet]:
    """(train, test): the first ``train_frac`` of the samples in time order, and the rest."""
    cut = round(len(samples) * train_frac)
    return samples.subset(slice(0, cut)), samples.subset(slice(cut, len(samples)))
