"""Shapes, padding invariance and attention masking of BaseModel, DIN and DIEN."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.ranker import Ranker
from models.train import build_model

from .conftest import item_table, planted_frame, random_batch


def test_forward_gives_one_logit_per_row(model: Ranker, batch: dict[str, torch.Tensor]) -> None:
    assert model(batch).shape == (6,)
    logits, aux = model.train().forward_with_aux(batch)
    assert logits.shape == (6,) and aux.shape == ()
    assert torch.isfinite(logits).all() and torch.isfinite(aux)


def test_only_dien_has_an_auxiliary_loss(model: Ranker, batch: dict[str, torch.Tensor]) -> None:
    _, aux = model.train().forward_with_aux(batch)
    assert (aux.item() > 0) == (model.arch == "dien")
    no_neg = {k: v for k, v in batch.items() if not k.startswith("neg_")}
    assert model.forward_with_aux(no_neg)[1].item() == 0.0


MODELS = {arch: build_model(arch, planted_frame(), dim=4).eval() for arch in ("base", "din",
                                                                            "dien")}
ITEMS = item_table(planted_frame())


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arch=st.sampled_from(sorted(MODELS)), seed=st.integers(0, 10**6),
       pad=st.lists(st.integers(0, 12), min_size=0, max_size=6))
def test_padding_never_changes_a_score(arch: str, seed: int, pad: list[int]) -> None:
    """Padding inserted anywhere (and junk ids under the mask) leaves every score as is."""
    model = MODELS[arch]
    batch = random_batch(*ITEMS, seed=seed, negatives=False)
    with torch.no_grad():
        base = model(batch)
    rng = np.random.default_rng(seed)
    padded = dict(batch)
    for key in ("hist_item_ids", "hist_cat_ids", "hist_mask"):
        value = batch[key]
        for pos in sorted(pad):
            pos = min(pos, value.shape[1])
            zero = torch.zeros(value.shape[0], 1, dtype=value.dtype)
            value = torch.cat([value[:, :pos], zero, value[:, pos:]], dim=1)
        padded[key] = value
    junk = torch.from_numpy(rng.integers(1, 10**6, size=padded["hist_item_ids"].shape))
    padded["hist_item_ids"] = torch.where(padded["hist_mask"], padded["hist_item_ids"], junk)
    with torch.no_grad():
        assert torch.allclose(model(padded), base, atol=1e-5)


def test_din_attention_weights_of_masked_positions_are_zero(frame: pd.DataFrame) -> None:
    model = build_model("din", frame, dim=4).eval()
    batch = random_batch(*item_table(frame))
    emb = model.bank.embed(batch)
    w = model.top.attention.weights(emb["query"], emb["hist"], emb["mask"])
    assert torch.all(w[~emb["mask"]] == 0) and torch.any(w[emb["mask"]] != 0)


def test_dien_attention_is_a_distribution_over_real_steps(frame: pd.DataFrame) -> None:
    from models.modules.packing import Steps

    model = build_model("dien", frame, dim=4).eval()
    emb = model.bank.embed(random_batch(*item_table(frame)))
    steps = Steps.of(emb["mask"])
    states = model.top.extractor(steps.pack(emb["hist"]), steps)
    att = model.top.attend(emb["query"], states, steps)  # (N,) real steps only
    sums = torch.zeros(len(emb["mask"])).index_add(0, steps.rows, att)
    has = emb["mask"].any(1)
    assert torch.allclose(sums[has], torch.ones(int(has.sum())), atol=1e-5)
    assert torch.all(sums[~has] == 0)


@pytest.mark.parametrize("gru_type", ["AGRU", "AIGRU"])
def test_dien_ablations_and_mlp_attention_run(frame: pd.DataFrame, gru_type: str) -> None:
    model = build_model("dien", frame, dim=4, gru_type=gru_type, attention="mlp",
                        aux_hidden=(8, 4))
    logits, aux = model.train().forward_with_aux(random_batch(*item_table(frame)))
    (logits.sum() + aux).backward()
    assert logits.shape == (6,) and aux.item() > 0
