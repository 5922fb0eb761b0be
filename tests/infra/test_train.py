"""infra.train: TRAIN_* settings reach the model that is trained and saved."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.train import TrainSettings, train_full
from models.registry import read_meta
from stream.synthetic import SyntheticConfig, generate


@pytest.mark.parametrize(("arch", "aux_weight", "expected"),
                         [("dien", 10.0, 10.0), ("dien", 0.0, 0.0), ("dien", None, 1.0),
                          ("din", 10.0, None)])
def test_the_auxiliary_weight_reaches_the_saved_dien(tmp_path: Path, arch: str,
                                                     aux_weight: float | None,
                                                     expected: float | None) -> None:
    """DIEN gets TRAIN_AUX_WEIGHT (unset: its config's default); other models ignore it."""
    out = tmp_path / "model"
    frame = generate(400, SyntheticConfig(n_users=20, seed=5))
    train_full(frame, TrainSettings(arch=arch, out_dir=out, epochs=1, aux_weight=aux_weight))
    assert read_meta(out)["config"].get("aux_weight") == expected


def test_the_auxiliary_weight_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAIN_AUX_WEIGHT", "10")
    assert TrainSettings().aux_weight == 10.0


@pytest.mark.parametrize(("arch", "floor", "expected"),
                         [("din", 0.01, 0.01), ("din", None, 0.0), ("dien", 0.01, None)])
def test_the_input_var_floor_reaches_the_saved_din(tmp_path: Path, arch: str,
                                                   floor: float | None,
                                                   expected: float | None) -> None:
    """DIN gets TRAIN_INPUT_VAR_FLOOR (unset: its config's 0); other models ignore it."""
    out = tmp_path / "model"
    frame = generate(400, SyntheticConfig(n_users=20, seed=5))
    train_full(frame, TrainSettings(arch=arch, out_dir=out, epochs=1, input_var_floor=floor))
    assert read_meta(out)["config"].get("input_var_floor") == expected


def test_the_input_var_floor_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAIN_INPUT_VAR_FLOOR", "0.01")
    assert TrainSettings().input_var_floor == 0.01
