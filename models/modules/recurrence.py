"""A fused GRU recurrence over packed steps with a hand-written backward pass.

One autograd node for the whole sequence instead of ~10 per step. ``kind``: ``GRU`` (plain
update gate; AIGRU scales its input outside), ``AUGRU`` (``u' = a * u``) or ``AGRU``
(``u' = a``). Per step of the forward loop only the recurrent chain runs (one matmul and a
few element-wise ops written in place into preallocated buffers, no copies). The backward
uses that every gradient of a step is the incoming state gradient ``g_t`` times
coefficients known after the forward: those coefficients are computed for all steps at
once, so the reverse loop holds only ``d_gh_t = g_t * K_t`` and
``g_{t-1} += g_t * (1 - u'_t) + d_gh_t @ W_hh``; the weight and input gradients are single
matmuls over all steps at the end. Gradients are checked against autograd on the paper's
equations in tests/models/modules/test_gru.py.
"""

from __future__ import annotations

from typing import Any

import torch


def _prev_index(counts: list[int], device: torch.device) -> torch.Tensor:
    """Packed index of h_{t-1} for every element after step 0 (rows keep their rank)."""
    c = torch.tensor(counts, device=device)
    n0, total = counts[0], int(c.sum())
    shift = torch.repeat_interleave(c[:-1], c[1:])  # (N - n0,) rows of the previous step
    return torch.arange(n0, total, device=device) - shift


class FusedGRU(torch.autograd.Function):
    """states (N, H) = recurrence(gx (N, 3H) incl. input bias, att (N, 1), w_hh, b_hh)."""

    @staticmethod
    def forward(ctx: Any, gx: torch.Tensor, att: torch.Tensor, w_hh: torch.Tensor,
                b_hh: torch.Tensor, counts: list[int], kind: str) -> torch.Tensor:
        n_all, hdim = gx.shape[0], w_hh.shape[1]
        states = gx.new_empty(n_all, hdim)
        ru_all = gx.new_empty(n_all, 2 * hdim)  # reset and update gates (before attention)
        c_all = gx.new_empty(n_all, hdim)  # candidate state
        gh_all = gx.new_empty(n_all, 3 * hdim)  # recurrent pre-activations, with bias
        gx_ru = gx[:, :2 * hdim].contiguous().split(counts)  # per step (n, 2H)
        gx_c = gx[:, 2 * hdim:].contiguous().split(counts)  # per step (n, H)
        atts = att.split(counts)
        h_steps, ru_steps = states.split(counts), ru_all.split(counts)
        c_steps, gh_steps = c_all.split(counts), gh_all.split(counts)
        hp = gx.new_zeros(counts[0] if counts else 0, hdim)
        w_t = w_hh.T
        for t in range(len(counts)):
            gh, ru, c, h = gh_steps[t], ru_steps[t], c_steps[t], h_steps[t]
            torch.addmm(b_hh, hp, w_t, out=gh)  # (n, 3H)
            torch.add(gx_ru[t], gh[:, :2 * hdim], out=ru).sigmoid_()  # (n, 2H)
            torch.addcmul(gx_c[t], ru[:, :hdim], gh[:, 2 * hdim:], out=c).tanh_()  # (n, H)
            u: torch.Tensor = ru[:, hdim:]
            if kind == "AUGRU":
                u = u * atts[t]
            elif kind == "AGRU":
                u = atts[t]  # (n, 1), broadcast over H
            torch.addcmul(hp, u, c - hp, out=h)  # (n, H)
            hp = h[:counts[t + 1]] if t + 1 < len(counts) else h
        ctx.save_for_backward(att, w_hh, states, ru_all, c_all, gh_all)
        ctx.counts, ctx.kind = counts, kind
        return states

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:
        att, w_hh, states, ru, c, gh = ctx.saved_tensors
        counts, kind = ctx.counts, ctx.kind
        n_all, hdim = states.shape
        prev = torch.cat([states.new_zeros(counts[0], hdim),
                          states.index_select(0, _prev_index(counts, states.device))])  # (N, H)
        r, u, gh_c = ru[:, :hdim], ru[:, hdim:], gh[:, 2 * hdim:]
        u_eff = u * att if kind == "AUGRU" else att.expand_as(c) if kind == "AGRU" else u
        diff = c - prev  # dh/du' per unit of g
        k_c = u_eff * (1 - c * c)  # dL/d(candidate pre-activation) per unit of g
        if kind == "AGRU":
            k_u = torch.zeros_like(u)
        else:
            k_u = diff * u * (1 - u) * (att if kind == "AUGRU" else 1)
        coef = torch.cat([k_c * gh_c * r * (1 - r), k_u, k_c * r], dim=1)  # (N, 3H)
        keep = 1 - u_eff  # (N, H) dh_t / dh_{t-1}, direct path
        g_all = grads[0].contiguous().clone()  # (N, H) becomes dL/dh_t with the carry
        g_steps, coef_steps = g_all.split(counts), coef.split(counts)
        keep_steps = keep.split(counts)
        carry: torch.Tensor | None = None
        for t in range(len(counts) - 1, -1, -1):
            n, g = counts[t], g_steps[t]
            if carry is not None:
                g[:carry.shape[0]].add_(carry)
            d_gh_t = (g.unsqueeze(1) * coef_steps[t].view(n, 3, hdim)).view(n, 3 * hdim)  # (n, 3H)
            carry = torch.addmm(g * keep_steps[t], d_gh_t, w_hh)  # (n, H) d h_{t-1}
        d_gh = (g_all.unsqueeze(1) * coef.view(n_all, 3, hdim)).view(n_all, 3 * hdim)  # (N, 3H)
        d_gx = torch.cat([d_gh[:, :2 * hdim], g_all * k_c], dim=1)  # (N, 3H)
        d_att = None
        if kind == "AUGRU":
            d_att = (g_all * diff * u).sum(dim=1, keepdim=True)  # (N, 1)
        elif kind == "AGRU":
            d_att = (g_all * diff).sum(dim=1, keepdim=True)  # (N, 1)
        d_w = d_gh.T @ prev  # (3H, H)
        return d_gx, d_att, d_w, d_gh.sum(dim=0), None, None
