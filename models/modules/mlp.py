"""Multi-layer perceptron used for the top networks, attention units and the DIEN aux net."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.modules.activations import make_activation


class Dropout(nn.Module):
    """Inverted dropout with the mask drawn by ``rand_like``: the same function as
    ``nn.Dropout``, but on CPU ``bernoulli_`` (what ``nn.Dropout`` draws with) costs ~2x a
    uniform draw, about 1 ms of an 11 ms DIN training step at batch 256."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand_like(x) >= self.p  # (..., H) bool
        return x * keep * (1.0 / (1.0 - self.p))


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
