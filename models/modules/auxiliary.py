"""The DIEN auxiliary loss (DIEN paper, eq. 6) and its small scoring network.

The interest state ``h_t`` must tell the next clicked behaviour ``e_{t+1}`` from a negative
``e~_{t+1}`` sampled from the user's non-clicked items; positions whose next step is padding
are left out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.modules.mlp import MLP


class AuxiliaryNet(nn.Module):
    """Logit that the behaviour ``e`` (..., E) follows the interest state ``h`` (..., H)."""

    def __init__(self, hidden_dim: int, embed_dim: int,
                 hidden: Sequence[int] = (100, 50)) -> None:
        super().__init__()
        self.mlp = MLP(hidden_dim + embed_dim, hidden, activation="sigmoid", out_dim=1)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([h, e], dim=-1)).squeeze(-1)  # (...)


def auxiliary_loss(net: AuxiliaryNet, states: torch.Tensor, pos: torch.Tensor,
                   neg: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean BCE of ``net`` on (h_t, e_{t+1}) as clicks and (h_t, neg_{t+1}) as non-clicks.

    states (B, T, H) interest states; pos / neg (B, T, E) clicked / negative behaviours;
    mask (B, T) real positions. Returns a scalar (zero when no position qualifies).
    """
    h = states[:, :-1]  # (B, T-1, H)
    valid = (mask[:, :-1] & mask[:, 1:]).float()  # (B, T-1)
    pos_logit = net(h, pos[:, 1:])  # (B, T-1)
    neg_logit = net(h, neg[:, 1:])  # (B, T-1)
    loss = (F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit),
                                               reduction="none")
            + F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit),
                                                 reduction="none"))  # (B, T-1)
    return (loss * valid).sum() / valid.sum().clamp(min=1.0)
