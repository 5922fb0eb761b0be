"""A fused GRU recurrence over packed steps with a hand-written backward pass.

One autograd node for the whole sequence instead of ~10 per step. ``kind``: ``GRU`` (plain
update gate; AIGRU scales its input outside), ``AUGRU`` (``u' = a * u``) or ``AGRU``
(``u' = a``). The reset/update gates' input terms and both biases are added before the loop
into ``gh`` (N, 3H); per step only the recurrent chain runs: ``gh_t += h_{t-1} W_hh^T``, a
sigmoid for r and u, ``c = tanh(gx_c + r * gh_c)``, ``h = h_prev + u' * (c - h_prev)``.
The backward uses that every gradient of a step is the incoming state gradient ``g_t``
times coefficients known after the forward, so the reverse loop holds only
``d_gh_t = g_t * K_t`` and ``g_{t-1} += g_t * (1 - u'_t) + d_gh_t @ W_hh``; the weight and
input gradients are matmuls over all steps.

Two implementations of the same algebra: the C++ loops of ``csrc/recurrence.cpp`` (built on
first use, see :mod:`models.modules._native`; each step's element-wise work is one
vectorised loop, the backward one reverse pass computing its coefficients on the fly), used
for CPU tensors, and the Python loops below (the same steps as a few in-place ATen ops each),
used on a GPU or where no C++ build is possible. They agree to float rounding (tested).
Gradients are checked against autograd on the paper's equations and by ``gradcheck`` in
tests/models/modules/test_gru.py. The backward is not differentiable again.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from models.modules._native import native
from models.modules.packing import prev_index

_KINDS = {"GRU": 0, "AUGRU": 1, "AGRU": 2}  # the codes of csrc/recurrence.cpp
ROWS_PER_PART = 64  # the C++ loops give a thread a share of the rows when it gets this many
_parts_override: list[int] = []


def row_parts(counts: list[int]) -> int:
    """How many threads the C++ loops split the rows over: one per intra-op thread, each
    with at least ``ROWS_PER_PART`` rows of the widest step (a smaller matmul does not pay for
    its thread). ``force_row_parts`` overrides it (tests check that every split agrees)."""
    if _parts_override:
        return max(1, min(_parts_override[0], counts[0] if counts else 1))
    widest = counts[0] if counts else 0
    return max(1, min(torch.get_num_threads(), widest // ROWS_PER_PART))


def force_row_parts(parts: int | None) -> None:
    """Split the C++ loops' rows into ``parts`` whatever the batch (None: the default)."""
    _parts_override[:] = [] if parts is None else [parts]


def _cpp(like: torch.Tensor) -> ModuleType | None:
    """The C++ loops for tensors like ``like`` (CPU, float), else None: the Python loops."""
    if like.device.type != "cpu" or like.dtype not in (torch.float32, torch.float64):
        return None
    return native()


class FusedGRU(torch.autograd.Function):
    """states (N, H) = recurrence(gx (N, 3H) incl. input bias, att (N, 1), w_hh, b_hh)."""

    @staticmethod
    def forward(ctx: Any, gx: torch.Tensor, att: torch.Tensor, w_hh: torch.Tensor,
                b_hh: torch.Tensor, counts: list[int], kind: str) -> torch.Tensor:
        n_all, hdim = gx.shape[0], w_hh.shape[1]
        # gh: [r/u pre-activations (input part + both biases, + recurrent part per step),
        # recurrent candidate part with its bias]; the candidate's input part stays in gx.
        gh = b_hh.repeat(n_all, 1)  # (N, 3H)
        gh[:, :2 * hdim].add_(gx[:, :2 * hdim])
        states = gx.new_empty(n_all, hdim)
        ru = gx.new_empty(n_all, 2 * hdim)  # reset and update gates (before attention)
        c = gx.new_empty(n_all, hdim)  # candidate state
        if (ext := _cpp(gx)) is not None:
            ext.forward_loop(gh, gx, att, w_hh, states, ru, c, counts, _KINDS[kind],
                             row_parts(counts))
        else:
            _forward_loop(gh, gx, att, w_hh, states, ru, c, counts, kind)
        ctx.save_for_backward(att, w_hh, states, ru, c, gh)
        ctx.counts, ctx.kind = counts, kind
        return states

    @staticmethod
    @once_differentiable  # the backward writes into preallocated buffers (out=)
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:
        att, w_hh, states, ru, c, gh = ctx.saved_tensors
        counts, kind = ctx.counts, ctx.kind
        if (ext := _cpp(states)) is not None:
            d_gx, d_att, d_w, d_b = ext.backward(grads[0], att, w_hh, states, ru, c, gh,
                                                 counts, _KINDS[kind], row_parts(counts))
        else:
            d_gx, d_att, d_w, d_b = _backward(grads[0], att, w_hh, states, ru, c, gh, counts,
                                              kind)
        return d_gx, d_att if kind != "GRU" else None, d_w, d_b, None, None


def _forward_loop(gh: torch.Tensor, gx: torch.Tensor, att: torch.Tensor, w_hh: torch.Tensor,
                  states: torch.Tensor, ru: torch.Tensor, c_all: torch.Tensor,
                  counts: list[int], kind: str) -> None:
    """The forward recurrence in Python: fills gh, states, ru, c_all in place."""
    hdim = w_hh.shape[1]
    h2 = 2 * hdim
    # Every per-step view is cut once here (one split each) rather than in the loop.
    gh_steps, ghru_steps = gh.split(counts), gh[:, :h2].split(counts)
    ghc_steps, gx_c = gh[:, h2:].split(counts), gx[:, h2:].split(counts)
    ru_steps, r_steps = ru.split(counts), ru[:, :hdim].split(counts)
    u_steps, c_steps = ru[:, hdim:].split(counts), c_all.split(counts)
    h_steps, atts = states.split(counts), att.split(counts)
    n0 = counts[0] if counts else 0
    u_eff = gx.new_empty(n0, hdim) if kind == "AUGRU" else None
    hp = gx.new_zeros(n0, hdim)
    w_t = w_hh.T
    for t in range(len(counts)):
        if t > 0:  # h_0 = 0: step 0 has no recurrent term
            gh_steps[t].addmm_(hp, w_t)  # (n, 3H)
        torch.sigmoid(ghru_steps[t], out=ru_steps[t])  # (n, 2H)
        c = torch.addcmul(gx_c[t], r_steps[t], ghc_steps[t], out=c_steps[t]).tanh_()
        u: torch.Tensor = u_steps[t]  # (n, H)
        if u_eff is not None:  # AUGRU
            u = torch.mul(u, atts[t], out=u_eff[:counts[t]])
        elif kind == "AGRU":
            u = atts[t]  # (n, 1), broadcast over H
        h = torch.lerp(hp, c, u, out=h_steps[t])  # (n, H) h_prev + u * (c - h_prev)
        hp = h[:counts[t + 1]] if t + 1 < len(counts) else h


def _backward(grad: torch.Tensor, att: torch.Tensor, w_hh: torch.Tensor, states: torch.Tensor,
              ru: torch.Tensor, c: torch.Tensor, gh: torch.Tensor, counts: list[int],
              kind: str) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """The backward in Python: (d_gx, d_att, d_w_hh, d_b_hh); the coefficients are computed
    for all steps at once, the reverse loop keeps three in-place ops on preallocated views."""
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
    g_all = grad.contiguous().clone()  # (N, H) becomes dL/dh_t with the carry
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
    d_att = None  # the plain GRU has no attention input
    if kind == "AUGRU":
        d_att = (g_all * diff * u).sum(dim=1, keepdim=True)  # (N, 1)
    elif kind == "AGRU":
        d_att = (g_all * diff).sum(dim=1, keepdim=True)  # (N, 1)
    return d_gx, d_att, d_gh.T @ prev, d_gh.sum(dim=0)
