"""Dice and dropout in C++ (models.modules.fused) against ATen and against their definitions."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.modules import _native
from models.modules.activations import Dice
from models.modules.dropout import Dropout
from models.modules.fused import FusedDice, native_cpu

pytestmark = pytest.mark.skipif(_native.native() is None,
                                reason="the C++ kernels are not built here (no compiler)")


def _dice_both(dice: Dice, x: torch.Tensor, weights: torch.Tensor) -> list[list[torch.Tensor]]:
    """Output, input and alpha gradients, running statistics: C++, then ATen."""
    results = []
    for fused in (True, False):
        model = copy.deepcopy(dice)
        xx = x.clone().requires_grad_()
        _native.use_native(fused)
        try:
            assert (native_cpu(xx) is not None) == fused
            out = model(xx)
        finally:
            _native.use_native(True)
        (out * weights).sum().backward()
        results.append([out.detach(), xx.grad, model.alpha.grad, model.bn.running_mean,
                        model.bn.running_var, model.bn.num_batches_tracked])
    return results


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 40), st.integers(1, 70), st.integers(0, 2**16))
def test_fused_dice_equals_aten_in_float64(n: int, h: int, seed: int) -> None:
    torch.manual_seed(seed)
    dice = Dice(h).double().train()
    with torch.no_grad():
        dice.alpha.uniform_(-0.5, 0.5)
    x = torch.randn(n, h, dtype=torch.float64) * 3 + 1
    fused, aten = _dice_both(dice, x, torch.randn(n, h, dtype=torch.float64))
    for got, want in zip(fused, aten, strict=True):  # two rows can make the norm ill-conditioned
        assert torch.allclose(got, want, rtol=1e-7, atol=1e-8)


def test_fused_dice_keeps_the_variance_when_the_mean_dwarfs_the_spread() -> None:
    """Values 1e-3 apart around 1e3: sums of raw squares would cancel 12 of float64's digits
    (the kernel sums deviations from the first row instead)."""
    torch.manual_seed(11)
    dice = Dice(6).double().train()
    with torch.no_grad():
        dice.alpha.uniform_(-0.5, 0.5)
    x = 1e3 + 1e-3 * torch.randn(8, 6, dtype=torch.float64)
    fused, aten = _dice_both(dice, x, torch.randn(8, 6, dtype=torch.float64))
    for got, want in zip(fused, aten, strict=True):
        assert torch.allclose(got, want, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("h", [200, 80, 37])
def test_fused_dice_equals_aten_at_training_sizes_in_float32(h: int) -> None:
    torch.manual_seed(h)
    dice = Dice(h).train()
    with torch.no_grad():
        dice.alpha.uniform_(-0.5, 0.5)
    fused, aten = _dice_both(dice, torch.randn(256, h), torch.randn(256, h))
    for got, want in zip(fused, aten, strict=True):
        assert float((got - want).abs().max()) <= 1e-5 * float(want.abs().max()) + 1e-6


def test_fused_dice_takes_a_strided_batch() -> None:
    """A transposed (non-contiguous) input: the same values and gradients as ATen."""
    torch.manual_seed(5)
    dice = Dice(9).double().train()
    with torch.no_grad():
        dice.alpha.uniform_(-0.5, 0.5)
    x = torch.randn(9, 30, dtype=torch.float64).T  # (30, 9), strided
    fused, aten = _dice_both(dice, x, torch.randn(30, 9, dtype=torch.float64))
    for got, want in zip(fused, aten, strict=True):
        assert torch.allclose(got, want, rtol=1e-7, atol=1e-8)


def test_fused_dice_gradcheck() -> None:
    torch.manual_seed(3)
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    alpha = torch.rand(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: FusedDice.apply(a, b, 1e-5)[0], (x, alpha))


def test_dice_keeps_aten_in_eval_and_for_other_shapes() -> None:
    """Eval uses running statistics; (B, T, H) inputs and one-row batches stay on ATen
    (BatchNorm's own error for one row in training)."""
    dice = Dice(3).train()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        dice(torch.randn(1, 3))
    x = torch.randn(4, 5, 3)
    assert dice(x).shape == (4, 5, 3)


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_dropout_keeps_one_minus_p_and_scales_the_kept(p: float) -> None:
    torch.manual_seed(0)
    drop = Dropout(p).train()
    x = torch.rand(400, 500) + 0.5
    y = drop(x)
    kept = y != 0
    n = x.numel()
    sd = (n * p * (1 - p)) ** 0.5
    assert abs(int(kept.sum()) - n * (1 - p)) < 5 * sd  # binomial: 5 standard deviations
    assert torch.allclose(y[kept], x[kept] / (1 - p))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3000), st.floats(0.01, 0.9), st.integers(0, 2**16))
def test_dropout_gradient_flows_through_exactly_the_kept_elements(n: int, p: float,
                                                                   seed: int) -> None:
    torch.manual_seed(seed)
    x = torch.randn(n, dtype=torch.float64, requires_grad=True)
    y = Dropout(p).train()(x)
    g = torch.randn(n, dtype=torch.float64)
    y.backward(g)
    assert x.grad is not None
    kept = y.detach() != 0
    assert torch.allclose(x.grad, torch.where(kept, g / (1 - p), torch.zeros_like(g)))


def test_dropout_follows_torch_manual_seed_not_the_thread_count() -> None:
    drop = Dropout(0.3).train()
    x = torch.ones(300, 200)
    threads = torch.get_num_threads()
    masks = []
    try:
        for n_threads in (1, 2, 1):
            torch.set_num_threads(n_threads)
            torch.manual_seed(7)
            masks.append(drop(x) != 0)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(masks[0], masks[1]) and torch.equal(masks[0], masks[2])
    assert not torch.equal(masks[0], drop(x) != 0)  # the next call draws a new mask


def test_dropout_is_the_identity_in_eval_and_at_p_zero() -> None:
    x = torch.randn(10, 7)
    assert torch.equal(Dropout(0.4).eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
