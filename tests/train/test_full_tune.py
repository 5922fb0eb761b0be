"""train.full with TRAIN_TUNE: the recipe searched before the refresh trains (tiny, no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

from models.data.samples import build_samples
from models.registry import load_checkpoint
from tests.models.conftest import planted_frame
from train.full import fit_new, pinned_settings
from train.settings import TrainSettings


def test_explicit_recipe_settings_are_pinned() -> None:
    s = TrainSettings(lr=5e-4, tune=True)
    assert pinned_settings(s) == {"lr": 5e-4}
    assert pinned_settings(TrainSettings()) == {}


def test_fit_new_tunes_then_trains_with_the_choice(tmp_path: Path) -> None:
    samples = build_samples(planted_frame(n_users=30, events_per_user=20), max_len=8)
    s = TrainSettings(arch="din", tune=True, tune_trials=2, tune_max_epochs=1, batch_size=64,
                      bias_lr=0.05)
    out = tmp_path / "model"
    fit_new(s, samples, out, "cpu")
    tuned = json.loads(Path(f"{out}.tuned.json").read_text())
    assert tuned["params"]["bias_lr"] == 0.05 and tuned["params"]["epochs"] == 1
    assert len(tuned["trials"]) == 2
    model = load_checkpoint(out)
    assert model.cfg.input_var_floor == tuned["params"]["input_var_floor"]
