"""The DIN activation unit and attention weights."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.modules.attention import ActivationUnit, AttentionPooling, masked_weights


def test_unit_equals_mlp_over_concatenation() -> None:
    torch.manual_seed(0)
    unit = ActivationUnit(4, (6, 3), "prelu").eval()
    q, k = torch.randn(2, 4), torch.randn(2, 5, 4)
    mask = torch.ones(2, 5, dtype=torch.bool)
    qe = q.unsqueeze(1).expand_as(k)
    feats = torch.cat([qe, k, qe - k, qe * k], dim=-1)  # (B, T, 4E)
    ref = unit.rest(unit.first_act(unit.first(feats))).squeeze(-1)
    assert torch.allclose(unit(q, k, mask), ref, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.booleans(), min_size=6, max_size=6), min_size=1, max_size=5),
       st.booleans())
def test_masked_positions_get_zero_weight(rows: list[list[bool]], softmax: bool) -> None:
    torch.manual_seed(0)
    pool = AttentionPooling(4, (5,), "dice", softmax=softmax).eval()
    mask = torch.tensor(rows)
    w = pool.weights(torch.randn(len(rows), 4), torch.randn(len(rows), 6, 4), mask)
    assert torch.all(w[~mask] == 0)
    assert not torch.isnan(w).any()
    if softmax:
        real = mask.any(dim=1)
        assert torch.allclose(w[real].sum(dim=1), torch.ones(int(real.sum())), atol=1e-5)


def test_no_softmax_by_default_keeps_intensity() -> None:
    scores = torch.tensor([[2.0, 3.0, 7.0]])
    mask = torch.tensor([[True, True, False]])
    assert torch.equal(masked_weights(scores, mask, softmax=False), torch.tensor([[2.0, 3.0, 0]]))
