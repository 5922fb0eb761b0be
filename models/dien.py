"""DIEN: Deep Interest Evolution Network (Zhou et al., AAAI 2019, arXiv 1809.03672).

Interest extractor: a GRU over the clicked behaviours, supervised by the auxiliary loss
(next behaviour vs. a negative sampled from the user's non-clicked items, eq. 6). Interest
evolving: attention of the candidate over the interest states (``softmax(h_t W e_a)``, eq. 7;
or the DIN activation unit with ``attention="mlp"``) drives an AUGRU (AGRU / AIGRU for
ablations); its final state is the evolved interest. As in the authors' released code the
MLP sees ``[candidate, sum-pooled history, candidate * sum, final interest]``. Sequences run
packed and length-sorted (``models.modules.packing``): no step is spent on padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.bank import EmbeddingBank
from models.modules.attention import ActivationUnit, BilinearAttention, masked_sum
from models.modules.auxiliary import AuxiliaryNet, auxiliary_loss
from models.modules.gru import GRU, AttentionalGRU
from models.modules.mlp import MLP
from models.modules.packing import Steps
from models.ranker import Ranker, TopNet


@dataclass
class DIENConfig:
    """Configuration of DIEN."""

    dim: int = 16
    gru_type: str = "AUGRU"
    attention: str = "bilinear"
    att_hidden: tuple[int, ...] = (36,)
    att_activation: str = "dice"
    mlp: tuple[int, ...] = (200, 80)
    activation: str = "dice"
    dropout: float = 0.2
    input_bn: bool = True
    aux_hidden: tuple[int, ...] = ()
    aux_weight: float = 1.0

    @property
    def embed_dim(self) -> int:
        return 2 * self.dim


class DIENTop(TopNet):
    """Interest extractor GRU + attention + attentional GRU + MLP (+ auxiliary net)."""

    def __init__(self, cfg: DIENConfig) -> None:
        super().__init__()
        e = cfg.embed_dim
        self.cfg = cfg
        self.extractor = GRU(e, e)
        self.attention: BilinearAttention | ActivationUnit = (
            BilinearAttention(e, e) if cfg.attention == "bilinear"
            else ActivationUnit(e, cfg.att_hidden, cfg.att_activation))
        self.evolution = AttentionalGRU(e, e, cfg.gru_type)
        self.aux_net = AuxiliaryNet(e, e, cfg.aux_hidden)
        self.mlp = MLP(4 * e, cfg.mlp, cfg.activation, out_dim=1, dropout=cfg.dropout,
                       input_bn=cfg.input_bn)

    def attend(self, query: torch.Tensor, states: torch.Tensor, steps: Steps) -> torch.Tensor:
        """Packed attention (N,): softmax of the scores over each row's real steps."""
        if isinstance(self.attention, BilinearAttention):
            scores = self.attention(steps.rows_of(query), states)  # (N,)
        else:
            scores = self.attention.score_rows(steps.rows_of(query), states)  # (N,)
        weights = torch.softmax(steps.per_row(scores, float("-inf")), dim=1)  # (B, T')
        return steps.from_rows(weights)  # (N,)

    def forward_with_aux(self, emb: dict[str, torch.Tensor]
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        query, hist, mask = emb["query"], emb["hist"], emb["mask"]
        steps = Steps.of(mask)
        pooled = masked_sum(hist, mask)  # (B, E)
        final = query.new_zeros(query.shape)  # (B, E) zero interest for empty histories
        aux = query.new_zeros(())
        if steps.counts:
            xs = steps.pack(hist)  # (N, E)
            states = self.extractor(xs, steps)  # (N, E)
            if "neg" in emb and self.training and self.cfg.aux_weight > 0:
                aux = self.cfg.aux_weight * auxiliary_loss(
                    self.aux_net, states, xs, steps.pack(emb["neg"]), steps)
            att = self.attend(query, states, steps)  # (N,)
            final = self.evolution(states, att, steps)  # (B, E)
        x = torch.cat([query, pooled, query * pooled, final], dim=-1)  # (B, 4E)
        return self.mlp(x).squeeze(-1), aux


class DIEN(Ranker):
    """Deep Interest Evolution Network."""

    arch = "dien"

    def __init__(self, cfg: DIENConfig, bank: EmbeddingBank) -> None:
        super().__init__(cfg, bank, DIENTop(cfg))
