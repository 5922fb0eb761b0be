"""A fused GRU recurrence over packed steps with a hand-written backward pass.

One autograd node for the whole sequence instead of ~10 per step: the forward loop runs
without autograd and keeps the gates; the backward loop walks the steps in reverse and the
recurrent weight gradient is one matmul over all steps at the end. ``kind``: ``GRU`` (plain
update gate; AIGRU scales its input outside), ``AUGRU`` (``u' = a * u``) or ``AGRU``
(``u' = a``). Gradients are checked against autograd on the paper's equations in
tests/models/modules/test_gru.py.
"""

from __future__ import annotations

from typing import Any

import torch


class FusedGRU(torch.autograd.Function):
    """states (N, H) = recurrence(gx (N, 3H) incl. input bias, att (N, 1), w_hh, b_hh)."""

    @staticmethod
    def forward(ctx: Any, gx: torch.Tensor, att: torch.Tensor, w_hh: torch.Tensor,
                b_hh: torch.Tensor, counts: list[int], kind: str) -> torch.Tensor:
        n_all, hdim = gx.shape[0], w_hh.shape[1]
        states = gx.new_empty(n_all, hdim)
        prev = gx.new_zeros(n_all, hdim)  # h_{t-1} of each element
        gates = gx.new_empty(n_all, 3 * hdim)  # r, u (before attention), c
        gh_c = gx.new_empty(n_all, hdim)  # recurrent part of the candidate, with bias
        h = gx.new_zeros(counts[0] if counts else 0, hdim)
        w_t = w_hh.T
        off = 0
        for n in counts:
            sl = slice(off, off + n)
            hp = h[:n]
            prev[sl] = hp
            gh = torch.addmm(b_hh, hp, w_t)  # (n, 3H)
            ru = torch.sigmoid(gx[sl, :2 * hdim] + gh[:, :2 * hdim])  # (n, 2H)
            c = torch.tanh(torch.addcmul(gx[sl, 2 * hdim:], ru[:, :hdim], gh[:, 2 * hdim:]))
            u = ru[:, hdim:]
            if kind == "AUGRU":
                u = u * att[sl]
            elif kind == "AGRU":
                u = att[sl].expand_as(c)
            h = torch.addcmul(hp, u, c - hp)  # (n, H)
            states[sl] = h
            gates[sl, :2 * hdim] = ru
            gates[sl, 2 * hdim:] = c
            gh_c[sl] = gh[:, 2 * hdim:]
            off += n
        ctx.save_for_backward(att, w_hh, prev, gates, gh_c)
        ctx.counts, ctx.kind = counts, kind
        return states

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:
        att, w_hh, prev, gates, gh_c = ctx.saved_tensors
        d_states = grads[0]
        counts, kind = ctx.counts, ctx.kind
        hdim = w_hh.shape[1]
        d_gx = torch.empty_like(gates)  # (N, 3H); doubles as d(gh) for r and u
        d_ghc = torch.empty_like(gh_c)  # (N, H)
        d_att = torch.zeros_like(att) if kind != "GRU" else None
        carry = d_states.new_zeros(0, hdim)
        ends = [0]
        for n in counts:
            ends.append(ends[-1] + n)
        for t in range(len(counts) - 1, -1, -1):
            sl = slice(ends[t], ends[t + 1])
            g = d_states[sl].clone()
            g[:carry.shape[0]] += carry
            hp, r, u, c = prev[sl], gates[sl, :hdim], gates[sl, hdim:2 * hdim], gates[sl, 2 * hdim:]
            if kind == "AUGRU":
                a = att[sl]
                u_eff = u * a
            elif kind == "AGRU":
                u_eff = att[sl].expand_as(c)
            else:
                u_eff = u
            d_ueff = g * (c - hp)
            d_cpre = g * u_eff * (1 - c * c)  # (n, H)
            d_gx[sl, 2 * hdim:] = d_cpre
            d_ghc[sl] = d_cpre * r
            d_gx[sl, :hdim] = d_cpre * gh_c[sl] * r * (1 - r)
            if kind == "AUGRU":
                assert d_att is not None
                d_att[sl] = (d_ueff * u).sum(dim=1, keepdim=True)
                d_gx[sl, hdim:2 * hdim] = d_ueff * a * u * (1 - u)
            elif kind == "AGRU":
                assert d_att is not None
                d_att[sl] = d_ueff.sum(dim=1, keepdim=True)
                d_gx[sl, hdim:2 * hdim] = 0
            else:
                d_gx[sl, hdim:2 * hdim] = d_ueff * u * (1 - u)
            d_gh = torch.cat([d_gx[sl, :2 * hdim], d_ghc[sl]], dim=1)  # (n, 3H)
            carry = torch.addmm(g * (1 - u_eff), d_gh, w_hh)  # (n, H) = d h_{t-1}
        d_gh_all = torch.cat([d_gx[:, :2 * hdim], d_ghc], dim=1)  # (N, 3H)
        d_w = d_gh_all.T @ prev  # (3H, H)
        return d_gx, d_att, d_w, d_gh_all.sum(dim=0), None, None
