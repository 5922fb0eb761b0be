"""Attention of the candidate over a behaviour sequence: DIN's local activation unit and
DIEN's bilinear attention.

The DIN activation unit (DIN paper, Fig. 2) scores each key against the query with an MLP over
``[query, key, query - key, query * key]``; as in the paper the weights are not normalised
by default (the pooled vector keeps the intensity of interest), ``softmax=True`` normalises
them over the real positions. DIEN's attention (DIEN paper, eq. 7) is
``softmax_t(h_t W e_a)``. Scores are computed for real positions only; masked (padding)
positions always get weight exactly zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.modules.activations import make_activation
from models.modules.din_fused import fusable, fused_pooling


class ActivationUnit(nn.Module):
    """The DIN local activation unit: MLP([q, k, q - k, q * k]) -> one score per key.

    The first ``Linear(4E, H)`` is evaluated as ``(W_q + W_d) q + (W_k - W_d) k + W_p (q * k)``
    (the same function, fewer FLOPs).
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (36,),
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

    def score_rows(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Scores (N,) of key rows (N, E) against their query rows (N, E)."""
        w_q, w_k, w_d, w_p = self.first.weight.split(self.dim, dim=1)  # 4 x (H, E)
        hidden = torch.addmm(self.first.bias, query, (w_q + w_d).T)  # (N, H)
        hidden = hidden + keys @ (w_k - w_d).T + (query * keys) @ w_p.T  # (N, H)
        return self.rest(self.first_act(hidden)).squeeze(-1)  # (N,)

    def forward(self, query: torch.Tensor, keys: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """Scores (B, T) of keys (B, T, E) against the query (B, E); 0 where mask is False."""
        b, t, e = keys.shape
        flat = mask.reshape(-1).nonzero().squeeze(1)  # (N,) positions in B * T
        q = query.index_select(0, torch.div(flat, t, rounding_mode="floor"))  # (N, E)
        scores = self.score_rows(q, keys.reshape(b * t, e).index_select(0, flat))  # (N,)
        return keys.new_zeros(b * t).index_copy(0, flat, scores).reshape(b, t)  # (B, T)


def masked_sum(keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum pooling (B, E) of keys (B, T, E) over the real positions of mask (B, T)."""
    return (keys * mask.unsqueeze(-1)).sum(dim=1)


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
    """DIN attention pooling: ``sum_t w(query, key_t) * key_t`` over real positions."""

    def __init__(self, dim: int, hidden: Sequence[int] = (36,), activation: str = "dice",
                 softmax: bool = False) -> None:
        super().__init__()
        self.unit = ActivationUnit(dim, hidden, activation)
        self.softmax = softmax

    def weights(self, query: torch.Tensor, keys: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """Weights (B, T) of each position; exactly zero where ``mask`` is False."""
        return masked_weights(self.unit(query, keys, mask), mask, self.softmax)

    def forward(self, query: torch.Tensor, keys: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        return self.forward_with_sum(query, keys, mask)[0]

    def forward_with_sum(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention-pooled interest (B, E) and the plain sum pooling (B, E) of the keys
        (``masked_sum``): in CPU training one C++ node computes both."""
        if fusable(self.unit, self.softmax, self.training, keys, mask):
            return fused_pooling(self.unit, query, keys, mask)
        w = self.weights(query, keys, mask)  # (B, T)
        return torch.bmm(w.unsqueeze(1), keys).squeeze(1), masked_sum(keys, mask)  # (B, E) x 2


class BilinearAttention(nn.Module):
    """DIEN's attention score ``h_t W e_a`` (eq. 7); the softmax is taken by the caller."""

    def __init__(self, hidden_dim: int, query_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(query_dim, hidden_dim, bias=False)

    def forward(self, query: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """Scores (N,) of state rows (N, H) against their query rows (N, E)."""
        return (states * self.proj(query)).sum(dim=-1)  # (N,)
