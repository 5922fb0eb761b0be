"""A fused GRU recurrence over packed steps with a hand-written backward pass.

One autograd node for the whole sequence instead of ~10 per step. ``kind``: ``GRU`` (plain
update gate; AIGRU scales its input outside), ``AUGRU`` (``u' = a * u``) or ``AGRU``
(``u' = a``). Per step of the forward loop only the recurrent chain runs: one addmm (the
reset/update gates' input terms and both biases are added before the loop), a sigmoid, an
addcmul (with the candidate's input term) + tanh, a lerp for
``h = h_prev + u' * (c - h_prev)`` (and the attention product for AUGRU), each written in
place into preallocated buffers whose per-step views are cut once before the loop (CPU time
at these sizes is per op, not per element). The backward uses that every gradient of a step
is the incoming state gradient ``g_t`` times coefficients known after the forward: those
coefficients are computed for all steps at once, so the reverse loop holds only
``d_gh_t = g_t * K_t`` and ``g_{t-1} += g_t * (1 - u'_t) + d_gh_t @ W_hh`` (three in-place
ops on preallocated views); the weight and input gradients are single matmuls over all
steps at the end. Gradients are checked against autograd on the paper's equations and by
``gradcheck`` on every state in tests/models/modules/test_gru.py. The backward is not
differentiable again (``once_differentiable``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

from models.modules.packing import prev_index


class FusedGRU(torch.autograd.Function):
    """states (N, H) = recurrence(gx (N, 3H) incl. input bias, att (N, 1), w_hh, b_hh)."""

    @staticmethod
    def forward(ctx: Any, gx: torch.Tensor, att: torch.Tensor, w_hh: torch.Tensor,
                b_hh: torch.Tensor, counts: list[int], kind: str) -> torch.Tensor:
        n_all, hdim = gx.shape[0], w_hh.shape[1]
        h2 = 2 * hdim
        # Per step, one addmm gives the reset/update pre-activations (input part, both biases
        # and the recurrent part, columns :2H) and the recurrent candidate part with its bias
        # (columns 2H:, kept for the backward): the r/u input terms are added once, up front;
        # the candidate's input term joins in the step's addcmul.
        pre = b_hh.repeat(n_all, 1)  # (N, 3H) -> [gx_ru + b_hh_ru, b_hh_c]
        pre[:, :h2].add_(gx[:, :h2])
        states = gx.new_empty(n_all, hdim)
        ru_all = gx.new_empty(n_all, h2)  # reset and update gates (before attention)
        c_all = gx.new_empty(n_all, hdim)  # candidate state
        gh_all = gx.new_empty(n_all, 3 * hdim)  # [r/u pre-activations, recurrent candidate]
        # Every per-step view is cut once here (one split each) rather than in the loop.
        pre_steps, gx_c = pre.split(counts), gx[:, h2:].split(counts)
        gh_steps, ghru_steps = gh_all.split(counts), gh_all[:, :h2].split(counts)
        ghc_steps = gh_all[:, h2:].split(counts)
        ru_steps, r_steps = ru_all.split(counts), ru_all[:, :hdim].split(counts)
        u_steps, c_steps = ru_all[:, hdim:].split(counts), c_all.split(counts)
        h_steps, atts = states.split(counts), att.split(counts)
        n0 = counts[0] if counts else 0
        u_eff = gx.new_empty(n0, hdim) if kind == "AUGRU" else None
        hp = gx.new_zeros(n0, hdim)
        w_t = w_hh.T
        for t in range(len(counts)):
            torch.addmm(pre_steps[t], hp, w_t, out=gh_steps[t])  # (n, 3H)
            torch.sigmoid(ghru_steps[t], out=ru_steps[t])  # (n, 2H)
            c = torch.addcmul(gx_c[t], r_steps[t], ghc_steps[t], out=c_steps[t]).tanh_()
            u: torch.Tensor = u_steps[t]  # (n, H)
            if u_eff is not None:  # AUGRU
                u = torch.mul(u, atts[t], out=u_eff[:counts[t]])
            elif kind == "AGRU":
                u = atts[t]  # (n, 1), broadcast over H
            h = torch.lerp(hp, c, u, out=h_steps[t])  # (n, H) h_prev + u * (c - h_prev)
            hp = h[:counts[t + 1]] if t + 1 < len(counts) else h
        ctx.save_for_backward(att, w_hh, states, ru_all, c_all, gh_all)
        ctx.counts, ctx.kind = counts, kind
        return states

    @staticmethod
    @once_differentiable  # the backward writes into preallocated buffers (out=)
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:
        att, w_hh, states, ru, c, gh = ctx.saved_tensors
        counts, kind = ctx.counts, ctx.kind
        n_all, hdim = states.shape
        prev = torch.empty_like(states)  # (N, H) h_{t-1} of every packed element
        prev[:counts[0]].zero_()
        torch.index_select(states, 0, prev_index(counts, states.device), out=prev[counts[0]:])
        r, u, gh_c = ru[:, :hdim], ru[:, hdim:], gh[:, 2 * hdim:]
        u_eff = u * att if kind == "AUGRU" else att.expand_as(c) if kind == "AGRU" else u
        diff = c - prev  # dh/du' per unit of g
        k_c = u_eff * (1 - c * c)  # dL/d(candidate pre-activation) per unit of g
        coef = states.new_empty(n_all, 3, hdim)  # (N, 3, H) per unit of g: [r, u, c] parts
        torch.mul(k_c * gh_c, r * (1 - r), out=coef[:, 0])
        if kind == "AGRU":
            coef[:, 1].zero_()
        else:
            torch.mul(diff * u, (1 - u) * att if kind == "AUGRU" else 1 - u, out=coef[:, 1])
        torch.mul(k_c, r, out=coef[:, 2])
        keep = 1 - u_eff  # (N, H) dh_t / dh_{t-1}, direct path
        g_all = grads[0].contiguous().clone()  # (N, H) becomes dL/dh_t with the carry
        d_gh3 = torch.empty_like(coef)  # (N, 3, H) dL/d(gate pre-activations), per step
        d_gh = d_gh3.view(n_all, 3 * hdim)  # (N, 3H)
        g_steps, g3_steps = g_all.split(counts), g_all.unsqueeze(1).split(counts)
        coef_steps, keep_steps = coef.split(counts), keep.split(counts)
        d3_steps, d_steps = d_gh3.split(counts), d_gh.split(counts)
        for t in range(len(counts) - 1, -1, -1):
            torch.mul(g3_steps[t], coef_steps[t], out=d3_steps[t])  # (n, 3, H)
            if t > 0:  # carry into dL/dh_{t-1} of the rows still running at t
                g_prev = g_steps[t - 1][:counts[t]]  # (n, H)
                g_prev.addcmul_(g_steps[t], keep_steps[t]).addmm_(d_steps[t], w_hh)
        d_gx = d_gh.clone()  # (N, 3H); the candidate's input part lacks the reset gate
        torch.mul(g_all, k_c, out=d_gx[:, 2 * hdim:])
        d_att = None
        if kind == "AUGRU":
            d_att = (g_all * diff * u).sum(dim=1, keepdim=True)  # (N, 1)
        elif kind == "AGRU":
            d_att = (g_all * diff).sum(dim=1, keepdim=True)  # (N, 1)
        d_w = d_gh.T @ prev  # (3H, H)
        return d_gx, d_att, d_w, d_gh.sum(dim=0), None, None
