"""Mini-batch aware regularization: the penalty of the DIN paper's eq. 4 over a batch's rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.bank import CAT, ITEM, EmbeddingBank
from models.data.samples import build_samples, time_split
from models.regularization import feature_counts, mba_penalty
from models.train import TrainConfig, build_model, fit, fit_incremental

from .conftest import random_batch

ITEMS = np.array([3, 8, 21, 40, 77], dtype=np.int64)
ITEM_CATS = np.array([1, 2, 1, 2, 1], dtype=np.int64)  # the category of each item
CATS = np.array([1, 2], dtype=np.int64)


def _bank() -> EmbeddingBank:
    torch.manual_seed(0)
    return EmbeddingBank({ITEM: ITEMS, CAT: CATS}, dim=4, init_std=0.5).double()


def _by_hand(bank: EmbeddingBank, batch: dict[str, torch.Tensor],
             counts: dict[str, torch.Tensor], lam: float) -> float:
    """0.5 * lam * sum over the distinct non-padding rows of ||w||^2 / n, row by row."""
    total = 0.0
    for name, cols in ((ITEM, ("item_id", "hist_item_ids")), (CAT, ("cat_id", "hist_cat_ids"))):
        ids = {int(i) for col in cols for i in batch[col].reshape(-1).tolist()}
        for i in ids:
            row = int(bank.rows(name, torch.tensor([i]))[0])
            if row == 0:
                continue
            w = bank.tables[name].weight[row]
            total += float((w * w).sum()) / float(counts[name][row])
    return 0.5 * lam * total


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), lam=st.floats(0.01, 100.0), b=st.integers(1, 6),
       t=st.integers(1, 6))
def test_penalty_matches_the_sum_over_the_rows_the_batch_uses(seed: int, lam: float, b: int,
                                                             t: int) -> None:
    bank = _bank()
    batch = random_batch(ITEMS, ITEM_CATS, b=b, t=t, seed=seed)
    counts = feature_counts(bank, random_batch(ITEMS, ITEM_CATS, b=40, t=8, seed=seed + 1))
    got = mba_penalty(bank, batch, counts, lam)
    assert abs(float(got) - _by_hand(bank, batch, counts, lam)) <= 1e-9 * max(1.0, float(got))


def test_gradient_is_lam_w_over_n_on_used_rows_and_zero_elsewhere() -> None:
    bank = _bank()
    batch = random_batch(ITEMS, ITEM_CATS, b=2, t=2, seed=3)
    counts = {ITEM: torch.arange(1.0, len(ITEMS) + 3, dtype=torch.float64),
              CAT: torch.full((len(CATS) + 2,), 2.0, dtype=torch.float64)}
    mba_penalty(bank, batch, counts, 5.0).backward()
    for name, cols in ((ITEM, ("item_id", "hist_item_ids")), (CAT, ("cat_id", "hist_cat_ids"))):
        ids = torch.cat([batch[c].reshape(-1) for c in cols])
        used = set(bank.rows(name, ids).tolist()) - {0}
        weight = bank.tables[name].weight
        assert weight.grad is not None
        for row in range(weight.shape[0]):
            want = 5.0 * weight[row] / counts[name][row] if row in used else 0.0 * weight[row]
            torch.testing.assert_close(weight.grad[row], want.detach())


def test_feature_counts_count_candidates_and_history_positions() -> None:
    bank = _bank()
    tensors = {"item_id": torch.tensor([3, 3, 99]), "cat_id": torch.tensor([1, 1, 2]),
               "hist_item_ids": torch.tensor([[3, 8], [8, 0], [0, 0]]),
               "hist_cat_ids": torch.tensor([[1, 2], [2, 0], [0, 0]])}
    counts = feature_counts(bank, tensors)
    item_rows = bank.rows(ITEM, torch.tensor([3, 8, 21, 99]))  # 99: OOV row 1
    assert counts[ITEM][item_rows].tolist() == [3.0, 2.0, 1.0, 1.0]  # 21 unseen: at least 1
    assert counts[CAT][bank.rows(CAT, torch.tensor([1, 2]))].tolist() == [3.0, 3.0]


def test_fit_uses_the_penalty_on_full_training_and_not_on_a_frozen_bank(
        frame: pd.DataFrame) -> None:
    train, _ = time_split(build_samples(frame, max_len=10), 0.8)
    norms = []
    for lam in (0.0, 1e4):
        model = build_model("din", frame, dim=4)
        fit(model, train, TrainConfig(epochs=1, batch_size=64, lr=0.01, mba_lambda=lam,
                                      seed=0))
        norms.append(float(model.bank.tables[ITEM].weight.detach().norm()))
    assert norms[1] < 0.5 * norms[0]  # a strong pull toward zero shows in the tables
    frozen = build_model("din", frame, dim=4)
    frozen.bank.freeze()
    before = frozen.bank.tables[ITEM].weight.clone()
    fit_incremental(frozen, train, TrainConfig(epochs=1, batch_size=64, mba_lambda=1e4))
    assert torch.equal(frozen.bank.tables[ITEM].weight, before)
