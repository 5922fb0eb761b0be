"""The packed GRU and the attentional GRUs of DIEN."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.modules import _native
from models.modules.gru import GRU, AttentionalGRU
from models.modules.packing import Steps
from models.modules.recurrence import FusedGRU, force_row_parts, row_parts


@pytest.fixture(autouse=True, params=["cpp", "python"])
def recurrence_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs on both implementations of the recurrence."""
    _native.use_native(request.param == "cpp")
    if request.param == "cpp" and _native.native() is None:
        pytest.skip("the C++ recurrence is not built here (no compiler); Python path only")
    yield request.param
    _native.use_native(True)


def reference(cell: AttentionalGRU, x: torch.Tensor, att: torch.Tensor,
              mask: torch.Tensor) -> torch.Tensor:
    """Plain per-step loop over the padded batch, the DIEN paper's equations verbatim."""
    h = torch.zeros(x.shape[0], cell.hidden_dim, dtype=x.dtype)
    w_ir, w_iu, w_ic = cell.weight_ih.chunk(3)
    w_hr, w_hu, w_hc = cell.weight_hh.chunk(3)
    b_ir, b_iu, b_ic = cell.bias_ih.chunk(3)
    b_hr, b_hu, b_hc = cell.bias_hh.chunk(3)
    for t in range(x.shape[1]):
        a = att[:, t:t + 1]
        i = x[:, t] * a if cell.kind == "AIGRU" else x[:, t]
        u = torch.sigmoid(i @ w_iu.T + b_iu + h @ w_hu.T + b_hu)
        r = torch.sigmoid(i @ w_ir.T + b_ir + h @ w_hr.T + b_hr)
        c = torch.tanh(i @ w_ic.T + b_ic + r * (h @ w_hc.T + b_hc))
        u = {"AUGRU": a * u, "AGRU": a.expand_as(u), "AIGRU": u}[cell.kind]
        new = (1 - u) * h + u * c
        h = torch.where(mask[:, t:t + 1], new, h)
    return h


@pytest.mark.parametrize("kind", ["AUGRU", "AGRU", "AIGRU"])
def test_attentional_gru_matches_paper_equations(kind: str) -> None:
    torch.manual_seed(0)
    cell = AttentionalGRU(3, 5, kind)
    x, att = torch.randn(6, 7, 3), torch.rand(6, 7)
    mask = torch.arange(7) < torch.tensor([7, 3, 0, 5, 1, 7]).unsqueeze(1)
    assert torch.allclose(cell.padded(x, att, mask), reference(cell, x, att, mask), atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.booleans(), min_size=8, max_size=8), min_size=1, max_size=4))
def test_padding_anywhere_never_changes_the_final_state(rows: list[list[bool]]) -> None:
    torch.manual_seed(0)
    cell = AttentionalGRU(3, 4, "AUGRU")
    mask = torch.tensor(rows)
    x, att = torch.randn(len(rows), 8, 3), torch.rand(len(rows), 8)
    out = cell.padded(x, att, mask)
    noisy = torch.where(mask.unsqueeze(-1), x, torch.randn_like(x) * 100)  # junk in padding
    assert torch.allclose(cell.padded(noisy, att, mask), out)
    compact = torch.zeros_like(x)  # the same real steps moved to the front
    for b in range(len(rows)):
        real = x[b][mask[b]]
        compact[b, :len(real)] = real
    lens = mask.sum(1, keepdim=True)
    front = torch.arange(8) < lens
    catt = torch.zeros_like(att)
    for b in range(len(rows)):
        catt[b, :int(lens[b])] = att[b][mask[b]]
    assert torch.allclose(cell.padded(compact, catt, front), out, atol=1e-6)


def test_zero_attention_keeps_the_zero_state() -> None:
    cell = AttentionalGRU(3, 4, "AUGRU")
    x = torch.randn(2, 5, 3)
    out = cell.padded(x, torch.zeros(2, 5), torch.ones(2, 5, dtype=torch.bool))
    assert torch.equal(out, torch.zeros(2, 4))


def test_extractor_gru_equals_torch_gru() -> None:
    torch.manual_seed(0)
    ours, ref = GRU(3, 4), torch.nn.GRU(3, 4, batch_first=True)
    with torch.no_grad():  # torch keeps z = 1 - u: negate the update-gate rows
        sign = torch.tensor([1.0] * 4 + [-1.0] * 4 + [1.0] * 4)
        ref.weight_ih_l0.copy_(ours.weight_ih * sign.unsqueeze(1))
        ref.weight_hh_l0.copy_(ours.weight_hh * sign.unsqueeze(1))
        ref.bias_ih_l0.copy_(ours.bias_ih * sign)
        ref.bias_hh_l0.copy_(ours.bias_hh * sign)
    x = torch.randn(3, 6, 3)
    mask = torch.arange(6) < torch.tensor([6, 2, 4]).unsqueeze(1)
    steps = Steps.of(mask)
    packed = ours(steps.pack(x), steps)  # (N, H)
    expected = ref(x)[0][steps.rows, steps.cols]  # (N, H)
    assert torch.allclose(packed, expected, atol=1e-5)


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown attentional GRU"):
        AttentionalGRU(2, 2, "LSTM")


@pytest.mark.parametrize("kind", ["AUGRU", "AGRU", "AIGRU"])
def test_fused_backward_matches_autograd_on_the_equations(kind: str) -> None:
    torch.manual_seed(1)
    cell = AttentionalGRU(3, 4, kind).double()
    x = torch.randn(5, 6, 3, dtype=torch.float64, requires_grad=True)
    att = torch.rand(5, 6, dtype=torch.float64, requires_grad=True)
    mask = torch.arange(6) < torch.tensor([6, 4, 0, 1, 6]).unsqueeze(1)
    weights = torch.randn(5, 4, dtype=torch.float64)
    grads = []
    for fn in (cell.padded, lambda *a: reference(cell, *a)):
        cell.zero_grad()
        x.grad = att.grad = None
        (fn(x, att, mask) * weights).sum().backward()
        grads.append([x.grad.clone(), att.grad.clone()] +
                     [p.grad.clone() for p in cell.parameters()])
    for got, want in zip(*grads, strict=True):
        assert torch.allclose(got, want, atol=1e-10)


def test_fused_extractor_backward_matches_torch_gru() -> None:
    torch.manual_seed(2)
    ours = GRU(3, 4).double()
    x = torch.randn(4, 5, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.arange(5) < torch.tensor([5, 2, 3, 5]).unsqueeze(1)
    steps = Steps.of(mask)
    assert torch.autograd.gradcheck(
        lambda inp, w: GRU.run(ours, steps.pack(inp) @ w, steps), (x, torch.eye(
            3, dtype=torch.float64, requires_grad=True)))


@pytest.fixture(params=[None, 3], ids=["one-part", "rows-split-3"])
def split(request: pytest.FixtureRequest) -> Iterator[int | None]:
    """The C++ loops with their default split and with the rows dealt to 3 parts."""
    force_row_parts(request.param)
    yield request.param
    force_row_parts(None)


@pytest.mark.parametrize("kind", ["GRU", "AUGRU", "AGRU"])
@pytest.mark.parametrize("counts", [[3, 2, 2, 1], [2], [1, 1], [4, 4, 1], [7, 5, 5, 2, 1]])
def test_fused_recurrence_gradcheck_on_every_state(kind: str, counts: list[int],
                                                   split: int | None) -> None:
    """All inputs (gates, attention, recurrent weights and bias), with gradient arriving at
    every packed state, not only the final ones."""
    torch.manual_seed(3)
    n, h = sum(counts), 2
    gx = torch.randn(n, 3 * h, dtype=torch.float64, requires_grad=True)
    att = torch.rand(n, 1, dtype=torch.float64, requires_grad=kind != "GRU")
    w = torch.randn(3 * h, h, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3 * h, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda gx, att, w, b: FusedGRU.apply(gx, att, w, b, counts, kind), (gx, att, w, b))


def test_cpp_build_exists_where_a_compiler_does(recurrence_path: str) -> None:
    """A silent fallback would leave the C++ path untested and training ~1.3x slower."""
    if recurrence_path == "cpp" or not shutil.which("c++"):
        pytest.skip("checked once, from the Python-path run")
    _native.use_native(True)
    assert _native.native() is not None


@pytest.mark.parametrize("kind", ["GRU", "AUGRU", "AGRU"])
def test_cpp_and_python_paths_agree_in_float32(kind: str, recurrence_path: str,
                                               split: int | None) -> None:
    """Training sizes (B=64, T=20, H=32): states and every gradient to float rounding."""
    if recurrence_path == "python":
        pytest.skip("compares the two paths itself")
    torch.manual_seed(4)
    lengths = torch.randint(0, 21, (64,))
    steps = Steps.of(torch.arange(20) < lengths.unsqueeze(1))
    n, h = sum(steps.counts), 32
    inputs = [torch.randn(n, 3 * h), torch.rand(n, 1), torch.randn(3 * h, h) * 0.3,
              torch.randn(3 * h)]
    weights = torch.randn(n, h)
    results = []
    for cpp in (True, False):
        _native.use_native(cpp)
        leaves = [t.clone().requires_grad_() for t in inputs]
        out = FusedGRU.apply(*leaves, steps.counts, kind)
        (out * weights).sum().backward()
        grads = [leaf.grad if leaf.grad is not None else torch.zeros(()) for leaf in leaves]
        results.append([out.detach(), *grads])
    for got, want in zip(*results, strict=True):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)


def test_row_parts_follow_threads_and_batch() -> None:
    assert row_parts([]) == 1
    assert row_parts([63, 10]) == 1  # too few rows to split
    assert row_parts([256, 200]) == min(torch.get_num_threads(), 4)
    force_row_parts(5)
    try:
        assert row_parts([3, 1]) == 3  # never more parts than rows
    finally:
        force_row_parts(None)
