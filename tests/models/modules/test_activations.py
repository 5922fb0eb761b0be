"""Dice and the activation lookup."""

from __future__ import annotations

import pytest
import torch

from models.modules.activations import Dice, make_activation


def test_dice_matches_formula_in_eval() -> None:
    torch.manual_seed(0)
    dice = Dice(5)
    with torch.no_grad():
        dice.alpha.fill_(0.25)
        dice.bn.running_mean.uniform_(-1, 1)
        dice.bn.running_var.uniform_(0.5, 2)
    dice.eval()
    x = torch.randn(3, 4, 5)
    p = torch.sigmoid((x - dice.bn.running_mean) / torch.sqrt(dice.bn.running_var + dice.bn.eps))
    assert torch.allclose(dice(x), p * x + (1 - p) * 0.25 * x, atol=1e-6)


def test_dice_uses_batch_statistics_in_training() -> None:
    dice = Dice(3).train()
    x = torch.randn(64, 3) * 5 + 10
    p = torch.sigmoid((x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-8))
    assert torch.allclose(dice(x), p * x, atol=1e-4)  # alpha starts at zero


@pytest.mark.parametrize("name", ["dice", "prelu", "relu", "sigmoid"])
def test_make_activation_keeps_shape(name: str) -> None:
    assert make_activation(name, 6)(torch.randn(2, 6)).shape == (2, 6)


def test_make_activation_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="unknown activation"):
        make_activation("swish3", 4)


def test_prelu_slopes_the_last_dimension() -> None:
    act = make_activation("prelu", 3)
    x = -torch.ones(2, 4, 3)
    assert torch.allclose(act(x), torch.full((2, 4, 3), -0.25))
    assert torch.equal(act(-x), -x)
