"""GRU variants of the DIEN interest-evolving layer: AUGRU, AGRU and AIGRU (DIEN paper, 4.3).

All cells follow the paper's convention ``h_t = (1 - u_t) * h_{t-1} + u_t * h~_t`` and take an
attention score ``a_t`` per step:

* ``AIGRU``: the input is scaled, ``i'_t = a_t * i_t``, then a plain GRU step;
* ``AGRU``: the attention replaces the update gate, ``u'_t = a_t``;
* ``AUGRU``: the attention scales the update gate, ``u'_t = a_t * u_t`` (the paper's choice).

The input projections of all steps are computed in one matmul before the loop, so the loop
holds only the recurrent matmul and a few element-wise ops. Steps whose mask is False leave
the state unchanged, so padding (anywhere) never changes the final state.
"""

from __future__ import annotations

import math

import torch
from torch import nn

GRU_TYPES = ("AIGRU", "AGRU", "AUGRU")


class AttentionalGRU(nn.Module):
    """An attention-driven GRU (``kind`` in AIGRU, AGRU, AUGRU) over (B, T, E) inputs."""

    def __init__(self, input_dim: int, hidden_dim: int, kind: str = "AUGRU") -> None:
        super().__init__()
        if kind not in GRU_TYPES:
            raise ValueError(f"unknown attentional GRU {kind!r}; one of {GRU_TYPES}")
        self.kind = kind
        self.hidden_dim = hidden_dim
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_dim, input_dim))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_dim, hidden_dim))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_dim))
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_dim))
        bound = 1.0 / math.sqrt(hidden_dim)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor, att: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Final states (B, H) of inputs x (B, T, E) with attention att (B, T), mask (B, T)."""
        if self.kind == "AIGRU":
            x = x * att.unsqueeze(-1)  # (B, T, E)
        gx = x @ self.weight_ih.T + self.bias_ih  # (B, T, 3H)
        gx_r, gx_u, gx_n = gx.chunk(3, dim=-1)  # 3 x (B, T, H)
        a = att.unsqueeze(-1)  # (B, T, 1)
        m = mask.unsqueeze(-1)  # (B, T, 1)
        h = x.new_zeros(x.shape[0], self.hidden_dim)  # (B, H)
        for t in range(x.shape[1]):
            gh_r, gh_u, gh_n = (h @ self.weight_hh.T + self.bias_hh).chunk(3, dim=-1)
            r = torch.sigmoid(gx_r[:, t] + gh_r)  # (B, H)
            cand = torch.tanh(gx_n[:, t] + r * gh_n)  # (B, H)
            if self.kind == "AGRU":
                u = a[:, t]  # (B, 1)
            else:
                u = torch.sigmoid(gx_u[:, t] + gh_u)  # (B, H)
                if self.kind == "AUGRU":
                    u = a[:, t] * u
            h = torch.where(m[:, t], h + u * (cand - h), h)  # (B, H)
        return h
