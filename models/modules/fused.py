"""Dice and dropout in training as one autograd node each (C++, ``csrc/dice_dropout.cpp``).

ATen computes Dice over a (N, H) batch with ~10 kernels forward and backward (batch norm,
sigmoid, addcmul, mul) and dropout with a Bernoulli draw per element; on CPU the C++ passes
do the same algebra in three passes over the batch (tested to float rounding against the
ATen path and by ``gradcheck``). ``models.modules.activations.Dice`` and
``models.modules.dropout.Dropout`` use them in training on CPU when the kernels are built
(``models.modules._native``); eval, GPUs and machines without a C++ build keep ATen.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from models.modules._native import native


def native_ext() -> Any:
    """The C++ module, for callers that checked ``native_cpu`` (or ``native``) first."""
    ext = native()
    assert ext is not None
    return ext


def native_cpu(x: torch.Tensor) -> Any:
    """The C++ module when it can compute on ``x`` (a float CPU tensor), else None."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return None
    return native()


class FusedDice(torch.autograd.Function):
    """Dice over x (N, H) with batch statistics: y (N, H), and the batch's mean and biased
    variance (H, float64; not differentiable) for the caller's running statistics."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, alpha: torch.Tensor, eps: float
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y, p, mean, var = native_ext().dice_forward(x, alpha, eps)
        ctx.save_for_backward(x, p, alpha, mean, var)
        ctx.eps = eps
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor, *_: Any) -> tuple[Any, ...]:
        dx, d_alpha = native_ext().dice_backward(grad, *ctx.saved_tensors, ctx.eps)
        return dx, d_alpha, None


class FusedDropout(torch.autograd.Function):
    """``x * mask / (1 - p)``, the mask drawn in C++ from torch's default CPU generator."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p: float) -> torch.Tensor:
        y, scale = native_ext().dropout_forward(x, p)  # scale: 1 / (1 - p) where kept, else 0
        ctx.save_for_backward(scale)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        (scale,) = ctx.saved_tensors
        return grad * scale, None


def update_running_stats(bn: nn.BatchNorm1d, mean: torch.Tensor, var: torch.Tensor,
                         count: float) -> None:
    """What ``bn`` does to its running statistics in a training step whose batch had this
    (biased) mean and variance over ``count`` values a channel (one C++ call)."""
    if not bn.track_running_stats or bn.running_mean is None or bn.running_var is None:
        return
    tracked = bn.num_batches_tracked
    if tracked is not None:
        tracked.add_(1)
    # BatchNorm's factor: its momentum, or a cumulative average when it has none
    m: float = 0.1 if bn.momentum is None else bn.momentum  # (None, no count: 0.1)
    if bn.momentum is None and tracked is not None:
        m = 1.0 / float(tracked)
    native_ext().bn_running_update(bn.running_mean, bn.running_var, mean, var, m, count)
