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

    shares_history = True  # the extractor runs once per history, not once per candidate

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

    def interest_states(self, emb: dict[str, torch.Tensor]
                        ) -> tuple[torch.Tensor, Steps, torch.Tensor, torch.Tensor]:
        """The extractor's packed states (N, E) over each candidate's history, their
        ``Steps``, the auxiliary loss and the sum-pooled history (B, E). With shared
        histories (``hist_row``) the GRU runs over the U histories once and its states are
        copied to the candidates' rows (a state depends on its history alone)."""
        hist, mask = emb["hist"], emb["mask"]  # (U, T, E), (U, T); U = B unless shared
        own = Steps.of(mask)
        aux = hist.new_zeros(())
        states = hist.new_zeros((0, hist.shape[-1]))
        if own.counts:
            xs = own.pack(hist)  # (N_u, E)
            states = self.extractor(xs, own)  # (N_u, E)
            if "neg" in emb and self.training and self.cfg.aux_weight > 0:
                aux = self.cfg.aux_weight * auxiliary_loss(
                    self.aux_net, states, xs, own.pack(emb["neg"]), own)
        pooled = masked_sum(hist, mask)  # (U, E)
        if "hist_row" not in emb:
            return states, own, aux, pooled
        row = emb["hist_row"]  # (B,)
        u, t, e = hist.shape
        laid = hist.new_zeros(u * t, e).index_copy(0, own.rows * t + own.cols, states)
        steps = Steps.of(mask.index_select(0, row))  # (B, T) layout of the candidates
        return (steps.pack(laid.view(u, t, e).index_select(0, row)), steps, aux,
                pooled.index_select(0, row))

    def forward_with_aux(self, emb: dict[str, torch.Tensor]
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        query = emb["query"]  # (B, E)
        states, steps, aux, pooled = self.interest_states(emb)  # (N, E), (B, E)
        final = query.new_zeros(query.shape)  # (B, E) zero interest for empty histories
        if steps.counts:
            att = self.attend(query, states, steps)  # (N,)
            final = self.evolution(states, att, steps)  # (B, E)
        x = torch.cat([query, pooled, query * pooled, final], dim=-1)  # (B, 4E)
        return self.mlp(x).squeeze(-1), aux


class DIEN(Ranker):
    """Deep Interest Evolution Network."""

    arch = "dien"

    def __init__(self, cfg: DIENConfig, bank: EmbeddingBank) -> None:
        super().__init__(cfg, bank, DIENTop(cfg))
