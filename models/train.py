"""Training and evaluation: full training (bank + top) and incremental training (top only).

Run: ``model = build_model("din", frame); fit(model, train, TrainConfig()); evaluate(model,
test)``; every few minutes ``fit_incremental(model, fresh, cfg)`` retrains the top net while
the EmbeddingBank stays frozen (no gradient, no optimizer state, bitwise unchanged).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from models.archs import ARCHS
from models.bank import CAT, INIT_STD, ITEM, EmbeddingBank
from models.data.samples import SampleSet, make_batch
from models.dien import DIEN
from models.metrics import ranking_metrics
from models.modules._native import native
from models.ranker import Ranker
from models.regularization import feature_counts, mba_penalty

__all__ = ["ARCHS", "TrainConfig", "build_model", "config_overrides", "evaluate", "fit",
           "fit_incremental", "predict", "vocab_from_frame"]


@dataclass
class TrainConfig:
    """Settings of one training run.

    ``lr_schedule``: ``"constant"``, or ``"linear"`` (every rate decays linearly to 0 over
    the run); ``bias_lr``: Adam's rate for the bank's first-order item term (None: ``lr``).
    Both depend on the data (docs/models.md, "Training recipe"): on ml-100k's validation split
    ``linear`` and ``bias_lr=0.3`` gained DIN +0.020 AUC; on the demo's one epoch of 20k
    synthetic events (~16 samples an item) the fast item term overfits (DIN -0.05 AUC) and
    the decay costs ~0.005-0.014. The defaults keep the short-run behaviour.
    ``mba_lambda``: the weight of the DIN paper's mini-batch aware L2 on the bank's tables
    (``models.regularization``; 0: off); full training only (a frozen bank has no gradient).
    """

    epochs: int = 1
    batch_size: int = 256
    lr: float = 1e-3
    lr_schedule: str = "constant"
    bias_lr: float | None = None
    weight_decay: float = 0.0
    mba_lambda: float = 0.0
    device: str = "cpu"
    seed: int = 0
    oov_dropout: float = 0.01
    progress: bool = False


def vocab_from_frame(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Vocabularies (item, cat) of an events frame."""
    return {ITEM: frame["item_id"].to_numpy(np.int64),
            CAT: frame["category_id"].to_numpy(np.int64)}


def config_overrides(arch: str, **values: Any) -> dict[str, Any]:
    """The ``values`` that are fields of ``arch``'s config and not None, for ``build_model``:
    one set of settings (e.g. DIEN's ``aux_weight``, DIN's ``input_var_floor``) serves every
    architecture, each taking its own."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; one of {sorted(ARCHS)}")
    known = {f.name for f in fields(ARCHS[arch][0])}
    return {k: v for k, v in values.items() if k in known and v is not None}


def build_model(arch: str, frame_or_vocab: pd.DataFrame | dict[str, Any] | EmbeddingBank,
                dim: int = 16, init_std: float = INIT_STD, **overrides: Any) -> Ranker:
    """A fresh ``base`` / ``din`` / ``dien`` model with a bank over the ids of a frame.

    ``frame_or_vocab``: an events frame, a dict of vocabularies (``item``, ``cat``, ...) or an
    existing EmbeddingBank (to train a new top net against it). ``init_std``: the initial std of
    a new bank's tables. ``overrides`` set config fields (e.g. ``gru_type="AGRU"``).
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; one of {sorted(ARCHS)}")
    if isinstance(frame_or_vocab, EmbeddingBank):
        bank = frame_or_vocab
    elif isinstance(frame_or_vocab, pd.DataFrame):
        bank = EmbeddingBank(vocab_from_frame(frame_or_vocab), dim=dim, init_std=init_std)
    else:
        bank = EmbeddingBank(frame_or_vocab, dim=dim, init_std=init_std)
    cfg_cls, model_cls = ARCHS[arch]
    return model_cls(cfg_cls(dim=bank.dim, **overrides), bank)


def _optimizer(model: Ranker, params: list[torch.nn.Parameter], cfg: TrainConfig, steps: int
               ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Adam over ``params`` (the bank's item term at ``bias_lr``) and its lr schedule."""
    if cfg.lr_schedule not in ("linear", "constant"):
        raise ValueError(f"lr_schedule must be 'linear' or 'constant', not {cfg.lr_schedule!r}")
    bias = model.bank.item_bias
    fast = {id(p) for p in bias.parameters()} if bias is not None else set()
    groups: list[dict[str, Any]] = [{"params": [p for p in params if id(p) not in fast]}]
    if any(id(p) in fast for p in params):
        groups.append({"params": [p for p in params if id(p) in fast], "weight_decay": 0.0,
                       "lr": cfg.lr if cfg.bias_lr is None else cfg.bias_lr})
    opt = torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    end = 0.0 if cfg.lr_schedule == "linear" else 1.0
    sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=end,
                                              total_iters=max(steps, 1))
    return opt, sched


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, end) of each training batch of ``n`` samples; a last batch of one joins the one
    before it (BatchNorm cannot take a batch of one in training)."""
    bounds = [(lo, min(lo + batch_size, n)) for lo in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def _train(model: Ranker, samples: SampleSet, cfg: TrainConfig,
           params: list[torch.nn.Parameter],
           on_epoch: Callable[[int], bool] | None = None) -> dict[str, float]:
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.to(cfg.device)
    bounds = batch_bounds(len(samples), cfg.batch_size)
    opt, sched = _optimizer(model, params, cfg, cfg.epochs * len(bounds))
    tensors = samples.tensors()
    negatives = isinstance(model, DIEN)
    # The C++ kernels (DIEN's recurrence, DIN's attention, the bank's gather) are built (once
    # a machine) or loaded before the clock: a first DIN run used to pay the load inside it.
    native()
    n, seen, total_loss, steps = len(samples), 0, 0.0, 0
    start = time.perf_counter()
    mba = cfg.mba_lambda > 0 and model.bank.tables[ITEM].weight.requires_grad
    counts = feature_counts(model.bank, tensors) if mba else {}
    for epoch in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        bar = tqdm(bounds, disable=not cfg.progress,
                   desc=f"{model.arch} epoch {epoch + 1}/{cfg.epochs}")
        for lo, hi in bar:
            batch = make_batch(tensors, perm[lo:hi], negatives, cfg.device)
            logits, aux = model.forward_with_aux(batch, cfg.oov_dropout)
            loss = F.binary_cross_entropy_with_logits(logits, batch["label"].float()) + aux
            if mba:
                loss = loss + mba_penalty(model.bank, batch, counts, cfg.mba_lambda)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(logits)
            steps += 1
            total_loss += float(loss.detach())
        if on_epoch is not None:  # e.g. early stopping (models.tune)
            if on_epoch(epoch + 1):
                break
            model.train()
    seconds = time.perf_counter() - start
    model.eval()
    return {"samples": float(seen), "seconds": seconds,
            "samples_per_s": seen / seconds if seconds > 0 else float("nan"),
            "mean_loss": total_loss / max(steps, 1), "optimized_tensors": float(len(params))}


def fit(model: Ranker, train_samples: SampleSet, cfg: TrainConfig | None = None,
        on_epoch: Callable[[int], bool] | None = None) -> dict[str, float]:
    """Full training: bank and top net together. Returns samples, seconds, samples_per_s.

    ``on_epoch(epochs_done)``, if given, runs after each epoch (the model may be evaluated
    in it; training mode is restored after); True stops the training there."""
    cfg = cfg or TrainConfig()
    model.bank.requires_grad_(True)
    model.train()
    stats = _train(model, train_samples, cfg, list(model.parameters()), on_epoch)
    model.bank.version = None  # the tables changed: a new bank version once saved
    model.top_version = None
    return stats


def fit_incremental(model: Ranker, train_samples: SampleSet, cfg: TrainConfig | None = None
                    ) -> dict[str, float]:
    """Top-only training: the bank is frozen (no grad, no optimizer state, eval mode)."""
    cfg = cfg or TrainConfig()
    model.top.train()
    model.bank.freeze()
    stats = _train(model, train_samples, cfg, list(model.top.parameters()))
    model.top_version = None
    return stats


@torch.no_grad()
def predict(model: Ranker, samples: SampleSet, batch_size: int = 4096,
            device: str | None = None) -> np.ndarray:
    """Click probabilities (N,) of the samples, in eval mode."""
    model.eval()
    device = device or str(next(model.parameters()).device)
    tensors = samples.tensors()
    out = [torch.sigmoid(model(make_batch(tensors, slice(lo, lo + batch_size), False, device)))
           .cpu() for lo in range(0, len(samples), batch_size)]
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def evaluate(model: Ranker, samples: SampleSet, batch_size: int = 4096) -> dict[str, float]:
    """``auc, gauc, logloss, calibration`` of the model on the samples."""
    probs = predict(model, samples, batch_size)
    return ranking_metrics(samples.user_id, samples.label, probs)
