"""The MLP's dropout: inverted dropout, identity in eval mode."""

from __future__ import annotations

import pytest
import torch

from models.modules.mlp import MLP, Dropout


def test_dropout_zeroes_a_share_p_and_keeps_the_mean() -> None:
    torch.manual_seed(0)
    drop = Dropout(0.3).train()
    x = torch.ones(200_000)
    y = drop(x)
    assert abs((y == 0).float().mean().item() - 0.3) < 0.01
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.7))
    assert abs(y.mean().item() - 1.0) < 0.01


def test_dropout_gradient_flows_only_through_kept_units() -> None:
    torch.manual_seed(1)
    x = torch.randn(64, 32, requires_grad=True)
    y = Dropout(0.5).train()(x)
    y.sum().backward()
    assert x.grad is not None
    assert torch.equal(x.grad == 0, y == 0)


def test_dropout_is_the_identity_in_eval_and_at_zero() -> None:
    x = torch.randn(8, 4)
    assert torch.equal(Dropout(0.5).eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    with pytest.raises(ValueError):
        Dropout(1.0)


def test_mlp_in_eval_mode_is_deterministic() -> None:
    mlp = MLP(6, (5, 4), activation="dice", dropout=0.5, input_bn=True).eval()
    x = torch.randn(10, 6)
    assert torch.equal(mlp(x), mlp(x))
