"""The training recipe as a procedure: settings searched on a validation split, not constants.

Run: ``tuned = tune_model("din", frame, train, base_cfg)``; then
``build_model("din", frame, **tuned.overrides())`` and ``fit(model, train,
tuned.train_config(base_cfg))``. The full refresh job (``TRAIN_TUNE=true``) and ``bench
quality`` (for ours and, through :func:`search`, the peer) use it.

The procedure (one fixed, small budget):

* the validation split is carved from the **end** of the training period
  (:func:`carve`: the last ``val_frac`` of the samples in time order); the test split is
  never seen;
* ``trials`` settings: the first is the given defaults (the current recipe), the others
  drawn by optuna's quasi-random sampler (scrambled Sobol, seeded: spread over the space,
  as a budget of a few trials wants; a larger budget may swap in TPE), each trained for
  at most ``max_epochs`` epochs with **early stopping** (:class:`EarlyStop`: validation
  AUC after each epoch, stop after ``patience`` epochs without a gain); a trial scores its
  best epoch;
* the space (:data:`SPACE`): Adam's rate, the bank's item-term rate (``bias_lr``), DIEN's
  auxiliary-loss weight; DIN's inference variance floor (:data:`VAR_FLOORS`) needs no
  training: each epoch's model is scored at every floor;
* settings given in ``pinned`` are not searched (``TRAIN_*`` set by the user).

The chosen settings (``epochs`` = the best trial's best epoch) then train on the whole
training period. Imports torch, numpy, scikit-learn and optuna only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from models.data.samples import SampleSet
from models.train import TrainConfig, build_model, config_overrides, fit, predict

# name -> (low, high) searched on a log scale; the archs each setting applies to
SPACE: dict[str, tuple[float, float, tuple[str, ...]]] = {
    "lr": (3e-4, 3e-3, ("base", "din", "dien")),
    "bias_lr": (0.03, 1.0, ("base", "din", "dien")),
    "aux_weight": (1.0, 30.0, ("dien",)),
}
DEFAULTS = {"lr": 1e-3, "bias_lr": 0.3, "aux_weight": 10.0, "input_var_floor": 0.01}
VAR_FLOORS = (0.0, 0.003, 0.01, 0.03, 0.1)


@dataclass(frozen=True)
class TuneConfig:
    """The search budget: the same for every model it tunes (and for a peer's)."""

    trials: int = 3
    max_epochs: int = 3
    patience: int = 0  # epochs without a validation gain before stopping (0: at the first)
    val_frac: float = 0.1
    seed: int = 0


@dataclass
class Tuned:
    """The outcome of a search: the chosen ``params`` (``epochs`` included), the best
    validation AUC, and every trial's params and per-epoch validation AUCs."""

    params: dict[str, Any]
    val_auc: float
    trials: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def train_config(self, base: TrainConfig) -> TrainConfig:
        """``base`` with the chosen rates and epochs."""
        keys = ("lr", "bias_lr", "epochs")
        return replace(base, **{k: self.params[k] for k in keys if k in self.params})

    def overrides(self, arch: str) -> dict[str, Any]:
        """The chosen model-config settings of ``arch`` (for ``build_model``)."""
        return config_overrides(arch, **self.params)

    def summary(self) -> dict[str, Any]:
        return {"params": self.params, "val_auc": self.val_auc, "seconds": self.seconds,
                "trials": self.trials}


def carve(samples: SampleSet, val_frac: float) -> tuple[SampleSet, SampleSet]:
    """(fit, validation): the validation split is the last ``val_frac`` of the samples in
    time order (the end of the training period)."""
    if not 0 < val_frac < 1:
        raise ValueError(f"val_frac must be in (0, 1), not {val_frac}")
    order = np.argsort(samples.ts, kind="stable")
    cut = len(samples) - max(1, round(len(samples) * val_frac))
    return samples.subset(np.sort(order[:cut])), samples.subset(np.sort(order[cut:]))


class EarlyStop:
    """Validation scores epoch by epoch: stop after ``patience`` epochs without a gain."""

    def __init__(self, patience: int = 0) -> None:
        self.patience = patience
        self.scores: list[float] = []
        self.extras: list[dict[str, Any]] = []

    @property
    def best_epoch(self) -> int:
        """1-based epoch of the best score (0 before any)."""
        finite = [s if math.isfinite(s) else -math.inf for s in self.scores]
        return int(np.argmax(finite)) + 1 if finite else 0

    @property
    def best(self) -> float:
        return self.scores[self.best_epoch - 1] if self.scores else float("nan")

    def update(self, score: float, **extra: Any) -> bool:
        """Record an epoch's score; True when training should stop."""
        self.scores.append(float(score))
        self.extras.append(extra)
        return len(self.scores) - self.best_epoch > self.patience


TrialFn = Callable[[dict[str, Any], TuneConfig], EarlyStop]


def search(run_trial: TrialFn, space: Mapping[str, tuple[float, float]],
           defaults: Mapping[str, Any], cfg: TuneConfig) -> Tuned:
    """The generic search: ``cfg.trials`` trials of ``run_trial(params, cfg)`` (which trains
    with early stopping and returns its :class:`EarlyStop`), params drawn from ``space``
    (log-uniform), the first trial at ``defaults``; the best trial's params, its best
    epoch as ``epochs`` and what the trial recorded at that epoch (e.g. a variance floor)."""
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = time.perf_counter()
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.QMCSampler(scramble=True,
                                                                   seed=cfg.seed))
    first = {k: v for k, v in defaults.items() if k in space}
    if first:
        study.enqueue_trial(first)
    fixed = {k: v for k, v in defaults.items() if k not in space}
    trials: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        params = {k: trial.suggest_float(k, lo, hi, log=True) for k, (lo, hi) in space.items()}
        stop = run_trial({**fixed, **params}, cfg)
        best = stop.extras[stop.best_epoch - 1] if stop.scores else {}
        trials.append({"params": params, "val_auc": stop.scores, **best})
        trial.set_user_attr("epochs", stop.best_epoch)
        trial.set_user_attr("extra", best)
        return stop.best if math.isfinite(stop.best) else -math.inf

    study.optimize(objective, n_trials=cfg.trials)
    best = study.best_trial
    params = {**fixed, **best.params, "epochs": best.user_attrs["epochs"],
              **best.user_attrs["extra"]}
    return Tuned(params, float(best.value or 0.0), trials, time.perf_counter() - start)


def val_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """The validation score: AUC (NaN when the split has one class or a trial diverged)."""
    if labels.min() == labels.max() or not np.isfinite(probs).all():
        return float("nan")
    return float(roc_auc_score(labels, probs))


def _set_var_floor(model: Any, floor: float) -> None:
    """DIN's inference variance floor, set on a trained model (no retraining needed)."""
    from models.modules.mlp import InputNorm

    for module in model.modules():
        if isinstance(module, InputNorm):
            module.var_floor = floor
    if hasattr(model.cfg, "input_var_floor"):
        model.cfg.input_var_floor = floor


def tune_model(arch: str, vocab: Any, train: SampleSet, base: TrainConfig,
               cfg: TuneConfig | None = None, *, dim: int = 16, init_std: float | None = None,
               pinned: Mapping[str, Any] | None = None) -> Tuned:
    """Our ``arch``'s settings searched on the end of ``train`` (see the module docstring).

    ``vocab``: what ``build_model`` takes (an events frame or vocabularies); ``base``: the
    training config the search varies (schedule, batch size, device, seed); ``pinned``:
    settings not to search (their values are used as given)."""
    cfg = cfg or TuneConfig()
    pinned = dict(pinned or {})
    if "epochs" in pinned:  # trained that long, no early stop
        cfg = replace(cfg, max_epochs=int(pinned["epochs"]), patience=int(pinned["epochs"]))
    fit_part, val = carve(train, cfg.val_frac)
    space = {k: (lo, hi) for k, (lo, hi, archs) in SPACE.items()
             if arch in archs and k not in pinned}
    if not space:
        cfg = replace(cfg, trials=1)  # nothing to search; the floor and epochs still chosen
    defaults = {k: v for k, v in DEFAULTS.items() if k in space} | pinned
    floors = VAR_FLOORS if arch == "din" and "input_var_floor" not in pinned else ()
    extra = {} if init_std is None else {"init_std": init_std}

    def run_trial(params: dict[str, Any], c: TuneConfig) -> EarlyStop:
        model = build_model(arch, vocab, dim=dim, **extra, **config_overrides(arch, **params))
        stop = EarlyStop(c.patience)

        def on_epoch(_: int) -> bool:
            if not floors:
                return stop.update(val_auc(val.label, predict(model, val)))
            aucs = {}
            for floor in floors:
                _set_var_floor(model, floor)
                aucs[floor] = val_auc(val.label, predict(model, val))
            _set_var_floor(model, 0.0)  # training is unaffected; reset for clarity
            floor = max(aucs, key=lambda f: aucs[f])
            return stop.update(aucs[floor], input_var_floor=floor)

        train_cfg = replace(base, epochs=c.max_epochs, progress=False,
                            **{k: params[k] for k in ("lr", "bias_lr") if k in params})
        fit(model, fit_part, train_cfg, on_epoch=on_epoch)
        return stop

    tuned = search(run_trial, space, defaults, cfg)
    tuned.params.update(pinned)
    return tuned
