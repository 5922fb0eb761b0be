"""Training loops: a tiny model learns a planted pattern; build_model variants."""

from __future__ import annotations

import pandas as pd
import pytest

from models.bank import EmbeddingBank
from models.data.samples import build_samples, time_split
from models.train import TrainConfig, build_model, evaluate, fit, fit_incremental


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
