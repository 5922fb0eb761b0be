"""DIEN: Deep Interest Evolution Network (Zhou et al., AAAI 2019, arXiv 1809.03672).

Interest extractor: a GRU over the clicked behaviours, supervised by the auxiliary loss
(next behaviour vs. a negative sampled from the user's non-clicked items). Interest
evolving: attention of the candidate over the interest states (softmax over real positions)
drives an AUGRU (or AGRU / AIGRU for ablations); its final state is the evolved interest.
As in the authors' released code (Model_DIN_V2_Gru_Vec_attGru_Neg) the MLP sees
``[candidate, sum-pooled history, candidate * sum, final interest]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.bank import EmbeddingBank
from models.modules.attention import ActivationUnit, masked_weights
from models.modules.auxiliary import AuxiliaryNet, auxiliary_loss
from models.modules.gru import AttentionalGRU
from models.modules.mlp import MLP
from models.ranker import Ranker, TopNet, masked_sum


@dataclass
class DIENConfig:
    """Configuration of DIEN."""

    dim: int = 16
    gru_type: str = "AUGRU"
    att_hidden: tuple[int, ...] = (80, 40)
    att_activation: str = "dice"
    mlp: tuple[int, ...] = (200, 80)
    activation: str = "dice"
    dropout: float = 0.0
    aux_hidden: tuple[int, ...] = (100, 50)
    aux_weight: float = 1.0

    @property
    def embed_dim(self) -> int:
        return 2 * self.dim


def compact(mask: torch.Tensor, *seqs: torch.Tensor) -> list[torch.Tensor]:
    """Moves real positions to the front (stable) and drops all-padding tail columns, so
    padding can sit anywhere on input and never costs recurrent steps."""
    width = max(int(mask.sum(dim=1).max()), 1) if mask.numel() else 1
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :width]  # (B, T')
    out = [mask.gather(1, order)]
    for seq in seqs:
        idx = order.unsqueeze(-1).expand(-1, -1, seq.shape[-1])  # (B, T', E)
        out.append(seq.gather(1, idx))
    return out


class DIENTop(TopNet):
    """Interest extractor GRU + attention + attentional GRU + MLP (+ auxiliary net)."""

    def __init__(self, cfg: DIENConfig) -> None:
        super().__init__()
        e = cfg.embed_dim
        self.cfg = cfg
        self.extractor = nn.GRU(e, e, batch_first=True)
        self.attention = ActivationUnit(e, cfg.att_hidden, cfg.att_activation)
        self.evolution = AttentionalGRU(e, e, cfg.gru_type)
        self.aux_net = AuxiliaryNet(e, e, cfg.aux_hidden)
        self.mlp = MLP(4 * e, cfg.mlp, cfg.activation, out_dim=1, dropout=cfg.dropout)

    def forward_with_aux(self, emb: dict[str, torch.Tensor]
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        query = emb["query"]
        with_neg = "neg" in emb and self.training and self.cfg.aux_weight > 0
        seqs = [emb["hist"], emb["neg"]] if with_neg else [emb["hist"]]
        mask, hist, *neg = compact(emb["mask"], *seqs)
        states, _ = self.extractor(hist)  # (B, T, E)
        aux = (auxiliary_loss(self.aux_net, states, hist, neg[0], mask) * self.cfg.aux_weight
               if with_neg else query.new_zeros(()))
        att = masked_weights(self.attention(query, states), mask, softmax=True)  # (B, T)
        final = self.evolution(states, att, mask)  # (B, E)
        pooled = masked_sum(hist, mask)  # (B, E)
        x = torch.cat([query, pooled, query * pooled, final], dim=-1)  # (B, 4E)
        return self.mlp(x).squeeze(-1), aux


class DIEN(Ranker):
    """Deep Interest Evolution Network."""

    arch = "dien"

    def __init__(self, cfg: DIENConfig, bank: EmbeddingBank) -> None:
        super().__init__(cfg, bank, DIENTop(cfg))
