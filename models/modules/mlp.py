"""Multi-layer perceptron used for the top networks, attention units and the DIEN aux net."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.modules.activations import make_activation
from models.modules.dropout import Dropout


class InputNorm(nn.BatchNorm1d):
    """BatchNorm1d whose inference divides by ``sqrt(running_var + var_floor + eps)``.

    Training is plain BatchNorm (batch statistics). At inference a channel whose spread is
    small against ``var_floor`` is shrunk toward its mean, by ``sqrt(v / (v + var_floor))``;
    channels of large spread are left nearly as they were. 0 (the default) is BatchNorm1d.
    Same parameters and buffers as BatchNorm1d, so checkpoints do not change.
    (docs/models.md, "Training recipe": DIN on ml-100k.)
    """

    def __init__(self, dim: int, var_floor: float = 0.0) -> None:
        super().__init__(dim)
        if var_floor < 0:
            raise ValueError(f"var_floor must be >= 0, not {var_floor}")
        self.var_floor = var_floor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.var_floor == 0.0 or self.running_var is None:
            return super().forward(x)
        return F.batch_norm(x, self.running_mean, self.running_var + self.var_floor,
                            self.weight, self.bias, False, 0.0, self.eps)


class MLP(nn.Module):
    """``[BatchNorm ->] (Linear -> activation [-> dropout]) per hidden size [-> Linear]``.

    Input batch normalisation is the first layer of the authors' released top net
    (``build_fcn_net``); without it the MLP works on any leading shape (..., in_dim).
    ``input_var_floor``: the input normalisation's inference variance floor (:class:`InputNorm`).
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], activation: str = "prelu",
                 out_dim: int | None = 1, dropout: float = 0.0, input_bn: bool = False,
                 input_var_floor: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [InputNorm(in_dim, input_var_floor)] if input_bn else []
        prev = in_dim
        for size in hidden:
            layers += [nn.Linear(prev, size), make_activation(activation, size)]
            if dropout > 0:
                layers.append(Dropout(dropout))
            prev = size
        if out_dim is not None:
            layers.append(nn.Linear(prev, out_dim))
            prev = out_dim
        self.net = nn.Sequential(*layers)
        self.out_features = prev

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
