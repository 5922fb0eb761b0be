"""score_candidates: raw ids in, probabilities out, OOV ids included."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.inference import score_batch, score_candidates
from models.ranker import Ranker
from models.train import build_model

from .conftest import item_table


def test_one_probability_per_candidate(model: Ranker, frame: pd.DataFrame) -> None:
    items, cats = item_table(frame)
    probs = score_candidates(model, items[:5], cats[:5], items[:9], cats[:9])
    assert probs.shape == (9,) and np.all((probs > 0) & (probs < 1))


def test_unknown_ids_score_without_error(model: Ranker, frame: pd.DataFrame) -> None:
    items, cats = item_table(frame)
    new_items = [10**15, 424242, 1]
    probs = score_candidates(model, [*items[:3], 99999], [*cats[:3], 77],
                             new_items, [cats[0], cats[1], 5555])
    assert probs.shape == (3,) and np.all(np.isfinite(probs))


def test_only_the_most_recent_max_len_count(model: Ranker, frame: pd.DataFrame) -> None:
    items, cats = item_table(frame)
    full = score_candidates(model, items[:20], cats[:20], items[:4], cats[:4], max_len=6)
    recent = score_candidates(model, items[14:20], cats[14:20], items[:4], cats[:4], max_len=6)
    np.testing.assert_allclose(full, recent, rtol=1e-6)


def test_empty_history_and_batched_users(model: Ranker, frame: pd.DataFrame) -> None:
    items, cats = item_table(frame)
    users = [([], [], items[:3], cats[:3]), (items[:7], cats[:7], items[3:5], cats[3:5])]
    batched = score_batch(model, users)
    for user, got in zip(users, batched, strict=True):
        np.testing.assert_allclose(got, score_candidates(model, *user), rtol=1e-5, atol=1e-7)
    assert score_candidates(model, items[:2], cats[:2], [], []).shape == (0,)
    with pytest.raises(ValueError):
        score_candidates(model, items[:2], cats[:1], items[:1], cats[:1])


@pytest.mark.parametrize("arch", ["base", "din", "dien"])
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_shared_histories_score_as_one_history_per_candidate(arch: str, frame: pd.DataFrame,
                                                             data: st.DataObject) -> None:
    """score_batch embeds each user's history once (DIEN: runs its extractor once) and
    shares it among the user's candidates; the scores equal those of a batch with the
    history copied to every candidate row, for any history lengths (empty included)."""
    model = _fresh(arch, frame)
    items, cats = item_table(frame)
    users = []
    for _ in range(data.draw(st.integers(1, 4))):
        h = data.draw(st.lists(st.integers(0, len(items) - 1), max_size=9))
        c = data.draw(st.lists(st.integers(0, len(items) - 1), max_size=5))
        users.append(([items[i] for i in h], [cats[i] for i in h],
                      [items[i] for i in c], [cats[i] for i in c]))
    shared = score_batch(model, users)
    for user, got in zip(users, shared, strict=True):
        hist_items, hist_cats, cand_items, cand_cats = user
        if not cand_items:
            assert got.shape == (0,)
            continue
        n, t = len(cand_items), max(len(hist_items), 1)
        h = torch.zeros(n, t, dtype=torch.int64)
        hc = torch.zeros(n, t, dtype=torch.int64)
        if hist_items:
            h[:, :len(hist_items)] = torch.tensor(hist_items)
            hc[:, :len(hist_cats)] = torch.tensor(hist_cats)
        with torch.no_grad():
            copied = torch.sigmoid(model({"item_id": torch.tensor(cand_items),
                                          "cat_id": torch.tensor(cand_cats),
                                          "hist_item_ids": h, "hist_cat_ids": hc,
                                          "hist_mask": h > 0}))
        np.testing.assert_allclose(got, copied.numpy(), rtol=1e-5, atol=1e-6)


_MODELS: dict[str, Ranker] = {}


def _fresh(arch: str, frame: pd.DataFrame) -> Ranker:
    """An untrained model of ``arch`` (random weights are enough: the two paths must agree)."""
    if arch not in _MODELS:
        torch.manual_seed(0)
        _MODELS[arch] = build_model(arch, frame).eval()
    return _MODELS[arch]
