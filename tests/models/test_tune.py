"""models.tune: the validation carve, early stopping, the search and a tiny real tuning."""

from __future__ import annotations

import numpy as np
import pytest

from models.data.samples import build_samples
from models.train import TrainConfig
from models.tune import VAR_FLOORS, EarlyStop, TuneConfig, carve, search, tune_model
from tests.models.conftest import planted_frame


def test_carve_takes_the_end_of_the_training_period() -> None:
    samples = build_samples(planted_frame(n_users=20, events_per_user=10), max_len=5)
    fit_part, val = carve(samples, 0.25)
    assert len(fit_part) + len(val) == len(samples)
    assert len(val) == 50
    assert fit_part.ts.max() <= val.ts.min()
    with pytest.raises(ValueError):
        carve(samples, 0.0)


def test_early_stop_keeps_the_best_epoch_and_stops_after_patience() -> None:
    stop = EarlyStop(patience=1)
    assert stop.update(0.60) is False
    assert stop.update(0.65, floor=0.1) is False
    assert stop.update(0.64) is False  # one epoch without a gain: patience 1 allows it
    assert stop.update(0.63) is True
    assert stop.best_epoch == 2 and stop.best == 0.65
    assert stop.extras[stop.best_epoch - 1] == {"floor": 0.1}
    assert EarlyStop(0).update(float("nan")) is False  # a first score never stops


def test_search_tries_the_defaults_first_and_returns_the_best_trial() -> None:
    seen: list[dict[str, float]] = []

    def run_trial(params: dict[str, float], cfg: TuneConfig) -> EarlyStop:
        seen.append(params)
        stop = EarlyStop(cfg.patience)
        score = -abs(np.log10(params["lr"]) + 2.5)  # best at lr = 10**-2.5
        for epoch in range(cfg.max_epochs):
            if stop.update(score - 0.01 * abs(epoch - 1), tag=epoch):
                break
        return stop

    tuned = search(run_trial, {"lr": (1e-4, 1e-1)}, {"lr": 1e-2, "fixed": 7},
                   TuneConfig(trials=6, max_epochs=3))
    assert seen[0] == {"lr": 1e-2, "fixed": 7}
    assert len(seen) == 6 and len(tuned.trials) == 6
    assert tuned.val_auc == max(max(t["val_auc"]) for t in tuned.trials)
    assert tuned.params["epochs"] == 2 and tuned.params["tag"] == 1  # the best epoch's
    assert tuned.params["fixed"] == 7
    assert tuned.train_config(TrainConfig()).lr == tuned.params["lr"]


@pytest.mark.parametrize("arch", ["din", "dien"])
def test_tune_model_on_tiny_data_records_its_choice(arch: str) -> None:
    frame = planted_frame(n_users=40, events_per_user=20)
    samples = build_samples(frame, max_len=8)
    tuned = tune_model(arch, frame, samples, TrainConfig(batch_size=64, lr_schedule="linear"),
                       TuneConfig(trials=2, max_epochs=2), pinned={"bias_lr": 0.05})
    p = tuned.params
    assert 1 <= p["epochs"] <= 2 and p["bias_lr"] == 0.05
    assert 3e-4 <= p["lr"] <= 3e-3
    assert len(tuned.trials) == 2 and tuned.trials[0]["params"]["lr"] == 1e-3
    if arch == "din":
        assert p["input_var_floor"] in VAR_FLOORS
        assert tuned.overrides("din") == {"input_var_floor": p["input_var_floor"]}
    else:
        assert 1.0 <= p["aux_weight"] <= 30.0 and "input_var_floor" not in p
