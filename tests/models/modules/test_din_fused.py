"""DIN's fused attention pooling (C++) against the ATen path it replaces in training."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.modules import _native
from models.modules.attention import AttentionPooling
from models.modules.din_fused import FusedDINPooling, fusable

pytestmark = pytest.mark.skipif(_native.native() is None,
                                reason="the C++ kernels are not built here (no compiler)")


def _both(pool: AttentionPooling, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor,
          weights: torch.Tensor) -> list[list[torch.Tensor]]:
    """Interest and sum pooling, input and parameter gradients (through both), running
    statistics: fused, then ATen."""
    results = []
    for fused in (True, False):
        model = copy.deepcopy(pool)
        qq, kk = q.clone().requires_grad_(), k.clone().requires_grad_()
        _native.use_native(fused)
        try:
            assert fusable(model.unit, model.softmax, model.training, kk, mask) == fused
            out, pooled = model.forward_with_sum(qq, kk, mask)
        finally:
            _native.use_native(True)
        (out * weights + pooled * weights.flip(0)).sum().backward()
        bn = model.unit.first_act.bn
        results.append([out.detach(), pooled.detach(), qq.grad, kk.grad,
                        *[p.grad for p in model.parameters()],
                        bn.running_mean, bn.running_var])
    return results


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.booleans(), min_size=7, max_size=7), min_size=2, max_size=9),
       st.integers(0, 2**16))
def test_fused_equals_aten_path_in_float64(rows: list[list[bool]], seed: int) -> None:
    """Any mask (holes, empty rows): the same interest, gradients and running statistics."""
    mask = torch.tensor(rows)
    if int(mask.sum()) < 2:
        return  # Dice's batch statistics need two real positions; neither path runs
    torch.manual_seed(seed)
    pool = AttentionPooling(5, (6,), "dice").double().train()
    with torch.no_grad():
        pool.unit.first_act.alpha.uniform_(-0.5, 0.5)
    b = len(rows)
    q, k = torch.randn(b, 5, dtype=torch.float64), torch.randn(b, 7, 5, dtype=torch.float64)
    fused, aten = _both(pool, q, k, mask, torch.randn(b, 5, dtype=torch.float64))
    for got, want in zip(fused, aten, strict=True):
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-11)


def test_fused_statistics_hold_when_the_mean_dwarfs_the_spread() -> None:
    """First-layer outputs ~1e-2 apart around 1e2 (small weights, a large bias): sums of raw
    squares cancel 8 of float64's digits of Dice's variance (the kernel folds each row's
    deviations from its first position into the running moments instead)."""
    torch.manual_seed(4)
    pool = AttentionPooling(5, (6,), "dice").double().train()
    with torch.no_grad():
        pool.unit.first_act.alpha.uniform_(-0.5, 0.5)
        pool.unit.first.weight.mul_(1e-2)
        pool.unit.first.bias.fill_(1e2)
    mask = torch.arange(7) < torch.tensor([3, 7, 1, 5]).unsqueeze(1)
    q, k = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 7, 5, dtype=torch.float64)
    fused, aten = _both(pool, q, k, mask, torch.randn(4, 5, dtype=torch.float64))
    # The first layer's bias gradient (index 5) is zero in exact arithmetic (the batch norm
    # removes any shift): both paths give rounding noise there, and it is left out.
    for i, (got, want) in enumerate(zip(fused, aten, strict=True)):
        if i != 5:
            assert float((got - want).abs().max()) <= 1e-9 * float(want.abs().max())


@pytest.mark.parametrize(("e", "h"), [(32, 36), (8, 16), (12, 20), (20, 44), (6, 60)])
def test_fused_equals_aten_path_at_training_sizes_in_float32(e: int, h: int) -> None:
    """The benchmark's sizes (E 32, H 36), and widths padded to each vector kernel
    (8..48 channels) or past them (64: the generic loop)."""
    torch.manual_seed(0)
    pool = AttentionPooling(e, (h,), "dice").train()
    with torch.no_grad():
        pool.unit.first_act.alpha.uniform_(-0.5, 0.5)
    lengths = torch.randint(0, 51, (256,))
    mask = torch.arange(50) < lengths.unsqueeze(1)
    q, k = torch.randn(256, e), torch.randn(256, 50, e)
    fused, aten = _both(pool, q, k, mask, torch.randn(256, e))
    for got, want in zip(fused, aten, strict=True):  # float rounding of sums in other orders
        assert float((got - want).abs().max()) <= 1e-5 * float(want.abs().max()) + 1e-6


def test_fused_gradcheck() -> None:
    torch.manual_seed(1)
    b, t, e, h = 3, 4, 3, 2
    mask = torch.tensor([[1, 1, 0, 1], [0, 0, 0, 0], [1, 0, 1, 1]], dtype=torch.bool)
    args = [torch.randn(b, h), torch.randn(b, e), torch.randn(b, t, e), mask,
            torch.randn(e, h), torch.randn(e, h), torch.rand(h), torch.randn(h),
            torch.randn(1)]
    args = [a.double().requires_grad_() if a.dtype != torch.bool else a for a in args]
    assert torch.autograd.gradcheck(
        lambda *a: FusedDINPooling.apply(*a, 1e-8)[:2], tuple(args))


@pytest.mark.parametrize("case", ["eval", "softmax", "two_layers", "prelu", "one_position"])
def test_other_configurations_take_the_aten_path(case: str) -> None:
    pool = AttentionPooling(4, (6, 3) if case == "two_layers" else (6,),
                            "prelu" if case == "prelu" else "dice", softmax=case == "softmax")
    pool.train(case != "eval")
    mask = torch.ones(2, 3, dtype=torch.bool)
    if case == "one_position":
        mask = torch.tensor([[True, False, False], [False, False, False]])
    keys = torch.randn(2, 3, 4)
    assert not fusable(pool.unit, pool.softmax, pool.training, keys, mask)
    assert fusable(AttentionPooling(4, (6,)).unit, False, True, keys, torch.ones(2, 3).bool())


def test_running_statistics_follow_batchnorm_without_momentum() -> None:
    """BatchNorm with ``momentum=None`` keeps a cumulative average; so does the fused path."""
    torch.manual_seed(2)
    pool = AttentionPooling(4, (5,), "dice").double().train()
    pool.unit.first_act.bn.momentum = None
    mask = torch.rand(6, 5) < 0.7
    mask[0, :2] = True
    for _ in range(2):  # the second step is where momentum and cumulative averages differ
        q, k = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 5, 4, dtype=torch.float64)
        fused, aten = _both(pool, q, k, mask, torch.randn(6, 4, dtype=torch.float64))
        for got, want in zip(fused[-2:], aten[-2:], strict=True):
            assert torch.allclose(got, want, rtol=1e-9, atol=1e-11)
        pool.unit.first_act.bn.load_state_dict({"running_mean": fused[-2], "running_var": fused[-1],
                                                "num_batches_tracked": torch.tensor(1)})
