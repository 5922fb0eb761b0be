"""The DIEN auxiliary loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.modules.auxiliary import AuxiliaryNet, auxiliary_loss
from models.modules.packing import Steps


def test_loss_is_the_paper_formula_on_next_steps() -> None:
    torch.manual_seed(0)
    net = AuxiliaryNet(4, 4)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    h, pos, neg = torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    steps = Steps.of(mask)
    got = auxiliary_loss(net, steps.pack(h), steps.pack(pos), steps.pack(neg), steps)
    hs = h[0, :2]  # only row 0 has next steps: (h_0, e_1), (h_1, e_2)
    want = (F.binary_cross_entropy_with_logits((hs * pos[0, 1:]).sum(-1), torch.ones(2))
            + F.binary_cross_entropy_with_logits((hs * neg[0, 1:]).sum(-1), torch.zeros(2)))
    assert torch.allclose(got, want)


def test_no_next_step_gives_zero_and_mlp_variant_trains() -> None:
    net = AuxiliaryNet(4, 4, hidden=(5, 3))
    steps = Steps.of(torch.tensor([[True, False]]))
    x = torch.randn(1, 4)
    assert auxiliary_loss(net, x, x, x, steps).item() == 0.0
    mask = torch.ones(2, 3, dtype=torch.bool)
    steps = Steps.of(mask)
    h = torch.randn(6, 4, requires_grad=True)
    loss = auxiliary_loss(net, h, torch.randn(6, 4), torch.randn(6, 4), steps)
    loss.backward()
    assert loss.item() > 0 and h.grad is not None and h.grad.abs().sum() > 0
