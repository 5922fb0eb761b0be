"""Scoring candidates for serving: raw ids in, click probabilities out.

Run: ``score_candidates(load_checkpoint(dir), hist_items, hist_cats, cand_items, cand_cats)``.
Histories are oldest first; only the most recent ``max_len`` are used. Unknown ids take the
bank's OOV path, so any positive id scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from models.ranker import Ranker


def _history(items: Sequence[int], cats: Sequence[int], max_len: int
             ) -> tuple[list[int], list[int]]:
    if len(items) != len(cats):
        raise ValueError(f"{len(items)} history items but {len(cats)} categories")
    keep = max(max_len, 0)
    items, cats = list(items)[-keep:] if keep else [], list(cats)[-keep:] if keep else []
    return [int(i) for i in items], [int(c) for c in cats]


@torch.no_grad()
def score_batch(model: Ranker, users: Sequence[tuple[Sequence[int], Sequence[int],
                                                    Sequence[int], Sequence[int]]],
                max_len: int = 50) -> list[np.ndarray]:
    """Probabilities for many users at once: ``users`` holds (hist_items, hist_cats,
    cand_items, cand_cats) per user; one forward pass for all candidates, each user's
    history embedded once (and, for DIEN, its interest extractor run once)."""
    if model.training:
        model.eval()
    device = next(model.parameters()).device
    rows_items, rows_cats, counts, hists = [], [], [], []
    for hist_items, hist_cats, cand_items, cand_cats in users:
        if len(cand_items) != len(cand_cats):
            raise ValueError(f"{len(cand_items)} candidates but {len(cand_cats)} categories")
        hists.append(_history(hist_items, hist_cats, max_len))
        rows_items += [int(i) for i in cand_items]
        rows_cats += [int(c) for c in cand_cats]
        counts.append(len(cand_items))
    total = sum(counts)
    if total == 0:
        return [np.zeros(0) for _ in counts]
    width = max([len(h[0]) for h in hists] + [1])
    hist_items_t = torch.zeros(len(hists), width, dtype=torch.int64)  # (U, T)
    hist_cats_t = torch.zeros(len(hists), width, dtype=torch.int64)  # (U, T)
    for u, (items, cats) in enumerate(hists):
        if items:
            hist_items_t[u, :len(items)] = torch.tensor(items)
            hist_cats_t[u, :len(cats)] = torch.tensor(cats)
    batch = {
        "item_id": torch.tensor(rows_items, dtype=torch.int64),  # (B,)
        "cat_id": torch.tensor(rows_cats, dtype=torch.int64),  # (B,)
        "hist_item_ids": hist_items_t,
        "hist_cat_ids": hist_cats_t,
        "hist_mask": hist_items_t > 0,
        # each candidate's history row: one history per user, shared by its candidates
        "hist_row": torch.repeat_interleave(torch.arange(len(hists)), torch.tensor(counts)),
    }
    probs = torch.sigmoid(model({k: v.to(device) for k, v in batch.items()}))
    flat = probs.float().cpu().numpy().astype(np.float64)
    return list(np.split(flat, np.cumsum(counts)[:-1]))


def score_candidates(model: Ranker, hist_item_ids: Sequence[int], hist_cat_ids: Sequence[int],
                     cand_item_ids: Sequence[int], cand_cat_ids: Sequence[int],
                     max_len: int = 50) -> np.ndarray:
    """Click probabilities (one per candidate) for one user."""
    return score_batch(model, [(hist_item_ids, hist_cat_ids, cand_item_ids, cand_cat_ids)],
                       max_len)[0]
