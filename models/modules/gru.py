"""GRUs of DIEN over packed, length-sorted steps: the plain GRU of the interest extractor and
the attentional AIGRU / AGRU / AUGRU of the interest-evolving layer (DIEN paper, 4.2-4.3).

All follow the paper's convention ``h_t = (1 - u_t) * h_{t-1} + u_t * h~_t``; the attention
score ``a_t`` per step gives:

* ``AIGRU``: the input is scaled, ``i'_t = a_t * i_t``, then a plain GRU step;
* ``AGRU``: the attention replaces the update gate, ``u'_t = a_t``;
* ``AUGRU``: the attention scales the update gate, ``u'_t = a_t * u_t`` (the paper's choice).

The input projection of all steps is one matmul over the packed rows before the loop; the
loop holds the recurrent matmul and a few element-wise ops on the rows still running (see
``models.modules.packing``), so padding costs nothing and cannot change a state.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.modules.packing import Steps
from models.modules.recurrence import FusedGRU

GRU_TYPES = ("AIGRU", "AGRU", "AUGRU")


class _Recurrent(nn.Module):
    def __init__(self, input_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_dim, input_dim))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_dim, hidden_dim))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_dim))
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_dim))
        bound = 1.0 / math.sqrt(hidden_dim)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def run(self, x: torch.Tensor, steps: Steps, kind: str = "GRU",
            att: torch.Tensor | None = None) -> torch.Tensor:
        """Packed states (N, H) of packed inputs x (N, E) with packed attention att (N,)."""
        gx = x @ self.weight_ih.T  # (N, 3H)
        if kind == "AIGRU" and att is not None:
            gx = gx * att.unsqueeze(1)
        gx = gx + self.bias_ih
        a = att.unsqueeze(1) if att is not None else x.new_zeros(len(x), 1)  # (N, 1)
        fused = "GRU" if kind == "AIGRU" else kind
        out: torch.Tensor = FusedGRU.apply(gx, a, self.weight_hh, self.bias_hh, steps.counts,
                                           fused)
        return out


class GRU(_Recurrent):
    """Plain GRU (interest extractor): packed states (N, H) of packed inputs (N, E)."""

    def forward(self, x: torch.Tensor, steps: Steps) -> torch.Tensor:
        return self.run(x, steps) if steps.counts else x.new_zeros(0, self.hidden_dim)


class AttentionalGRU(_Recurrent):
    """AIGRU / AGRU / AUGRU: the state of each row after its last real step."""

    def __init__(self, input_dim: int, hidden_dim: int, kind: str = "AUGRU") -> None:
        super().__init__(input_dim, hidden_dim)
        if kind not in GRU_TYPES:
            raise ValueError(f"unknown attentional GRU {kind!r}; one of {GRU_TYPES}")
        self.kind = kind

    def forward(self, x: torch.Tensor, att: torch.Tensor, steps: Steps) -> torch.Tensor:
        """Final states (B, H), original row order, of packed x (N, E) and att (N,)."""
        if not steps.counts:
            return x.new_zeros(len(steps.order), self.hidden_dim)
        states = self.run(x, steps, self.kind, att)  # (N, H)
        return steps.finals(states.index_select(0, steps.last()))

    def padded(self, x: torch.Tensor, att: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Final states (B, H) of padded inputs x (B, T, E), att (B, T), mask (B, T)."""
        steps = Steps.of(mask)
        return self.forward(steps.pack(x), steps.pack(att), steps)
