"""Banks and top nets to bytes and back: safetensors for tensors, plain dicts for metadata.

Shared by the checkpoint directories (``models.registry.checkpoint``) and the Registry; no
pickle anywhere (``safetensors.torch.load`` reads tensors, never code). Imports neither the
training code nor pandas.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch
from safetensors.torch import load, save

from models.archs import config_dict, model_from_config
from models.bank import EmbeddingBank, state_hash
from models.ranker import Ranker


class RegistryError(Exception):
    """A registry operation that cannot be done (bad name, no such pointer, nothing to
    roll back to, a file that fails its check)."""


class VersionNotFound(RegistryError):
    """No complete version (or bank) of that id in the registry."""


class IntegrityError(RegistryError, ValueError):
    """A file whose bytes or contents do not match the hash recorded for them."""


def sha256(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's state (buffers included) as contiguous CPU tensors."""
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def bank_to_bytes(bank: EmbeddingBank, version: str) -> tuple[bytes, dict[str, Any]]:
    """(safetensors bytes, meta) of a bank; meta: version (its ``content_hash()``, given),
    dim, item_bias, tables {name: vocabulary size}."""
    meta = {"version": version, "dim": bank.dim,
            "item_bias": bank.item_bias is not None,
            "tables": {name: len(bank.vocab(name)) for name in bank.names}}
    return save(cpu_state(bank)), meta


def bank_from_bytes(data: bytes, meta: Mapping[str, Any], device: str = "cpu",
                    frozen: bool = False, where: str = "") -> EmbeddingBank:
    """The bank of ``bank_to_bytes``; its content hash must equal ``meta["version"]``."""
    state = load(data)
    vocabs = {name: state[f"vocab_{name}"] for name in meta["tables"]}
    # banks saved before the first-order item term have none ("item_bias" absent)
    bank = EmbeddingBank(vocabs, dim=int(meta["dim"]), item_bias=bool(meta.get("item_bias")))
    bank.load_state_dict(state)
    if bank.content_hash() != meta["version"]:
        raise IntegrityError(f"bank in {where} does not match its version {meta['version']}")
    bank.version = meta["version"]
    bank.to(device)
    return bank.freeze() if frozen else bank


def top_to_bytes(model: Ranker) -> tuple[bytes, dict[str, Any]]:
    """(safetensors bytes of the top net, meta: arch, config, top_version)."""
    state = cpu_state(model.top)
    return save(state), {"arch": model.arch, "config": config_dict(model),
                         "top_version": state_hash(state, digits=12)}


def model_from_bytes(data: bytes, meta: Mapping[str, Any], bank: EmbeddingBank,
                     device: str = "cpu") -> Ranker:
    """The ``meta["arch"]`` model over ``bank`` with the top net's weights ``data``, in eval
    mode on ``device``; ``top_version`` set from the meta."""
    model = model_from_config(meta["arch"], meta["config"], bank)
    model.top.load_state_dict(load(data))
    model.top_version = meta["top_version"]
    model.to(device)
    model.eval()
    return model
