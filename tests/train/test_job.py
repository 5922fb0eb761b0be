"""train.job: TRAIN_* settings reach the model that is trained and saved."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.registry import read_meta
from stream.synthetic import SyntheticConfig, generate
from train.job import train_full
from train.settings import TrainSettings


@pytest.mark.parametrize(("arch", "field", "value", "expected"), [
    ("dien", "aux_weight", 10.0, 10.0), ("dien", "aux_weight", 0.0, 0.0),
    ("dien", "aux_weight", None, 1.0), ("din", "aux_weight", 10.0, None),
    ("din", "input_var_floor", 0.01, 0.01), ("din", "input_var_floor", None, 0.0),
    ("dien", "input_var_floor", 0.01, None)])
def test_architecture_settings_reach_the_saved_config(tmp_path: Path, arch: str, field: str,
                                                      value: float | None,
                                                      expected: float | None) -> None:
    """DIEN gets TRAIN_AUX_WEIGHT, DIN TRAIN_INPUT_VAR_FLOOR (unset: the config's default);
    the other models ignore them."""
    out = tmp_path / "model"
    frame = generate(400, SyntheticConfig(n_users=20, seed=5))
    train_full(frame, TrainSettings(arch=arch, out_dir=out, epochs=1,
                                    registry_root=str(tmp_path / "reg"), **{field: value}))
    assert read_meta(out)["config"].get(field) == expected


@pytest.mark.parametrize(("env", "field"), [("TRAIN_AUX_WEIGHT", "aux_weight"),
                                             ("TRAIN_INPUT_VAR_FLOOR", "input_var_floor")])
def test_architecture_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, env: str,
                                                    field: str) -> None:
    monkeypatch.setenv(env, "0.5")
    assert getattr(TrainSettings(), field) == 0.5


def test_recstream_train_publishes_the_first_live_version(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    """`recstream train` (a first model) writes the checkpoint and the family's live version;
    a second run publishes a version but leaves live to the guard's jobs."""
    from infra.cli import main
    from models.registry import Registry
    from train.settings import train_settings

    monkeypatch.setenv("TRAIN_REGISTRY_ROOT", str(tmp_path / "reg"))
    monkeypatch.setenv("TRAIN_OUT_DIR", str(tmp_path / "ckpt"))
    train_settings.cache_clear()
    try:
        assert main(["train", "--source", "synthetic", "--events", "600"]) == 0
        reg = Registry(tmp_path / "reg")
        first = reg.pointer("din")
        assert first is not None and read_meta(tmp_path / "ckpt")["arch"] == "din"
        assert main(["train", "--source", "synthetic", "--events", "600"]) == 0
        assert len(reg.versions("din")) == 2 and reg.pointer("din") == first
    finally:
        train_settings.cache_clear()


def test_one_seed_one_model(tmp_path: Path) -> None:
    """TRAIN_SEED fixes the initial weights too: two runs of one seed save the same weights,
    another seed others."""
    import torch

    from models.registry import load_checkpoint

    frame = generate(400, SyntheticConfig(n_users=20, seed=5))

    def weights(seed: int, name: str) -> dict[str, torch.Tensor]:
        train_full(frame, TrainSettings(arch="din", out_dir=tmp_path / name, epochs=1,
                                        seed=seed, registry_root=str(tmp_path / name)))
        return load_checkpoint(tmp_path / name).state_dict()

    a, b, c = weights(3, "a"), weights(3, "b"), weights(4, "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
