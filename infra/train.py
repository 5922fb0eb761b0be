"""Training job glue: settings from ``TRAIN_*`` env vars, data from a source, a checkpoint out.

Run: ``recstream train --source synthetic --events 20000`` or
``recstream train --source movielens --data ../shared/data/ml-100k``.
The model code in ``models/`` is plain PyTorch; this module only wires it to settings.
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic_settings import BaseSettings, SettingsConfigDict


class TrainSettings(BaseSettings):
    """Settings of the training job."""

    model_config = SettingsConfigDict(env_prefix="TRAIN_", env_nested_delimiter="__")

    arch: Literal["base", "din", "dien"] = "din"
    out_dir: Path = Path(".recstream/models/din")
    epochs: int = 1
    batch_size: int = 256
    dim: int = 16
    max_history: int = 50
    lr: float = 1e-3
    lr_schedule: Literal["constant", "linear"] = "constant"
    bias_lr: float | None = None  # the bank's first-order item term (None: lr)
    aux_weight: float | None = None  # DIEN's auxiliary loss weight (None: DIENConfig's)
    mba_lambda: float = 0.0  # the DIN paper's mini-batch aware L2 on the bank (0: off)
    input_var_floor: float | None = None  # DIN's MLP input-norm inference floor (None: DINConfig's)
    device: str = "cpu"
    seed: int = 0
    ml100k_dir: Path = Path("../shared/data/ml-100k")


@lru_cache(maxsize=1)
def train_settings() -> TrainSettings:
    """The process-wide settings, read from the environment once."""
    return TrainSettings()


def load_frame(source: str, n_events: int, data_dir: Path) -> pd.DataFrame:
    """An events frame from ``source``: ``synthetic`` (n_events) or ``movielens`` (data_dir)."""
    if source == "synthetic":
        from stream.synthetic import generate

        return generate(n_events)
    from models.data.movielens import load_movielens

    return load_movielens(data_dir)


def train_full(frame: pd.DataFrame, s: TrainSettings) -> dict[str, Any]:
    """Full training (bank + top) on the first 80% by time; evaluate on the rest; save."""
    from models.allocator import keep_freed_memory
    from models.data.samples import build_samples, time_split
    from models.registry import save_checkpoint
    from models.train import TrainConfig, build_model, config_overrides, evaluate, fit

    keep_freed_memory()  # a training process: reuse each step's memory (models/allocator.py)
    start = time.perf_counter()
    samples = build_samples(frame, max_len=s.max_history)
    train, test = time_split(samples, train_frac=0.8)
    overrides = config_overrides(s.arch, aux_weight=s.aux_weight,
                                 input_var_floor=s.input_var_floor)
    model = build_model(s.arch, frame, dim=s.dim, **overrides)
    cfg = TrainConfig(epochs=s.epochs, batch_size=s.batch_size, lr=s.lr,
                      lr_schedule=s.lr_schedule, bias_lr=s.bias_lr, mba_lambda=s.mba_lambda,
                      device=s.device, seed=s.seed)
    fit(model, train, cfg)
    metrics = evaluate(model, test)
    save_checkpoint(model, s.out_dir)
    return {"arch": s.arch, "out_dir": str(s.out_dir), "seconds": time.perf_counter() - start,
            **{k: float(v) for k, v in metrics.items()}}
