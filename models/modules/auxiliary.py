"""The DIEN auxiliary loss (DIEN paper, eq. 6) and its scoring function.

The interest state ``h_t`` must tell the next clicked behaviour ``e_{t+1}`` from a negative
``e~_{t+1}`` sampled from the user's non-clicked items; only positions whose next step is real
count. The score is the paper's ``sigma(<h_t, e>)`` (no hidden layers) or, with hidden sizes,
the MLP of the authors' released code (``auxiliary_net``, 100-50, sigmoid).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.modules.mlp import MLP
from models.modules.packing import Steps, prev_index


class AuxiliaryNet(nn.Module):
    """Logit that the behaviour ``e`` (N, E) follows the interest state ``h`` (N, H)."""

    def __init__(self, hidden_dim: int, embed_dim: int, hidden: Sequence[int] = ()) -> None:
        super().__init__()
        if not hidden and hidden_dim != embed_dim:
            raise ValueError("the inner-product auxiliary score needs hidden_dim == embed_dim")
        self.mlp = (MLP(hidden_dim + embed_dim, hidden, activation="sigmoid", out_dim=1)
                    if hidden else None)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        if self.mlp is None:
            return (h * e).sum(dim=-1)  # (N,)
        return self.mlp(torch.cat([h, e], dim=-1)).squeeze(-1)  # (N,)


def auxiliary_loss(net: AuxiliaryNet, states: torch.Tensor, pos: torch.Tensor,
                   neg: torch.Tensor, steps: Steps) -> torch.Tensor:
    """Mean BCE over (h_t, e_{t+1}) as clicks and (h_t, neg_{t+1}) as non-clicks.

    states (N, H), pos / neg (N, E): packed rows (``models.modules.packing``). Returns a
    scalar, zero when no row has two real steps.
    """
    if len(steps.counts) < 2:
        return states.new_zeros(())
    # Each element after step 0 (packed rows n0..N-1, in order) is the next behaviour of the
    # element one step earlier in its row: slices, not gathers (a gather's backward scatters).
    n0 = steps.counts[0]
    h = states.index_select(0, prev_index(steps.counts, states.device))  # (M, H)
    pos_logit = net(h, pos[n0:])  # (M,)
    neg_logit = net(h, neg[n0:])  # (M,)
    return (F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit))
            + F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit)))
