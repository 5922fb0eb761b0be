"""Checkpoints without pickle: the bank and the top net saved apart, safetensors + JSON.

Layout of ``save_checkpoint(model, directory)``::

    directory/
      bank-<version>/bank.safetensors   tables and vocabularies (version = content hash)
      bank-<version>/bank.json          {"version", "dim", "tables": {name: vocab size}}
      top.safetensors                   the top net's weights (buffers included)
      model.json                        {"arch", "config", "bank_version", "bank_dir",
                                         "top_version"}

A bank directory is immutable: saving a bank whose version already exists writes nothing.
The top net references the bank version it was trained against; loading checks the bank's
content hash against it, so a top never runs on the wrong embeddings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from models.bank import EmbeddingBank
from models.ranker import Ranker

BANK_WEIGHTS = "bank.safetensors"
BANK_META = "bank.json"
TOP_WEIGHTS = "top.safetensors"
MODEL_META = "model.json"


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def save_bank(bank: EmbeddingBank, root: str | Path) -> Path:
    """Writes ``root/bank-<version>/`` (if absent), sets ``bank.version``; returns the dir."""
    version = bank.content_hash()
    out = Path(root) / f"bank-{version}"
    if not (out / BANK_META).is_file():
        out.mkdir(parents=True, exist_ok=True)
        save_file(_cpu(bank.state_dict()), str(out / BANK_WEIGHTS))
        _write_json(out / BANK_META, {
            "version": version, "dim": bank.dim, "item_bias": bank.item_bias is not None,
            "tables": {name: len(bank.vocab(name)) for name in bank.names}})
    bank.version = version
    return out


def load_bank(bank_dir: str | Path, device: str = "cpu", frozen: bool = False) -> EmbeddingBank:
    """The bank saved in ``bank_dir``; checks its content hash; ``frozen`` for incremental."""
    bank_dir = Path(bank_dir)
    meta = json.loads((bank_dir / BANK_META).read_text())
    state = load_file(str(bank_dir / BANK_WEIGHTS))
    vocabs = {name: state[f"vocab_{name}"] for name in meta["tables"]}
    # banks saved before the first-order item term have none ("item_bias" absent)
    bank = EmbeddingBank(vocabs, dim=int(meta["dim"]), item_bias=bool(meta.get("item_bias")))
    bank.load_state_dict(state)
    if bank.content_hash() != meta["version"]:
        raise ValueError(f"bank in {bank_dir} does not match its version {meta['version']}")
    bank.version = meta["version"]
    bank.to(device)
    return bank.freeze() if frozen else bank


def _top_hash(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(state.items()):
        digest.update(key.encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()[:12]


def save_top(model: Ranker, directory: str | Path, bank_dir: str | Path) -> Path:
    """Writes the top net + model.json referencing the (already saved) bank in ``bank_dir``."""
    if model.bank.version is None:
        raise ValueError("save the bank first (save_bank) so the top can reference its version")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = _cpu(model.top.state_dict())
    save_file(state, str(directory / TOP_WEIGHTS))
    model.top_version = _top_hash(state)
    rel = os.path.relpath(Path(bank_dir).resolve(), directory.resolve())
    _write_json(directory / MODEL_META, {
        "arch": model.arch, "config": dataclasses.asdict(model.cfg),
        "bank_version": model.bank.version, "bank_dir": rel,
        "top_version": model.top_version})
    return directory


def save_checkpoint(model: Ranker, directory: str | Path) -> Path:
    """Saves bank (under its own version) and top net into ``directory``; returns it."""
    bank_dir = save_bank(model.bank, directory)
    return save_top(model, directory, bank_dir)


def read_meta(directory: str | Path) -> dict[str, Any]:
    """The model.json of a checkpoint directory."""
    meta: dict[str, Any] = json.loads((Path(directory) / MODEL_META).read_text())
    return meta


def load_checkpoint(directory: str | Path, device: str = "cpu",
                    bank: EmbeddingBank | None = None, frozen_bank: bool = False) -> Ranker:
    """The model saved in ``directory``, in eval mode on ``device``.

    ``bank``: reuse an already loaded bank (must have the referenced version);
    ``frozen_bank``: load the bank frozen, ready for ``fit_incremental``.
    """
    from models.train import ARCHS

    directory = Path(directory)
    meta = read_meta(directory)
    if bank is None:
        bank = load_bank(directory / meta["bank_dir"], device, frozen=frozen_bank)
    elif bank.version != meta["bank_version"]:
        raise ValueError(f"top in {directory} needs bank {meta['bank_version']}, "
                         f"got {bank.version}")
    cfg_cls, model_cls = ARCHS[meta["arch"]]
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    cfg = cfg_cls(**{k: tuple(v) if isinstance(v, list) else v
                     for k, v in meta["config"].items() if k in fields})
    model = model_cls(cfg, bank)
    model.top.load_state_dict(load_file(str(directory / TOP_WEIGHTS)))
    model.top_version = meta["top_version"]
    model.to(device)
    model.eval()
    return model
