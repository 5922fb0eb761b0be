"""One incremental update: the live top network fine-tuned on new samples, then judged.

Run: ``update = update_step(live, train_set, holdout, anchor, cfg, tol)``; publish
``update.candidate`` when ``update.verdict.promote``. The incremental trainer
(:mod:`train.incremental`) and the replay benchmark (``recstream bench replay``) both call
this, so the benchmark measures the trainer's own step and guard.

The candidate is a new top network on the live version's bank, which stays frozen (no
gradient, no optimizer state: bitwise unchanged); the live model itself is not modified.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from models.archs import ARCHS
from models.data.samples import SampleSet
from models.ranker import Ranker
from models.train import TrainConfig, fit_incremental
from train.guard import Verdict, judge
from train.settings import GuardSettings


@dataclass
class Update:
    """The candidate, the guard's verdict on it, and the training figures."""

    candidate: Ranker
    verdict: Verdict
    stats: dict[str, float] = field(default_factory=dict)


def on_same_bank(live: Ranker) -> Ranker:
    """A copy of ``live``'s top network on ``live``'s own bank (shared, frozen)."""
    model = ARCHS[live.arch][1](live.cfg, live.bank)
    model.top.load_state_dict(live.top.state_dict())
    model.to(next(live.parameters()).device)
    return model


def update_step(live: Ranker, train_set: SampleSet, holdout: SampleSet,
                anchor: SampleSet | None, cfg: TrainConfig, tol: GuardSettings) -> Update:
    """Fine-tune a copy of ``live``'s top on ``train_set`` and judge it on the held-out
    slices (:func:`train.guard.judge`)."""
    start = time.perf_counter()
    candidate = on_same_bank(live)
    stats = fit_incremental(candidate, train_set, cfg) if len(train_set) else {}
    verdict = judge(candidate, live, holdout, anchor, tol)
    return Update(candidate, verdict, {**stats, "train_samples": float(len(train_set)),
                                       "update_seconds": time.perf_counter() - start})
