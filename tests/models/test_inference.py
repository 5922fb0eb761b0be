"""score_candidates: raw ids in, probabilities out, OOV ids included."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.inference import score_batch, score_candidates
from models.ranker import Ranker

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
