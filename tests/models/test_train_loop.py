"""Training loops: a tiny model learns a planted pattern; build_model variants."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from models.bank import EmbeddingBank
from models.data.samples import build_samples, time_split
from models.train import (
    TrainConfig,
    _optimizer,
    batch_bounds,
    build_model,
    config_overrides,
    evaluate,
    fit,
    fit_incremental,
)


@pytest.mark.parametrize("arch", ["base", "din", "dien"])
def test_tiny_model_learns_the_planted_pattern(arch: str, frame: pd.DataFrame) -> None:
    train, test = time_split(build_samples(frame, max_len=10), 0.8)
    model = build_model(arch, frame, dim=4)
    before = evaluate(model, test)["auc"]
    stats = fit(model, train, TrainConfig(epochs=3, batch_size=64, lr=0.01))
    after = evaluate(model, test)
    assert after["auc"] > 0.75 > before
    assert stats["samples"] == 3 * len(train) and stats["optimized_tensors"] > 0
    assert set(after) == {"auc", "gauc", "logloss", "calibration"}


def test_incremental_top_training_on_a_fresh_top_learns(frame: pd.DataFrame) -> None:
    train, test = time_split(build_samples(frame, max_len=10), 0.8)
    trained = build_model("din", frame, dim=4)
    fit(trained, train, TrainConfig(epochs=2, batch_size=64, lr=0.01))
    fresh_top = build_model("din", trained.bank.freeze())  # new top, week-old frozen bank
    fit_incremental(fresh_top, train, TrainConfig(epochs=2, batch_size=64, lr=0.01))
    assert evaluate(fresh_top, test)["auc"] > 0.75


def test_build_model_from_vocabularies_and_unknown_arch() -> None:
    model = build_model("dien", {"item": [5, 9], "cat": [1]}, dim=3, gru_type="AGRU")
    assert isinstance(model.bank, EmbeddingBank) and model.cfg.gru_type == "AGRU"
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("transformer", {"item": [1], "cat": [1]})


def test_config_overrides_keep_each_architectures_own_set_values() -> None:
    values = {"aux_weight": 10.0, "input_var_floor": 0.01}
    assert config_overrides("dien", **values) == {"aux_weight": 10.0}
    assert config_overrides("din", **values) == {"input_var_floor": 0.01}
    assert config_overrides("base", **values) == {}
    assert config_overrides("dien", aux_weight=None, input_var_floor=0.01) == {}
    assert config_overrides("dien", aux_weight=0.0) == {"aux_weight": 0.0}
    with pytest.raises(ValueError, match="unknown architecture"):
        config_overrides("transformer", aux_weight=1.0)


def _item_effect_frame(n: int = 6000, n_items: int = 40, seed: int = 1) -> pd.DataFrame:
    """Events whose click probability depends on the item alone (its quality)."""
    rng = np.random.default_rng(seed)
    quality = np.linspace(-2.0, 2.0, n_items)
    pick = rng.integers(0, n_items, size=n)
    p = 1.0 / (1.0 + np.exp(-quality[pick]))
    return pd.DataFrame({"user_id": rng.integers(1, 200, size=n), "item_id": pick + 1,
                         "category_id": np.ones(n, dtype=np.int64), "ts": np.arange(n),
                         "label": (rng.random(n) < p).astype(np.int64)})


def test_fast_item_term_learns_item_quality() -> None:
    frame = _item_effect_frame()
    samples = build_samples(frame, max_len=5)
    torch.manual_seed(0)
    model = build_model("din", frame, dim=4)
    fit(model, samples, TrainConfig(epochs=1, batch_size=128, bias_lr=0.1,
                                    lr_schedule="linear"))
    assert model.bank.item_bias is not None
    learnt = model.bank.item_bias.weight.detach()[2:, 0].numpy()  # rows of items 1..40
    assert spearmanr(learnt, np.arange(40)).statistic > 0.8


def test_lr_schedules_and_a_bad_one() -> None:
    frame = _item_effect_frame(n=600)
    samples = build_samples(frame, max_len=5)
    model = build_model("base", frame, dim=4)
    params = list(model.parameters())
    for schedule, end in (("linear", 0.0), ("constant", 1e-3)):
        opt, sched = _optimizer(model, params, TrainConfig(lr_schedule=schedule, bias_lr=0.5), 4)
        assert [g["lr"] for g in opt.param_groups] == [1e-3, 0.5]
        for _ in range(4):
            opt.step()
            sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(end)
    opt, _ = _optimizer(model, params, TrainConfig(), 4)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-3]  # bias_lr None: lr
    opt, _ = _optimizer(model, params, TrainConfig(bias_lr=0.0), 4)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 0.0]  # 0 holds the term still
    with pytest.raises(ValueError, match="lr_schedule"):
        fit(model, samples, TrainConfig(lr_schedule="cosine"))


def test_a_last_batch_of_one_joins_the_one_before(frame: pd.DataFrame) -> None:
    """BatchNorm cannot train on one sample: 2 * 64 + 1 samples train as batches of 64 and
    65, every sample seen (the DIN MLP's input BatchNorm would raise on a batch of one)."""
    assert batch_bounds(129, 64) == [(0, 64), (64, 129)]
    assert batch_bounds(1, 64) == [(0, 1)] and batch_bounds(128, 64) == [(0, 64), (64, 128)]
    samples = build_samples(frame, max_len=5).subset(slice(0, 129))
    stats = fit(build_model("din", frame), samples, TrainConfig(epochs=1, batch_size=64))
    assert stats["samples"] == 129
