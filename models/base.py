"""BaseModel: embedding + sum pooling + MLP (the DIN paper's base model, section 4.2).

As in the authors' released code (Model_DNN), the top net sees the candidate and the sum of
the user's clicked-behaviour vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.bank import EmbeddingBank
from models.modules.attention import masked_sum
from models.modules.mlp import MLP
from models.ranker import Ranker, TopNet


@dataclass
class BaseConfig:
    """Configuration of BaseModel."""

    dim: int = 16
    mlp: tuple[int, ...] = (200, 80)
    activation: str = "prelu"
    dropout: float = 0.0
    input_bn: bool = True

    @property
    def embed_dim(self) -> int:
        return 2 * self.dim


class BaseTop(TopNet):
    """MLP over ``[candidate, sum-pooled history]``."""

    def __init__(self, cfg: BaseConfig) -> None:
        super().__init__()
        self.mlp = MLP(2 * cfg.embed_dim, cfg.mlp, cfg.activation, out_dim=1,
                       dropout=cfg.dropout, input_bn=cfg.input_bn)

    def forward_with_aux(self, emb: dict[str, torch.Tensor]
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = masked_sum(emb["hist"], emb["mask"])  # (B, E)
        x = torch.cat([emb["query"], pooled], dim=-1)  # (B, 2E)
        return self.mlp(x).squeeze(-1), x.new_zeros(())


class BaseModel(Ranker):
    """Embedding + sum pooling + MLP."""

    arch = "base"

    def __init__(self, cfg: BaseConfig, bank: EmbeddingBank) -> None:
        super().__init__(cfg, bank, BaseTop(cfg))
