"""The EmbeddingBank: raw-id mapping, the OOV path and the content version."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.bank import DENSE_LOOKUP_MAX, OOV_ROW, PAD_ROW, EmbeddingBank, _PairGather
from models.modules._native import native, use_native


def bank() -> EmbeddingBank:
    torch.manual_seed(0)
    return EmbeddingBank({"item": np.array([50, 7, 7, 900, 0]), "cat": [3, 1]}, dim=4)


def test_vocabulary_is_sorted_unique_positive_ids() -> None:
    assert bank().vocab("item").tolist() == [7, 50, 900]
    assert bank().vocab("cat").tolist() == [1, 3]


def test_rows_of_known_unknown_and_padding_ids() -> None:
    rows = bank().rows("item", torch.tensor([[7, 900, 0, 8, 10**12, -3]]))
    assert rows.tolist() == [[2, 4, PAD_ROW, OOV_ROW, OOV_ROW, PAD_ROW]]


def test_padding_vector_is_zero_and_oov_keeps_its_category() -> None:
    b = bank()
    reps = b.items(torch.tensor([0, 12345, 12345]), torch.tensor([0, 1, 3]))
    assert torch.equal(reps[0], torch.zeros(8))
    assert torch.equal(reps[1, :4], reps[2, :4])  # the shared OOV item row
    assert not torch.equal(reps[1, 4:], reps[2, 4:])  # but each its own category


def test_oov_dropout_sends_known_ids_to_the_oov_row() -> None:
    rows = bank().rows("item", torch.full((1000,), 50), oov_dropout=0.5)
    share = (rows == OOV_ROW).float().mean().item()
    assert 0.3 < share < 0.7 and set(rows.tolist()) == {OOV_ROW, 3}


def test_content_hash_follows_the_weights() -> None:
    a, b = bank(), bank()
    assert a.content_hash() == b.content_hash()
    with torch.no_grad():
        b.tables["item"].weight[2, 0] += 1e-3
    assert a.content_hash() != b.content_hash()


def test_freeze_turns_gradients_off() -> None:
    b = bank().freeze()
    assert not any(p.requires_grad for p in b.parameters()) and not b.training


@settings(max_examples=60, deadline=None)
@given(vocab=st.lists(st.integers(1, 5000), min_size=1, max_size=40),
       ids=st.lists(st.integers(-5, 6000), min_size=1, max_size=60))
def test_dense_lookup_and_searchsorted_give_the_same_rows(vocab: list[int], ids: list[int]
                                                          ) -> None:
    """The dense table through C++ (where built), through ATen, and searchsorted agree."""
    b = EmbeddingBank({"item": vocab, "cat": [1]}, dim=2)
    dense = b.rows("item", torch.tensor(ids))
    use_native(False)
    try:
        assert torch.equal(b.rows("item", torch.tensor(ids)), dense)
    finally:
        use_native(True)
    del b.dense_item  # no dense table: the searchsorted path
    assert torch.equal(b.rows("item", torch.tensor(ids)), dense)


@pytest.mark.parametrize("p", [0.01, 0.3])
def test_oov_dropout_rate_and_what_it_never_touches(p: float) -> None:
    """Real ids go to the OOV row at rate p (within 5 standard deviations); padding and
    ids already OOV are left alone; the draws repeat under torch.manual_seed."""
    b = bank()
    ids = torch.tensor([50, 7, 0, -2, 12345] * 40000)
    torch.manual_seed(3)
    rows = b.rows("item", ids, oov_dropout=p)
    again = b.rows("item", ids, oov_dropout=p)
    torch.manual_seed(3)
    assert torch.equal(b.rows("item", ids, oov_dropout=p), rows)
    assert not torch.equal(again, rows)
    clean = b.rows("item", ids)
    real = ids > 0
    dropped = (rows != clean) & real
    n = int((real & (clean != OOV_ROW)).sum())
    assert abs(int(dropped.sum()) - n * p) < 5 * (n * p * (1 - p)) ** 0.5
    assert torch.equal(rows[~real], clean[~real]) and bool((rows[dropped] == OOV_ROW).all())


@settings(max_examples=30, deadline=None)
@given(ids=st.lists(st.sampled_from([0, 7, 50, 900, 8, -1]), min_size=1, max_size=40))
def test_gradient_equals_nn_embedding_with_a_padding_index(ids: list[int]) -> None:
    b = bank()
    rows = b.rows("item", torch.tensor(ids))
    weight = b.tables["item"].weight
    upstream = torch.randn(len(ids), 4)
    (b.lookup("item", torch.tensor(ids)) * upstream).sum().backward()
    ours = weight.grad.clone()
    weight.grad = None
    (torch.nn.functional.embedding(rows, weight, padding_idx=PAD_ROW) * upstream).sum().backward()
    assert torch.allclose(ours, weight.grad, atol=1e-6)


@pytest.mark.parametrize("copied", [False, True])
def test_padding_row_gets_no_gradient_and_never_trains(copied: bool) -> None:
    b = copy.deepcopy(bank()) if copied else bank()  # deepcopy/pickle keep the rule
    opt = torch.optim.Adam(b.parameters(), lr=0.1)
    for _ in range(3):
        reps = b.items(torch.tensor([0, 7, 0, 50]), torch.tensor([0, 1, 0, 3]))
        loss = (reps * torch.arange(8.0)).sum() + reps.pow(2).sum()
        opt.zero_grad()
        loss.backward()
        for table in b.tables.values():
            assert table.weight.grad is not None and not table.weight.grad[PAD_ROW].any()
        opt.step()
    assert not b.tables["item"].weight[PAD_ROW].any() and not b.tables["cat"].weight[PAD_ROW].any()


def test_an_empty_batch_embeds_to_empty_tensors() -> None:
    empty = torch.zeros((0, 5), dtype=torch.int64)
    out = bank().embed({"item_id": torch.zeros(0, dtype=torch.int64),
                        "cat_id": torch.zeros(0, dtype=torch.int64),
                        "hist_item_ids": empty, "hist_cat_ids": empty,
                        "hist_mask": empty.bool()})
    assert out["query"].shape == (0, 8) and out["hist"].shape == (0, 5, 8)


def test_load_state_dict_rebuilds_the_id_index() -> None:
    """A bank loaded with another vocabulary of the same size maps ids by the loaded one."""
    old = EmbeddingBank({"item": [10, 20, 30], "cat": [1]}, dim=4)
    new = EmbeddingBank({"item": [5, 6, 7], "cat": [1]}, dim=4)
    old.load_state_dict(new.state_dict())
    ids = torch.tensor([5, 6, 7, 10, 20, 30])
    assert old.rows("item", ids).tolist() == [2, 3, 4, OOV_ROW, OOV_ROW, OOV_ROW]
    assert torch.equal(old.lookup("item", ids), new.lookup("item", ids))


def test_load_state_dict_with_large_ids_drops_the_dense_index() -> None:
    small = EmbeddingBank({"item": [1, 2], "cat": [1]}, dim=4)
    big = EmbeddingBank({"item": [3, DENSE_LOOKUP_MAX + 5], "cat": [1]}, dim=4)
    small.load_state_dict(big.state_dict())
    assert getattr(small, "dense_item", None) is None
    ids = torch.tensor([3, DENSE_LOOKUP_MAX + 5, 1])
    assert small.rows("item", ids).tolist() == [2, 3, OOV_ROW]


@pytest.mark.parametrize("std", [1e-3, 0.05])
def test_build_model_sets_the_initial_std_of_the_tables(std: float) -> None:
    from models.train import build_model

    torch.manual_seed(0)
    model = build_model("din", {"item": np.arange(1, 2001), "cat": np.arange(1, 21)}, dim=8,
                        init_std=std)
    weight = model.bank.tables["item"].weight.detach()
    assert torch.equal(weight[PAD_ROW], torch.zeros(8))
    assert abs(float(weight[1:].std()) / std - 1) < 0.05  # 16k draws: within 5% of std


def test_item_bias_follows_the_candidate_row_and_padding_never_trains() -> None:
    b = bank()
    assert b.item_bias is not None and torch.equal(b.item_bias.weight, torch.zeros(5, 1))
    with torch.no_grad():
        b.item_bias.weight.copy_(torch.arange(5.0).unsqueeze(1))
    batch = {"item_id": torch.tensor([7, 900, 12345, 0]), "cat_id": torch.tensor([1, 3, 1, 0]),
             "hist_item_ids": torch.tensor([[50, 0]] * 4),
             "hist_cat_ids": torch.tensor([[3, 0]] * 4),
             "hist_mask": torch.tensor([[True, False]] * 4)}
    emb = b.embed(batch)
    assert emb["bias"].tolist() == [2.0, 4.0, float(OOV_ROW), float(PAD_ROW)]
    emb = b.embed(batch)
    emb["bias"].sum().backward()
    grad = b.item_bias.weight.grad
    assert grad is not None and grad[PAD_ROW].item() == 0.0 and grad[2].item() == 1.0
    assert grad[3].item() == 0.0  # id 50 is only in the history: no first-order term there


def test_bank_without_item_bias_embeds_none() -> None:
    b = EmbeddingBank({"item": [1, 2], "cat": [1]}, dim=2, item_bias=False)
    emb = b.embed({"item_id": torch.tensor([1]), "cat_id": torch.tensor([1]),
                   "hist_item_ids": torch.tensor([[2]]), "hist_cat_ids": torch.tensor([[1]]),
                   "hist_mask": torch.tensor([[True]])})
    assert b.item_bias is None and "bias" not in emb


def _embed_and_grads(b: EmbeddingBank, batch: dict[str, torch.Tensor], upstream: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    for table in b.tables.values():
        table.weight.grad = None
    both = torch.cat([v.reshape(-1, 8) for k, v in b.embed(batch).items()
                      if k in ("query", "hist", "neg")])  # (M, E)
    (both * upstream[:len(both)]).sum().backward()
    grads = [t.weight.grad for t in (b.tables["item"], b.tables["cat"])]
    assert grads[0] is not None and grads[1] is not None
    return both.detach(), grads[0].clone(), grads[1].clone()


@settings(max_examples=30, deadline=None)
@given(ids=st.lists(st.sampled_from([0, 7, 50, 900, 8, -1, 12345]), min_size=6, max_size=36),
       cats=st.lists(st.sampled_from([0, 1, 3, 9, 77]), min_size=6, max_size=36),
       seed=st.integers(0, 1000))
def test_the_fused_pair_gather_equals_the_aten_path(ids: list[int], cats: list[int],
                                                    seed: int) -> None:
    """Training on the CPU embeds through one C++ pass (bank._PairGather): the same vectors
    and the same table gradients (padding's zero) as two gathers and a cat, in float64."""
    if native() is None:
        pytest.skip("no C++ build on this machine")
    n = min(len(ids), len(cats)) // 3 * 3
    item, cat = torch.tensor(ids[:n]).reshape(3, -1), torch.tensor(cats[:n]).reshape(3, -1)
    batch = {"item_id": item[0, :2], "cat_id": cat[0, :2],
             "hist_item_ids": item[1:].reshape(2, -1), "hist_cat_ids": cat[1:].reshape(2, -1),
             "hist_mask": torch.ones(2, item[1:].reshape(2, -1).shape[1], dtype=torch.bool),
             "neg_item_ids": item[1:].reshape(2, -1).flip(1),
             "neg_cat_ids": cat[1:].reshape(2, -1).flip(1)}
    b = bank().double()
    upstream = torch.randn(3 * n, 8, generator=torch.Generator().manual_seed(seed),
                           dtype=torch.float64)
    fused = _embed_and_grads(b, batch, upstream)
    use_native(False)
    try:
        reference = _embed_and_grads(b, batch, upstream)
    finally:
        use_native(True)
    assert torch.equal(fused[0], reference[0])
    for ours, theirs in zip(fused[1:], reference[1:], strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
        assert not ours[PAD_ROW].any()


def test_the_fused_pair_gather_passes_gradcheck() -> None:
    if native() is None:
        pytest.skip("no C++ build on this machine")
    items = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    cats = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    item_rows, cat_rows = torch.tensor([1, 2, 2, 5, 3]), torch.tensor([1, 3, 3, 2, 1])
    assert torch.autograd.gradcheck(_PairGather.apply, (items, cats, item_rows, cat_rows))
