"""Dropout of the top MLPs: ``nn.Dropout`` whose training pass on CPU runs in C++.

torch's CPU dropout draws one Bernoulli number per element from its Mersenne twister
(~0.5 ms for a 256 x 200 batch on the 2-core host, as much as the layer's matmul); the C++
kernel (``models.modules.fused.FusedDropout``) hashes one seed from the same default
generator, so ``torch.manual_seed`` still makes training repeatable. Same distribution (keep
probability ``1 - p``, survivors scaled by ``1 / (1 - p)``), different random stream.
"""

from __future__ import annotations

import torch
from torch import nn

from models.modules.fused import FusedDropout, native_cpu


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same arguments, no state); its CPU training pass runs in C++."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and 0 < self.p < 1 and not self.inplace and native_cpu(x) is not None:
            out: torch.Tensor = FusedDropout.apply(x, self.p)
            return out
        return super().forward(x)
