"""The architectures by name, and a model rebuilt from its saved name and config.

Kept apart from ``models.train`` so that loading a checkpoint for serving imports neither the
training code nor pandas: ``models.registry`` needs only ``ARCHS`` and ``model_from_config``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from models.bank import EmbeddingBank
from models.base import BaseConfig, BaseModel
from models.dien import DIEN, DIENConfig
from models.din import DIN, DINConfig
from models.ranker import Ranker

ARCHS: dict[str, tuple[type, Callable[[Any, EmbeddingBank], Ranker]]] = {
    "base": (BaseConfig, BaseModel),
    "din": (DINConfig, DIN),
    "dien": (DIENConfig, DIEN),
}


def config_dict(model: Ranker) -> dict[str, Any]:
    """The model's config as plain JSON values (tuples become lists)."""
    return dataclasses.asdict(model.cfg)


def model_from_config(arch: str, config: Mapping[str, Any], bank: EmbeddingBank) -> Ranker:
    """A fresh ``arch`` model over ``bank`` with the saved ``config`` (unknown keys ignored:
    a field dropped since the save; lists back to tuples)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; one of {sorted(ARCHS)}")
    cfg_cls, model_cls = ARCHS[arch]
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    cfg = cfg_cls(**{k: tuple(v) if isinstance(v, list) else v
                     for k, v in config.items() if k in fields})
    return model_cls(cfg, bank)
