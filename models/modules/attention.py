"""The DIN local activation unit and attention pooling over a behaviour sequence.

The unit scores each history key against the query (the candidate) with an MLP over
``[query, key, query - key, query * key]`` (DIN paper, Fig. 2). As in the paper the weights
are not normalised by default (so the pooled vector keeps the intensity of interest);
``softmax=True`` normalises them over the real positions (as DIEN's attention does).
Masked (padding) positions always get weight exactly zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.modules.activations import make_activation


class ActivationUnit(nn.Module):
    """Scores (B, T) of keys (B, T, E) against a query (B, E).

    The first layer is one ``Linear(4E, H)`` over the concatenation; it is evaluated as
    ``W_q q + W_k k + W_d (q - k) + W_p (q * k)`` so the query part is computed once per row
    instead of once per position (same function, fewer FLOPs).
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (80, 40),
                 activation: str = "dice") -> None:
        super().__init__()
        if not hidden:
            raise ValueError("ActivationUnit needs at least one hidden layer")
        self.dim = dim
        self.first = nn.Linear(4 * dim, hidden[0])
        self.first_act = make_activation(activation, hidden[0])
        rest: list[nn.Module] = []
        prev = hidden[0]
        for size in hidden[1:]:
            rest += [nn.Linear(prev, size), make_activation(activation, size)]
            prev = size
        rest.append(nn.Linear(prev, 1))
        self.rest = nn.Sequential(*rest)

    def forward(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        w_q, w_k, w_d, w_p = self.first.weight.split(self.dim, dim=1)  # 4 x (H, E)
        q_part = query @ (w_q + w_d).T + self.first.bias  # (B, H)
        k_part = keys @ (w_k - w_d).T  # (B, T, H)
        p_part = (keys * query.unsqueeze(1)) @ w_p.T  # (B, T, H)
        hidden = self.first_act(q_part.unsqueeze(1) + k_part + p_part)  # (B, T, H)
        return self.rest(hidden).squeeze(-1)  # (B, T)


def masked_weights(scores: torch.Tensor, mask: torch.Tensor, softmax: bool) -> torch.Tensor:
    """Attention weights (B, T): zero at masked positions; softmax over real ones if asked.

    A row with no real position gets all-zero weights (never NaN).
    """
    if softmax:
        scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # (B, T)
        return torch.nan_to_num(weights, nan=0.0) * mask
    return scores * mask


class AttentionPooling(nn.Module):
    """DIN attention pooling: ``sum_t w(query, key_t) * value_t`` over real positions."""

    def __init__(self, dim: int, hidden: Sequence[int] = (80, 40), activation: str = "dice",
                 softmax: bool = False) -> None:
        super().__init__()
        self.unit = ActivationUnit(dim, hidden, activation)
        self.softmax = softmax

    def weights(self, query: torch.Tensor, keys: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """Weights (B, T) of each position; exactly zero where ``mask`` is False."""
        return masked_weights(self.unit(query, keys), mask, self.softmax)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor,
                values: torch.Tensor | None = None) -> torch.Tensor:
        w = self.weights(query, keys, mask)  # (B, T)
        vals = keys if values is None else values
        return (w.unsqueeze(-1) * vals).sum(dim=1)  # (B, E)
