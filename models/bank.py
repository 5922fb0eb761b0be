"""The EmbeddingBank: every id table of a ranker, versioned and saved apart from the top net.

The bank owns the vocabularies (sorted raw ids seen when it was built) and maps raw int64 ids
to rows itself, so callers never remap ids:

* row 0 is padding (raw id 0, or any id <= 0): an all-zero vector that never trains;
* row 1 is the table's shared out-of-vocabulary (OOV) row, used for any positive id that was
  not in the vocabulary when the bank was built;
* rows 2.. hold the vocabulary in sorted order. Ids map to rows through a dense lookup table
  when the largest id is below ``DENSE_LOOKUP_MAX`` (one gather), else ``torch.searchsorted``.

Vectors are gathered by ``_Gather``: ``index_select`` forward, one ``index_add`` backward
(~5x cheaper on CPU than ``nn.Embedding``'s dense backward) that keeps the padding row's
gradient zero, so padding never trains.

An item is represented by ``[item vector, category vector]``; a new item falls back to the
OOV item row but keeps its own category vector, so it still gets a meaningful score until the
next weekly refresh. Training can replace a small share of known ids with the OOV id
(``oov_dropout``) so that the OOV row and the top net learn what an unknown item looks like.

``item_bias`` (on by default) adds a first-order term: one scalar per item row (OOV included),
added to the ranker's logit (the "wide" part of Wide & Deep). Through the MLP alone the item's
own click rate is learnt slowly at Adam's step size; this scalar trains at its own, larger
rate (``TrainConfig.bias_lr``) and is part of the bank, so it is frozen with the tables.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from models.modules._native import native

PAD_ROW = 0
OOV_ROW = 1
ITEM = "item"
CAT = "cat"
DENSE_LOOKUP_MAX = 1 << 21  # ids below this map through a dense table (int32, <= 8 MiB)
# Initial std of the tables. Smaller starts (DeepCTR uses 1e-4) help long trainings and hurt
# short ones (docs/models.md, "Embedding init"): on ml-100k, 2 epochs of 80k samples, 1e-3 gave
# DIN +0.005 AUC; on the demo's 1-epoch run over 20k synthetic events it cost DIN 0.10 and
# DIEN 0.09 AUC. The default stays 0.05; ``build_model(..., init_std=...)`` chooses another.
INIT_STD = 0.05


class _Gather(torch.autograd.Function):
    """``weight[rows]`` whose gradient is one ``index_add`` (rows as a whole, not per element
    as ``index_select``'s scatter) with the padding row's gradient zero: padding never trains.
    Part of the forward, so it survives deepcopy and pickling (a tensor hook would not)."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows)
        ctx.num_rows = weight.shape[0]
        return weight.index_select(0, rows)  # (M, D)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (rows,) = ctx.saved_tensors
        # ``grad`` is usually a column slice of the concatenated [item, category] gradient;
        # index_add_ from a strided source is ~4x slower than a copy plus a contiguous one.
        out = grad.new_zeros(ctx.num_rows, grad.shape[1]).index_add_(0, rows, grad.contiguous())
        out[PAD_ROW] = 0.0
        return out, None


class _PairGather(torch.autograd.Function):
    """``[items[item_rows], cats[cat_rows]]`` (M, 2D) in one C++ pass (``csrc/gather.cpp``),
    and both tables' gradients straight from the halves of the incoming gradient, the
    padding row's zero: the same function as two ``_Gather`` and a ``cat``, without the cat's
    strided copy and the copies and scatters of their backward."""

    @staticmethod
    def forward(ctx: Any, items: torch.Tensor, cats: torch.Tensor, item_rows: torch.Tensor,
                cat_rows: torch.Tensor) -> torch.Tensor:
        ext = native()
        assert ext is not None
        ctx.save_for_backward(item_rows, cat_rows)
        ctx.sizes = (items.shape[0], cats.shape[0])
        out: torch.Tensor = ext.pair_gather(items, cats, item_rows, cat_rows)
        return out  # (M, 2D)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        ext = native()
        assert ext is not None
        item_rows, cat_rows = ctx.saved_tensors
        d_items, d_cats = ext.pair_gather_backward(grad, item_rows, cat_rows, *ctx.sizes)
        return d_items, d_cats, None, None


def _dense_rows(vocab: torch.Tensor) -> torch.Tensor:
    """``table[id]`` = row of id for 0 <= id <= max(vocab) + 1 (the last entry: OOV)."""
    top = int(vocab[-1]) if len(vocab) else 0
    table = torch.full((top + 2,), OOV_ROW, dtype=torch.int32)
    table[0] = PAD_ROW
    table[vocab] = torch.arange(2, len(vocab) + 2, dtype=torch.int32)
    return table


def _vocab_tensor(ids: np.ndarray | torch.Tensor | list[int]) -> torch.Tensor:
    arr = np.asarray(ids, dtype=np.int64).ravel()
    return torch.from_numpy(np.unique(arr[arr > 0]))


def state_hash(state: Mapping[str, torch.Tensor], digits: int) -> str:
    """sha256 (first ``digits`` hex digits) of a module's tensors, in name order: the version
    of a bank (:meth:`EmbeddingBank.content_hash`) and of a top net
    (``models.registry.serial``)."""
    digest = hashlib.sha256()
    for key, value in sorted(state.items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:digits]


class EmbeddingBank(nn.Module):
    """Id tables (``item``, ``cat`` and any others), each with its own sorted vocabulary.

    ``version`` is the content hash given by ``models.registry.save_bank`` (None until saved
    or loaded).
    """

    def __init__(self, vocabs: Mapping[str, np.ndarray | torch.Tensor | list[int]],
                 dim: int = 16, init_std: float = INIT_STD, item_bias: bool = True) -> None:
        super().__init__()
        if ITEM not in vocabs or CAT not in vocabs:
            raise ValueError("an EmbeddingBank needs at least the 'item' and 'cat' tables")
        self.dim = dim
        self.names = sorted(vocabs)
        self.tables = nn.ModuleDict()
        for name in self.names:
            vocab = _vocab_tensor(vocabs[name])
            self.register_buffer(f"vocab_{name}", vocab)
            table = nn.Embedding(len(vocab) + 2, dim, padding_idx=PAD_ROW)
            nn.init.normal_(table.weight, std=init_std)
            with torch.no_grad():
                table.weight[PAD_ROW].zero_()
            self.tables[name] = table
            self._index(name)
        self.item_bias = (nn.Embedding(len(self.vocab(ITEM)) + 2, 1, padding_idx=PAD_ROW)
                          if item_bias else None)
        if self.item_bias is not None:
            nn.init.zeros_(self.item_bias.weight)
        self.version: str | None = None

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        """Load as usual, then rebuild the dense id->row tables from the loaded vocabularies
        (they are derived, not saved, and would otherwise map the previous vocabulary)."""
        super()._load_from_state_dict(state_dict, prefix, *args)
        for name in self.names:
            self._index(name)

    def _index(self, name: str) -> None:
        """(Re)build table ``name``'s dense id->row table, or drop it for ids >= 2^21."""
        vocab = self.vocab(name)
        if len(vocab) == 0 or int(vocab[-1]) < DENSE_LOOKUP_MAX:
            self.register_buffer(f"dense_{name}", _dense_rows(vocab.cpu()).to(vocab.device),
                                 persistent=False)
        elif f"dense_{name}" in self._buffers:
            del self._buffers[f"dense_{name}"]

    def vocab(self, name: str) -> torch.Tensor:
        """The sorted raw ids (int64) of table ``name``."""
        out = getattr(self, f"vocab_{name}")
        assert isinstance(out, torch.Tensor)
        return out

    def rows(self, name: str, ids: torch.Tensor, oov_dropout: float = 0.0) -> torch.Tensor:
        """Row indices (same shape as ids) of raw ids: 0 padding, 1 OOV, 2.. vocabulary.

        ``oov_dropout``: the probability that a real id is sent to the OOV row. On the CPU
        with the C++ kernels the dense-table case is one pass (``csrc/gather.cpp``); its OOV
        draws come from the kernels' hash, seeded from torch's default generator.
        """
        dense = getattr(self, f"dense_{name}", None)
        ext = native() if ids.device.type == "cpu" and ids.dtype == torch.int64 else None
        if dense is not None and ext is not None:  # one C++ pass, OOV dropout included
            out: torch.Tensor = ext.dense_rows(ids, dense, oov_dropout, OOV_ROW)
            return out
        if dense is not None:  # one gather: ids <= 0 -> padding, ids past the table -> OOV
            rows = dense[ids.clamp(0, len(dense) - 1)].long()
        else:
            vocab = self.vocab(name)
            pos = torch.searchsorted(vocab, ids).clamp_(max=len(vocab) - 1)
            rows = torch.where(vocab[pos] == ids, pos + 2, OOV_ROW)
            rows = torch.where(ids > 0, rows, PAD_ROW)
        if oov_dropout > 0:
            drop = (torch.rand(ids.shape, device=ids.device) < oov_dropout) & (ids > 0)
            rows = torch.where(drop, OOV_ROW, rows)
        return rows

    def lookup(self, name: str, ids: torch.Tensor, oov_dropout: float = 0.0) -> torch.Tensor:
        """Vectors (..., dim) of raw ids of table ``name``."""
        rows = self.rows(name, ids, oov_dropout)
        out: torch.Tensor = _Gather.apply(self.tables[name].weight, rows.reshape(-1))  # (M, D)
        return out.reshape(*rows.shape, self.dim)  # (..., D)

    def items(self, item_ids: torch.Tensor, cat_ids: torch.Tensor,
              oov_dropout: float = 0.0) -> torch.Tensor:
        """Item representations (..., 2 * dim): ``[item vector, category vector]``."""
        rows = self.rows(ITEM, item_ids, oov_dropout)
        both = self._pair(rows.reshape(-1), self.rows(CAT, cat_ids).reshape(-1))  # (M, E)
        return both.reshape(*rows.shape, self.out_dim)  # (..., E)

    def embed(self, batch: Mapping[str, torch.Tensor],
              oov_dropout: float = 0.0) -> dict[str, torch.Tensor]:
        """The embedded batch: ``query`` (B, E), ``hist`` (B, T, E), ``mask`` (B, T), the
        candidate's first-order term ``bias`` (B,) when the bank has one, and, when the batch
        has negatives, ``neg`` (B, T, E); E = 2 * dim.

        One lookup per table for the whole batch (one gradient scatter per table).
        """
        keys = [("item_id", "cat_id"), ("hist_item_ids", "hist_cat_ids")]
        if "neg_item_ids" in batch:
            keys.append(("neg_item_ids", "neg_cat_ids"))
        sizes = [batch[item].numel() for item, _ in keys]
        item_ids = torch.cat([batch[item].reshape(-1) for item, _ in keys])  # (M,)
        cat_ids = torch.cat([batch[cat].reshape(-1) for _, cat in keys])  # (M,)
        item_rows = self.rows(ITEM, item_ids, oov_dropout)  # (M,)
        both = self._pair(item_rows, self.rows(CAT, cat_ids))  # (M, E)
        parts = both.split(sizes)
        out = {"query": parts[0],  # (B, E)
               "hist": parts[1].reshape(*batch["hist_item_ids"].shape, self.out_dim),  # (B, T, E)
               "mask": batch["hist_mask"].bool() & (batch["hist_item_ids"] > 0)}
        if self.item_bias is not None:
            bias: torch.Tensor = _Gather.apply(self.item_bias.weight, item_rows[:sizes[0]])
            out["bias"] = bias.squeeze(-1)  # (B,)
        if len(parts) > 2:
            out["neg"] = parts[2].reshape(*batch["neg_item_ids"].shape, self.out_dim)  # (B, T, E)
        return out

    def _pair(self, item_rows: torch.Tensor, cat_rows: torch.Tensor) -> torch.Tensor:
        """``[item vector, category vector]`` (M, E) of row indices: in training on the CPU
        one C++ pass (``_PairGather``), else two gathers and a cat (the same values)."""
        items, cats = self.tables[ITEM].weight, self.tables[CAT].weight
        if (torch.is_grad_enabled() and items.requires_grad and items.device.type == "cpu"
                and items.dtype in (torch.float32, torch.float64) and native() is not None):
            fused: torch.Tensor = _PairGather.apply(items, cats, item_rows, cat_rows)
            return fused
        return torch.cat([_Gather.apply(items, item_rows), _Gather.apply(cats, cat_rows)],
                         dim=-1)  # (M, E)

    @property
    def out_dim(self) -> int:
        """Size E of one item representation."""
        return 2 * self.dim

    def content_hash(self) -> str:
        """The bank's version: :func:`state_hash` (16 hex digits) of every table and
        vocabulary."""
        return state_hash(self.state_dict(), digits=16)

    def freeze(self) -> EmbeddingBank:
        """No gradients, eval mode: the bank as incremental training must see it."""
        self.requires_grad_(False)
        self.eval()
        return self
