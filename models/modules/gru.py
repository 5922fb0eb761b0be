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
            att: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """States per step (counts[t], H) and final states (counts[0], H), sorted order,
        of packed inputs x (N, E) with packed attention att (N,)."""
        hdim = self.hidden_dim
        gx = x @ self.weight_ih.T  # (N, 3H)
        if kind == "AIGRU" and att is not None:
            gx = gx * att.unsqueeze(1)
        gxs = steps.split(gx + self.bias_ih)  # T' x (n_t, 3H)
        atts = steps.split(att.unsqueeze(1)) if att is not None else []  # T' x (n_t, 1)
        h = x.new_zeros(steps.counts[0] if steps.counts else 0, hdim)  # (B, H)
        w_hh = self.weight_hh.T  # (H, 3H)
        states: list[torch.Tensor] = []
        finals: list[torch.Tensor] = []
        for t, n in enumerate(steps.counts):
            if n < h.shape[0]:
                h, done = h.split([n, h.shape[0] - n])  # (n, H)
                finals.append(done)
            g_ru, g_c = gxs[t].split([2 * hdim, hdim], dim=1)
            h_ru, h_c = torch.addmm(self.bias_hh, h, w_hh).split([2 * hdim, hdim], dim=1)
            r, u = torch.sigmoid(g_ru + h_ru).split([hdim, hdim], dim=1)  # (n, H) each
            if kind == "AGRU":
                u = atts[t].expand_as(u)
            elif kind == "AUGRU":
                u = u * atts[t]
            cand = torch.tanh(torch.addcmul(g_c, r, h_c))  # (n, H)
            h = torch.addcmul(h, u, cand - h)  # (n, H)
            states.append(h)
        finals.append(h)
        return states, torch.cat(finals[::-1], dim=0)


class GRU(_Recurrent):
    """Plain GRU (interest extractor): packed states (N, H) of packed inputs (N, E)."""

    def forward(self, x: torch.Tensor, steps: Steps) -> torch.Tensor:
        return torch.cat(self.run(x, steps)[0]) if steps.counts else x.new_zeros(0,
                                                                                 self.hidden_dim)


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
        return steps.finals(self.run(x, steps, self.kind, att)[1])

    def padded(self, x: torch.Tensor, att: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Final states (B, H) of padded inputs x (B, T, E), att (B, T), mask (B, T)."""
        steps = Steps.of(mask)
        return self.forward(steps.pack(x), steps.pack(att), steps)
