"""Checkpoint directories without pickle: the bank and the top net saved apart, safetensors + JSON.

The single-directory format that came before the Registry (``models.registry.core``) and that
``recstream train --out`` and serving by directory still use. Layout of
``save_checkpoint(model, directory)``::

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

import json
import os
from pathlib import Path
from typing import Any

from models.bank import EmbeddingBank
from models.ranker import Ranker
from models.registry.serial import bank_from_bytes, bank_to_bytes, model_from_bytes, top_to_bytes

BANK_WEIGHTS = "bank.safetensors"
BANK_META = "bank.json"
TOP_WEIGHTS = "top.safetensors"
MODEL_META = "model.json"


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
        data, meta = bank_to_bytes(bank, version)
        (out / BANK_WEIGHTS).write_bytes(data)
        _write_json(out / BANK_META, meta)
    bank.version = version
    return out


def load_bank(bank_dir: str | Path, device: str = "cpu", frozen: bool = False) -> EmbeddingBank:
    """The bank saved in ``bank_dir``; checks its content hash; ``frozen`` for incremental."""
    bank_dir = Path(bank_dir)
    meta = json.loads((bank_dir / BANK_META).read_text())
    return bank_from_bytes((bank_dir / BANK_WEIGHTS).read_bytes(), meta, device, frozen,
                           where=str(bank_dir))


def save_top(model: Ranker, directory: str | Path, bank_dir: str | Path) -> Path:
    """Writes the top net + model.json referencing the (already saved) bank in ``bank_dir``."""
    if model.bank.version is None:
        raise ValueError("save the bank first (save_bank) so the top can reference its version")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data, meta = top_to_bytes(model)
    (directory / TOP_WEIGHTS).write_bytes(data)
    model.top_version = meta["top_version"]
    rel = os.path.relpath(Path(bank_dir).resolve(), directory.resolve())
    _write_json(directory / MODEL_META, {
        **meta, "bank_version": model.bank.version, "bank_dir": rel})
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
    directory = Path(directory)
    meta = read_meta(directory)
    if bank is None:
        bank = load_bank(directory / meta["bank_dir"], device, frozen=frozen_bank)
    elif bank.version != meta["bank_version"]:
        raise ValueError(f"top in {directory} needs bank {meta['bank_version']}, "
                         f"got {bank.version}")
    return model_from_bytes((directory / TOP_WEIGHTS).read_bytes(), meta, bank, device)
