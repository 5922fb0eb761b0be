"""The vectorised GAUC (models/metrics.py) against scikit-learn's AUC computed user by user,
on random inputs with many ties (predictions on a coarse grid, users with one class)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from models.metrics import gauc


def gauc_by_user(user_ids: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> float:
    """The definition: each user's ``roc_auc_score`` weighted by the user's samples."""
    total, weight = 0.0, 0
    for u in np.unique(user_ids):
        mine = user_ids == u
        if labels[mine].min() == labels[mine].max():
            continue
        total += roc_auc_score(labels[mine], probs[mine]) * int(mine.sum())
        weight += int(mine.sum())
    return total / weight if weight else math.nan


@st.composite
def scored(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = draw(st.integers(1, 300))
    seed = draw(st.integers(0, 2**32 - 1))
    users = draw(st.integers(1, 40))
    levels = draw(st.sampled_from([2, 5, 20, 10_000]))  # few levels: many tied predictions
    rng = np.random.default_rng(seed)
    user_ids = rng.choice(np.arange(users) * 7 + 1000, n)  # ids neither dense nor from 0
    probs = rng.integers(0, levels, n).astype(np.float32) / levels
    labels = (rng.random(n) < draw(st.floats(0.0, 1.0))).astype(np.int64)
    return user_ids, labels, probs


@settings(max_examples=300, deadline=None)
@given(scored())
def test_gauc_equals_roc_auc_score_user_by_user(case: tuple[np.ndarray, ...]) -> None:
    user_ids, labels, probs = case
    got, want = gauc(user_ids, labels, probs), gauc_by_user(user_ids, labels, probs)
    assert (math.isnan(got) and math.isnan(want)) or math.isclose(got, want, abs_tol=1e-12)
