"""The MLP's input normalisation: plain BatchNorm in training, a variance floor at inference."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings
from torch import nn

from models.modules.mlp import MLP, InputNorm


def _pair(dim: int, floor: float, seed: int) -> tuple[nn.BatchNorm1d, InputNorm]:
    """A BatchNorm1d and an InputNorm with the same (trained-looking) parameters and stats."""
    gen = torch.Generator().manual_seed(seed)
    plain, floored = nn.BatchNorm1d(dim), InputNorm(dim, floor)
    with torch.no_grad():
        for bn in (plain, floored):
            bn.weight.copy_(torch.randn(dim, generator=gen.manual_seed(seed)))
            bn.bias.copy_(torch.randn(dim, generator=gen.manual_seed(seed + 1)))
            bn.running_mean.copy_(torch.randn(dim, generator=gen.manual_seed(seed + 2)))
            bn.running_var.copy_(torch.rand(dim, generator=gen.manual_seed(seed + 3)) ** 4)
    return plain, floored


def test_training_ignores_the_floor_and_updates_stats_as_batchnorm() -> None:
    plain, floored = _pair(6, 0.5, 0)
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(1)) * 3 + 1
    plain.train()
    floored.train()
    assert torch.equal(floored(x), plain(x))
    assert torch.equal(floored.running_mean, plain.running_mean)
    assert torch.equal(floored.running_var, plain.running_var)


def test_zero_floor_is_batchnorm_at_inference() -> None:
    plain, floored = _pair(5, 0.0, 3)
    x = torch.randn(16, 5, generator=torch.Generator().manual_seed(2))
    assert torch.equal(floored.eval()(x), plain.eval()(x))


def test_inference_divides_by_the_floored_variance() -> None:
    _, floored = _pair(4, 0.01, 5)
    floored.eval()
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(4))
    want = ((x - floored.running_mean) / torch.sqrt(floored.running_var + 0.01 + floored.eps)
            * floored.weight + floored.bias)
    torch.testing.assert_close(floored(x), want)


@settings(max_examples=60, deadline=None)
@given(dim=st.integers(1, 12), floor=st.floats(0.0, 10.0), seed=st.integers(0, 10_000))
def test_the_floor_only_shrinks_toward_the_mean(dim: int, floor: float, seed: int) -> None:
    """Against plain BatchNorm at inference, every channel moves toward its bias (the
    normalised mean), by sqrt((v + eps) / (v + floor + eps)): never away from it."""
    plain, floored = _pair(dim, floor, seed)
    x = torch.randn(20, dim, generator=torch.Generator().manual_seed(seed + 7), dtype=torch.float32)
    with torch.no_grad():
        a = plain.eval()(x) - plain.bias
        b = floored.eval()(x) - floored.bias
    factor = torch.sqrt((plain.running_var + plain.eps)
                        / (plain.running_var + floor + plain.eps))
    torch.testing.assert_close(b, a * factor, rtol=1e-4, atol=1e-5)
    assert bool((b.abs() <= a.abs() * (1 + 1e-5) + 1e-6).all())


def test_same_state_dict_as_batchnorm_and_a_negative_floor_is_refused() -> None:
    assert InputNorm(7, 0.2).state_dict().keys() == nn.BatchNorm1d(7).state_dict().keys()
    with pytest.raises(ValueError, match="var_floor"):
        InputNorm(3, -1.0)


def test_mlp_passes_the_floor_to_its_input_norm() -> None:
    mlp = MLP(6, (4,), "dice", input_bn=True, input_var_floor=0.03)
    assert isinstance(mlp.net[0], InputNorm) and mlp.net[0].var_floor == 0.03
    assert not isinstance(MLP(6, (4,), input_bn=False).net[0], nn.BatchNorm1d)
