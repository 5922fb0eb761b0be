"""Checkpoints: bank and top saved apart, versions, round trips, no pickle."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from models.bank import EmbeddingBank
from models.data.samples import build_samples
from models.ranker import Ranker
from models.registry import (
    load_bank,
    load_checkpoint,
    read_meta,
    save_bank,
    save_checkpoint,
    save_top,
)
from models.train import TrainConfig, build_model, fit_incremental, vocab_from_frame

from .conftest import item_table, random_batch


def test_round_trip_gives_identical_scores(model: Ranker, batch: dict[str, torch.Tensor],
                                           tmp_path: Path) -> None:
    save_checkpoint(model, tmp_path)
    loaded = load_checkpoint(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(batch), model(batch))
    assert not loaded.training and loaded.version == model.version is not None
    meta = read_meta(tmp_path)
    assert meta["arch"] == model.arch and meta["bank_version"] == model.bank.version
    assert (tmp_path / meta["bank_dir"] / "bank.safetensors").is_file()
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.pkl"))


def test_bank_directory_is_versioned_and_immutable(frame: pd.DataFrame,
                                                   tmp_path: Path) -> None:
    model = build_model("din", frame, dim=4)
    first = save_bank(model.bank, tmp_path)
    stamp = (first / "bank.safetensors").stat().st_mtime_ns
    assert save_bank(model.bank, tmp_path) == first
    assert (first / "bank.safetensors").stat().st_mtime_ns == stamp
    assert first.name == f"bank-{model.bank.version}"
    assert json.loads((first / "bank.json").read_text())["version"] == model.bank.version


def test_many_tops_share_one_bank_and_a_wrong_bank_is_refused(frame: pd.DataFrame,
                                                              tmp_path: Path) -> None:
    model = build_model("dien", frame, dim=4)
    bank_dir = save_bank(model.bank, tmp_path / "banks")
    save_top(model, tmp_path / "top-a", bank_dir)
    save_top(model, tmp_path / "top-b", bank_dir)
    bank = load_bank(bank_dir, frozen=True)
    a = load_checkpoint(tmp_path / "top-a", bank=bank)
    assert a.bank is bank and load_checkpoint(tmp_path / "top-b").bank.version == bank.version
    other = build_model("dien", frame, dim=4)
    save_bank(other.bank, tmp_path / "banks")
    with pytest.raises(ValueError, match="needs bank"):
        load_checkpoint(tmp_path / "top-a", bank=other.bank)


def test_tampered_bank_is_detected(frame: pd.DataFrame, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    model = build_model("base", frame, dim=4)
    bank_dir = save_bank(model.bank, tmp_path)
    state = load_file(str(bank_dir / "bank.safetensors"))
    state["tables.item.weight"][2, 0] += 1.0
    save_file(state, str(bank_dir / "bank.safetensors"))
    with pytest.raises(ValueError, match="does not match"):
        load_bank(bank_dir)


def test_incremental_training_leaves_the_bank_bitwise_unchanged(frame: pd.DataFrame,
                                                                tmp_path: Path) -> None:
    torch.manual_seed(0)
    save_checkpoint(build_model("dien", frame, dim=4), tmp_path)
    model = load_checkpoint(tmp_path, frozen_bank=True)
    before = {k: v.clone() for k, v in model.bank.state_dict().items()}
    top_before = {k: v.clone() for k, v in model.top.state_dict().items()}
    stats = fit_incremental(model, build_samples(frame.iloc[:1500], max_len=8),
                            TrainConfig(epochs=1, batch_size=128))
    assert stats["optimized_tensors"] == len(list(model.top.parameters()))
    for key, value in model.bank.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None and not p.requires_grad for p in model.bank.parameters())
    assert any(not torch.equal(v, top_before[k]) for k, v in model.top.state_dict().items())
    assert model.bank.content_hash() == model.bank.version
    save_checkpoint(model, tmp_path)  # a new top against the same bank
    assert len(list(tmp_path.glob("bank-*"))) == 1
    assert read_meta(tmp_path)["bank_version"] == model.bank.version
    with torch.no_grad():
        batch = random_batch(*item_table(frame))
        assert torch.equal(load_checkpoint(tmp_path)(batch), model(batch))


def test_a_bank_without_item_term_round_trips(frame: pd.DataFrame, tmp_path: Path) -> None:
    bank = EmbeddingBank(vocab_from_frame(frame), dim=4, item_bias=False)
    model = build_model("din", bank)
    save_checkpoint(model, tmp_path)
    loaded = load_checkpoint(tmp_path)
    assert loaded.bank.item_bias is None
    with torch.no_grad():
        batch = random_batch(*item_table(frame))
        assert torch.equal(loaded(batch), model.eval()(batch))


def test_din_input_var_floor_is_saved_with_its_config(frame: pd.DataFrame,
                                                      tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("din", frame, dim=4, input_var_floor=0.05)
    with torch.no_grad():  # stats small against the floor, so the floor changes the scores
        model.top.mlp.net[0].running_var.fill_(1e-3)
    save_checkpoint(model, tmp_path)
    loaded = load_checkpoint(tmp_path)
    assert loaded.top.mlp.net[0].var_floor == 0.05
    batch = random_batch(*item_table(frame))
    with torch.no_grad():
        assert torch.equal(loaded(batch), model.eval()(batch))
        loaded.top.mlp.net[0].var_floor = 0.0
        assert not torch.equal(loaded(batch), model(batch))
