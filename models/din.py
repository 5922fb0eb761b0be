"""DIN: Deep Interest Network (Zhou et al., KDD 2018, arXiv 1706.06978).

The candidate attends over the user's clicked behaviours with the local activation unit
(no softmax by default, as in the paper); the top MLP uses Dice. As in the authors' released
code (Model_DIN) the MLP also sees the sum-pooled history and its product with the candidate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.bank import EmbeddingBank
from models.modules.attention import AttentionPooling
from models.modules.mlp import MLP
from models.ranker import Ranker, TopNet


@dataclass
class DINConfig:
    """Configuration of DIN."""

    dim: int = 16
    att_hidden: tuple[int, ...] = (36,)
    att_activation: str = "dice"
    att_softmax: bool = False
    mlp: tuple[int, ...] = (200, 80)
    activation: str = "dice"
    dropout: float = 0.2
    input_bn: bool = True
    # inference variance floor of the MLP's input BatchNorm (modules.mlp.InputNorm); 0: off.
    # The ml-100k benchmark sets 0.01 (docs/models.md, "Training recipe").
    input_var_floor: float = 0.0

    @property
    def embed_dim(self) -> int:
        return 2 * self.dim


class DINTop(TopNet):
    """Attention pooling of the history against the candidate, then the MLP."""

    def __init__(self, cfg: DINConfig) -> None:
        super().__init__()
        e = cfg.embed_dim
        self.attention = AttentionPooling(e, cfg.att_hidden, cfg.att_activation, cfg.att_softmax)
        self.mlp = MLP(4 * e, cfg.mlp, cfg.activation, out_dim=1, dropout=cfg.dropout,
                       input_bn=cfg.input_bn, input_var_floor=cfg.input_var_floor)

    def forward_with_aux(self, emb: dict[str, torch.Tensor]
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        query, hist, mask = emb["query"], emb["hist"], emb["mask"]
        interest, pooled = self.attention.forward_with_sum(query, hist, mask)  # (B, E) x 2
        x = torch.cat([query, pooled, query * pooled, interest], dim=-1)  # (B, 4E)
        return self.mlp(x).squeeze(-1), x.new_zeros(())


class DIN(Ranker):
    """Deep Interest Network."""

    arch = "din"

    def __init__(self, cfg: DINConfig, bank: EmbeddingBank) -> None:
        super().__init__(cfg, bank, DINTop(cfg))
