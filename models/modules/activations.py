"""Activations of the DIN paper: Dice (data-adaptive PReLU) and PReLU, plus a name lookup."""

from __future__ import annotations

import torch
from torch import nn

from models.modules.fused import FusedDice, native_cpu, update_running_stats


class Dice(nn.Module):
    """Dice (Zhou et al. 2018, eq. 9): ``p(s) * s + (1 - p(s)) * alpha * s``.

    ``p(s) = sigmoid((s - E[s]) / sqrt(Var[s] + eps))`` with batch statistics in training
    and running statistics in eval, per channel (the last dimension). Training on a CPU
    (N, H) batch runs the C++ kernel (``models.modules.fused``), the same function.
    """

    def __init__(self, dim: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, eps=eps, affine=False)
        self.alpha = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.dim() == 2 and len(x) >= 2 and native_cpu(x) is not None:
            y, mean, var = FusedDice.apply(x, self.alpha, self.bn.eps)  # one C++ node
            update_running_stats(self.bn, mean, var, float(len(x)))
            return y
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # (N, H)
        p = torch.sigmoid(self.bn(flat)).reshape(shape)  # (..., H)
        # p * x + (1 - p) * alpha * x, as x * (alpha + p * (1 - alpha)): two large ops, not five
        return torch.addcmul(self.alpha, p, 1.0 - self.alpha) * x


class PReLU(nn.Module):
    """PReLU with one slope per channel of the last dimension (any leading shape)."""

    def __init__(self, dim: int, init: float = 0.25) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x >= 0, x, self.alpha * x)


def make_activation(name: str, dim: int) -> nn.Module:
    """An activation module by name: ``dice``, ``prelu``, ``relu`` or ``sigmoid``."""
    if name == "dice":
        return Dice(dim)
    if name == "prelu":
        return PReLU(dim)
    if name == "relu":
        return nn.ReLU()
    if name == "sigmoid":
        return nn.Sigmoid()
    raise ValueError(f"unknown activation {name!r} (dice, prelu, relu, sigmoid)")
