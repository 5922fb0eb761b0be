"""The packed, length-sorted layout."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.modules.packing import Steps, prev_index

masks = st.lists(st.lists(st.booleans(), min_size=5, max_size=5), min_size=1, max_size=6)


@settings(max_examples=40, deadline=None)
@given(masks)
def test_pack_holds_each_real_position_once_time_major(rows: list[list[bool]]) -> None:
    mask = torch.tensor(rows)
    steps = Steps.of(mask)
    assert sorted(zip(steps.rows.tolist(), steps.cols.tolist(), strict=True)) == sorted(
        map(tuple, mask.nonzero().tolist()))
    assert sum(steps.counts) == int(mask.sum())
    assert steps.steps.tolist() == sorted(steps.steps.tolist())
    assert all(a >= b for a, b in zip(steps.counts, steps.counts[1:], strict=False))


@settings(max_examples=40, deadline=None)
@given(masks)
def test_successors_pair_each_step_with_the_next_real_one(rows: list[list[bool]]) -> None:
    mask = torch.tensor(rows)
    steps = Steps.of(mask)
    h_idx, nxt = steps.successors()
    got = {(int(steps.rows[i]), int(steps.cols[i]), int(steps.cols[j]))
           for i, j in zip(h_idx, nxt, strict=True)}
    want = set()
    for b, row in enumerate(rows):
        real = [t for t, m in enumerate(row) if m]
        want |= {(b, real[k], real[k + 1]) for k in range(len(real) - 1)}
    assert got == want
    assert (steps.rows[h_idx] == steps.rows[nxt]).all()


@settings(max_examples=60, deadline=None)
@given(masks)
def test_successors_are_every_element_after_step_zero_in_order(rows: list[list[bool]]) -> None:
    """The auxiliary loss and the fused GRU rely on this layout (slices, not gathers): the next
    elements are the packed rows counts[0]..N-1, in packed order, and ``prev_index`` gives
    the element before each of them."""
    steps = Steps.of(torch.tensor(rows))
    h_idx, nxt = steps.successors()
    n0 = steps.counts[0] if steps.counts else 0
    assert nxt.tolist() == list(range(n0, sum(steps.counts)))
    if steps.counts:
        assert h_idx.tolist() == prev_index(steps.counts, torch.device("cpu")).tolist()
