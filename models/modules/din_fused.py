"""DIN attention pooling in training as one autograd node (C++, ``csrc/din_attention.cpp``).

``AttentionPooling`` in training with the paper's unit (one hidden layer, Dice, no softmax)
on CPU tensors runs through here: the activation unit's first layer, Dice with batch
statistics over the real positions, the score and the weighted sum of the keys are one C++
pass per batch row (the rows dealt to torch's threads), and the backward two more. The same
function as the ATen path of ``models.modules.attention`` (tested to float rounding, and by
``gradcheck``); that path remains for eval, GPUs, other configurations and where no C++
build is possible (``models.modules._native``).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from models.modules.activations import Dice
from models.modules.fused import native_cpu, native_ext, update_running_stats


class ActivationUnitLike(Protocol):
    """What this module reads of a DIN activation unit (``models.modules.attention``, which
    calls it): the first layer over ``[q, k, q - k, q * k]``, its activation, the rest."""

    dim: int
    first: nn.Linear
    first_act: nn.Module
    rest: nn.Sequential


class FusedDINPooling(torch.autograd.Function):
    """interest (B, E) from c (B, H) = W_c q + bias, q (B, E), keys (B, T, E), mask (B, T),
    w_k / w_p (E, H), Dice's alpha (H), the score's w2 (H) and b2 (1,); and the plain sum
    of the keys over the real positions, pooled (B, E), which the same pass gets for free.

    Also returns Dice's batch mean and biased variance (H,) and the real-position count,
    for the caller's running statistics (not differentiable).
    """

    @staticmethod
    def forward(ctx: Any, c: torch.Tensor, q: torch.Tensor, keys: torch.Tensor,
                mask: torch.Tensor, w_k: torch.Tensor, w_p: torch.Tensor, alpha: torch.Tensor,
                w2: torch.Tensor, b2: torch.Tensor, eps: float
                ) -> tuple[torch.Tensor, ...]:
        b2v = float(b2)
        out, pooled, hidden, gates, scores, mean, var, n = native_ext().din_forward(
            c, q, keys, mask, w_k, w_p, alpha, w2, b2v, eps)
        ctx.save_for_backward(q, keys, mask, w_k, w_p, alpha, w2, hidden, gates, scores, mean,
                              var)
        ctx.eps = eps
        ctx.mark_non_differentiable(mean, var, n)
        return out, pooled, mean, var, n

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor, grad_pooled: torch.Tensor, *_: Any
                 ) -> tuple[Any, ...]:
        d_c, d_q, d_keys, d_wk, d_wp, d_alpha, d_w2, d_b2 = native_ext().din_backward(
            grad, grad_pooled, *ctx.saved_tensors, ctx.eps)
        return d_c, d_q, d_keys, None, d_wk, d_wp, d_alpha, d_w2, d_b2.reshape(1), None


def fusable(unit: ActivationUnitLike, softmax: bool, training: bool, keys: torch.Tensor,
            mask: torch.Tensor) -> bool:
    """Whether the fused path computes this call: training, the paper's unit, CPU floats,
    at least two real positions (Dice's batch statistics), a C++ build."""
    return (training and not softmax and native_cpu(keys) is not None
            and isinstance(unit.first_act, Dice) and len(unit.rest) == 1
            and int(mask.sum()) >= 2)


def fused_pooling(unit: ActivationUnitLike, query: torch.Tensor, keys: torch.Tensor,
                  mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``sum_t w(query, key_t) key_t`` (B, E) with ``unit`` (an ActivationUnit) and
    ``sum_t key_t`` (B, E) over the real positions; updates the running statistics of its
    Dice as the ATen path's BatchNorm does."""
    w_q, w_k, w_d, w_p = unit.first.weight.split(unit.dim, dim=1)  # 4 x (H, E)
    c = torch.addmm(unit.first.bias, query, (w_q + w_d).T)  # (B, H)
    dice, last = unit.first_act, unit.rest[0]
    assert isinstance(dice, Dice) and isinstance(last, nn.Linear)
    out, pooled, mean, var, n = FusedDINPooling.apply(
        c, query, keys, mask.contiguous(), (w_k - w_d).T, w_p.T, dice.alpha,
        last.weight.reshape(-1), last.bias, dice.bn.eps)
    update_running_stats(dice.bn, mean, var, float(n))
    return out, pooled
