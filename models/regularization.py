"""Mini-batch aware regularization of the embedding tables (DIN paper, section 4.3.1, eq. 4).

An L2 penalty over all of a table's rows at every step would touch millions of rows that a
mini-batch does not use. The paper charges a row only in the batches where it appears, scaled
by how often its id occurs in the training samples:

    L2(W) ~= sum_j sum_m (alpha_mj / n_j) * ||w_j||^2

(``alpha_mj`` = 1 when batch m holds id j, ``n_j`` = occurrences of id j over all samples).
Frequent ids are charged often and lightly, rare ids seldom and heavily, so over an epoch each
row is pulled toward zero about as much as the full L2 would, at the cost of the rows the batch
already touches.

Run: ``counts = feature_counts(model.bank, samples.tensors())`` once, then per step
``loss += mba_penalty(model.bank, batch, counts, lam)`` (``models.train`` does this when
``TrainConfig.mba_lambda`` > 0). The penalty is 0.5 * lam * the sum above for the batch.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from models.bank import CAT, ITEM, PAD_ROW, EmbeddingBank

# The id columns of a batch per table: the candidate's and the history's. DIEN's sampled
# negatives are not counted: they are inputs of the auxiliary loss, not features of a sample.
COLUMNS = {ITEM: ("item_id", "hist_item_ids"), CAT: ("cat_id", "hist_cat_ids")}


def _table(bank: EmbeddingBank, name: str) -> torch.Tensor:
    """The weight (rows, D) of table ``name``."""
    weight = bank.tables[name].weight
    assert isinstance(weight, torch.Tensor)
    return weight


def _batch_rows(bank: EmbeddingBank, name: str, batch: Mapping[str, torch.Tensor]
                ) -> torch.Tensor:
    """Rows (M,) of every id of table ``name`` in ``batch`` (padding included, as row 0)."""
    ids = torch.cat([batch[col].reshape(-1) for col in COLUMNS[name]])  # (M,)
    return bank.rows(name, ids)


def feature_counts(bank: EmbeddingBank, tensors: Mapping[str, torch.Tensor]
                   ) -> dict[str, torch.Tensor]:
    """``n_j`` (rows,) per table: occurrences of each row's ids in all samples, at least 1.

    ``tensors``: the training samples in batch-format names (``SampleSet.tensors()``).
    """
    out = {}
    for name in COLUMNS:
        rows = _batch_rows(bank, name, tensors)
        weight = _table(bank, name)
        counts = torch.bincount(rows, minlength=weight.shape[0])
        out[name] = counts.to(weight).clamp_(min=1.0)  # (rows,)
    return out


def mba_penalty(bank: EmbeddingBank, batch: Mapping[str, torch.Tensor],
                counts: Mapping[str, torch.Tensor], lam: float) -> torch.Tensor:
    """``0.5 * lam * sum_j ||w_j||^2 / n_j`` over the rows ``j`` the batch uses (padding
    excluded), summed over the tables of ``counts``; a scalar with gradients into the bank.

    Written over whole tables with a per-row factor (``1 / n_j`` where the batch uses row j,
    else 0): one pass over each table, as its dense gradient and Adam's step already make,
    instead of sorting the batch's ids (``torch.unique`` cost DIN ~1.2 ms a step on ml-100k).
    """
    total = _table(bank, ITEM).new_zeros(())
    for name, n in counts.items():
        weight = _table(bank, name)
        used = torch.bincount(_batch_rows(bank, name, batch), minlength=weight.shape[0]) > 0
        used[PAD_ROW] = False
        factor = used.to(weight.dtype) / n  # (rows,) 1 / n_j on the batch's rows, else 0
        total = total + (weight.pow(2).sum(dim=1) * factor).sum()
    return 0.5 * lam * total
