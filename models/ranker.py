"""The common shape of every architecture: an EmbeddingBank plus a TopNet.

``Ranker.forward(batch) -> logits (B,)`` embeds the raw-id batch with the bank and hands the
vectors to the top net; the loss lives outside (``models.train``). ``forward_with_aux`` also
returns the architecture's auxiliary loss (DIEN's; zero elsewhere) for training.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from models.bank import EmbeddingBank


class TopNet(nn.Module):
    """Everything above the embeddings; subclasses implement ``forward_with_aux``."""

    # Whether ``forward_with_aux`` takes histories shared by several candidates: ``hist``
    # (U, T, E) and ``mask`` (U, T) with ``hist_row`` (B,), the history row of each
    # candidate. Other tops get them expanded to one per candidate first.
    shares_history: ClassVar[bool] = False

    def forward_with_aux(self, emb: dict[str, torch.Tensor]
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B,), auxiliary loss scalar) from an embedded batch."""
        raise NotImplementedError

    def forward(self, emb: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.forward_with_aux(emb)[0]


def expand_history(emb: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``emb`` with its shared histories (U, T, ...) copied to one per candidate (B, T, ...)
    along ``hist_row`` (B,)."""
    row = emb.pop("hist_row")
    return emb | {k: emb[k].index_select(0, row) for k in ("hist", "mask", "neg") if k in emb}


class Ranker(nn.Module):
    """An architecture: ``bank`` (EmbeddingBank) + ``top`` (TopNet) + its config ``cfg``."""

    arch: ClassVar[str] = ""

    def __init__(self, cfg: Any, bank: EmbeddingBank, top: TopNet) -> None:
        super().__init__()
        if getattr(cfg, "dim", bank.dim) != bank.dim:
            raise ValueError(f"config dim {cfg.dim} != bank dim {bank.dim}")
        self.cfg = cfg
        self.bank = bank
        self.top = top
        self.top_version: str | None = None

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Logits (B,) of a raw-id batch: ``item_id``, ``cat_id`` (B,), ``hist_item_ids``,
        ``hist_cat_ids``, ``hist_mask`` (B, T); or, histories shared by candidates (one a
        user when serving), the history tensors (U, T) and ``hist_row`` (B,)."""
        return self.forward_with_aux(batch)[0]

    def forward_with_aux(self, batch: Mapping[str, torch.Tensor], oov_dropout: float = 0.0
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B,), auxiliary loss) for training; ids may be dropped to OOV."""
        emb = self.bank.embed(batch, oov_dropout)
        if "hist_row" in batch:  # serving: one history per user, several candidates each
            emb["hist_row"] = batch["hist_row"]
            if not self.top.shares_history:
                emb = expand_history(emb)
        logits, aux = self.top.forward_with_aux(emb)
        if "bias" in emb:
            logits = logits + emb["bias"]  # (B,) the bank's first-order item term
        return logits, aux

    @property
    def version(self) -> str | None:
        """``<arch>-<top hash>@bank-<bank version>`` once saved or loaded, else None."""
        if self.top_version is None or self.bank.version is None:
            return None
        return f"{self.arch}-{self.top_version}@bank-{self.bank.version}"
