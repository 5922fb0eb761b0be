"""Multi-layer perceptron used for the top networks, attention units and the DIEN aux net."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.modules.activations import make_activation
from models.modules.dropout import Dropout


class MLP(nn.Module):
    """``[BatchNorm ->] (Linear -> activation [-> dropout]) per hidden size [-> Linear]``.

    Input batch normalisation is the first layer of the authors' released top net
    (``build_fcn_net``); without it the MLP works on any leading shape (..., in_dim).
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], activation: str = "prelu",
                 out_dim: int | None = 1, dropout: float = 0.0, input_bn: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.BatchNorm1d(in_dim)] if input_bn else []
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
