"""Settings of the training part (``TRAIN_*`` env vars), created once per process.

Nested fields use ``__``: ``TRAIN_KAFKA__BOOTSTRAP_SERVERS=broker:9092``,
``TRAIN_GUARD__AUC_TOL=0.01``. :func:`train_settings` reads the environment once; every job
gets the object passed down from there.
"""

from __future__ import annotations

import sys
from dataclasses import fields
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from stream.kafka import KafkaConfig

if TYPE_CHECKING:
    from models.train import TrainConfig


class GuardSettings(BaseModel):
    """How much worse than the live version a candidate may be on the held-out slices: a
    difference counts as worse past ``tol + noise_z * its bootstrap standard error``."""

    auc_tol: float = Field(default=0.005, ge=0)
    logloss_tol: float = Field(default=0.005, ge=0)
    # |calibration - 1| of the candidate may exceed the live one's by this much
    calibration_tol: float = Field(default=0.05, ge=0)
    # the anchor (earlier held-out slices, an older world): looser regression checks, for
    # a candidate that broke, not one that follows what changed since (docs/training.md)
    anchor_auc_tol: float = Field(default=0.02, ge=0)
    anchor_logloss_tol: float = Field(default=0.02, ge=0)
    noise_z: float = Field(default=1.645, ge=0)  # one-sided 95%; 0: the tolerances alone
    # the live model's calibration on the new slice outside [1/x, x]: the labels moved
    # more than a world does in minutes (flipped, or a broken producer), "label_shift"
    max_label_shift: float = Field(default=2.0, gt=1)
    min_eval_samples: int = Field(default=100, ge=1)
    # predictions with a standard deviation below this on the held-out slice: collapsed
    min_prediction_std: float = Field(default=1e-3, ge=0)


class TrainSettings(BaseSettings):
    """Everything the training jobs need.

    The recipe fields that ``models.train.TrainConfig`` also has (``epochs`` ... ``seed``)
    are read here from ``TRAIN_*`` (``models/`` never reads the environment) and reach the
    training loop through :meth:`train_config`, the one place that maps them.
    """

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
    # The full refresh searches its recipe on the end of its training window first
    # (models.tune: lr, bias_lr, aux_weight, input_var_floor, epochs with early stopping);
    # any of those set here (TRAIN_LR=...) is pinned, not searched. Off: the recipe as set.
    tune: bool = False
    tune_trials: int = Field(default=3, ge=1)
    tune_max_epochs: int = Field(default=3, ge=1)
    ml100k_dir: Path = Path("../shared/data/ml-100k")

    # The registry and the family the jobs publish to.
    registry_root: str = ".recstream/registry"
    family: str = "din"
    # The incremental trainer.
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    group_id: str = "recstream-train"
    interval_s: float = Field(default=60.0, gt=0)
    min_new_samples: int = Field(default=200, ge=1)  # fewer: the update waits
    max_new_samples: int = Field(default=50_000, ge=1)  # this many: update now
    buffer_samples: int = Field(default=20_000, ge=0)  # earlier samples replayed each update
    holdout_frac: float = Field(default=0.2, gt=0, lt=1)
    anchor_samples: int = Field(default=2_000, ge=0)  # held-out slices of past updates kept
    incremental_lr: float = 1e-3
    guard: GuardSettings = Field(default_factory=GuardSettings)
    metrics_port: int = 9103  # 0: no /metrics server
    # The full refresh.
    feast_data_dir: Path = Path(".recstream/feast")
    refresh_window_days: float = Field(default=28.0, gt=0)
    refresh_every: str = "weekly"  # "weekly", "daily", "hourly" or a number of seconds
    refresh_workers: int = Field(default=1, ge=1)
    ray_address: str = "127.0.0.1:6390"
    ray_auth_token_path: Path | None = Path(".recstream/ray_auth_token")

    def train_config(self, **overrides: Any) -> TrainConfig:
        """The full-training recipe of these settings: every ``TrainConfig`` field that is
        also a field here, then ``overrides``; a progress bar of epochs and steps when
        stderr is a terminal (not in CI, a log or a Ray worker) unless ``progress`` is
        given."""
        from models.train import TrainConfig

        ours = type(self).model_fields
        values: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(TrainConfig)
                                  if f.name in ours}
        values["progress"] = sys.stderr.isatty()
        return TrainConfig(**{**values, **overrides})


@lru_cache(maxsize=1)
def train_settings() -> TrainSettings:
    """The process-wide settings, read from the environment once."""
    return TrainSettings()
