"""One incremental update: the live top network fine-tuned on new samples, then judged.

Run: ``updater = TopUpdater(live, settings)``; per batch of new samples
``update = updater.propose(samples)``, then ``updater.adopt(update)`` when
``update.verdict.promote`` (and the registry took it). The incremental trainer
(:mod:`train.incremental`) and the replay benchmark (``recstream bench replay``) both drive
this class, so the benchmark measures the trainer's own step and guard.

A proposal splits the new samples in their order (the trainer gives them in the order the
stream emitted them, :mod:`train.incremental`): the newest ``holdout_frac`` are held out;
the candidate, a new top network on the live version's bank (shared and frozen: no
gradient, no optimizer state, bitwise unchanged), is fine-tuned for one epoch on the rest
plus up to ``buffer_samples`` earlier accepted samples, and judged (:func:`train.guard.judge`)
on the held-out slice and on the anchor (up to ``anchor_samples`` of the newest past held-out
slices). Adopting it makes it live and moves its samples into the buffer and its held-out
slice into the anchor; a rejected batch is not replayed, and its held-out slice joins the
anchor unless its labels were found broken (:meth:`TopUpdater.reject`). The live model itself
is never modified.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from models.archs import ARCHS
from models.data.samples import SampleSet
from models.ranker import Ranker
from models.train import TrainConfig, fit_incremental
from train.data import concat
from train.guard import Verdict, judge
from train.settings import TrainSettings

# rejections that say the held-out slice itself is bad data: it never joins the anchor
ANCHOR_REFUSED = frozenset({"label_shift", "too_few_samples"})


@dataclass
class Update:
    """The candidate, the guard's verdict on it, the figures, and the data it used."""

    candidate: Ranker
    verdict: Verdict
    stats: dict[str, float] = field(default_factory=dict)
    train_set: SampleSet | None = None
    holdout: SampleSet | None = None


def on_same_bank(live: Ranker) -> Ranker:
    """A copy of ``live``'s top network on ``live``'s own bank (shared, frozen)."""
    model = ARCHS[live.arch][1](live.cfg, live.bank)
    model.top.load_state_dict(live.top.state_dict())
    model.to(next(live.parameters()).device)
    return model


def _tail(samples: SampleSet, n: int) -> SampleSet | None:
    """The last ``n`` samples (None when ``n`` is 0)."""
    return samples.subset(slice(max(0, len(samples) - n), None)) if n else None


class TopUpdater:
    """The live model and what the next updates replay and judge against."""

    def __init__(self, live: Ranker, s: TrainSettings) -> None:
        self.s = s
        self.live = live
        self.buffer: SampleSet | None = None  # accepted samples the next updates replay
        self.anchor: SampleSet | None = None  # held-out slices of past accepted updates
        self.proposals = 0

    def follow(self, live: Ranker) -> None:
        """A new live model from elsewhere (a full refresh): buffer and anchor are raw ids
        and stay; the next candidate starts from ``live`` on its own bank."""
        self.live = live

    def propose(self, samples: SampleSet) -> Update:
        """A candidate fine-tuned on ``samples`` (oldest first) and the guard's verdict."""
        start = time.perf_counter()
        cut = len(samples) - max(1, round(len(samples) * self.s.holdout_frac))
        fresh, holdout = samples.subset(slice(0, cut)), samples.subset(slice(cut, None))
        train_set = concat([self.buffer, fresh]) if self.buffer is not None else fresh
        cfg = TrainConfig(epochs=1, batch_size=self.s.batch_size, lr=self.s.incremental_lr,
                          device=self.s.device, seed=self.s.seed + self.proposals)
        self.proposals += 1
        candidate = on_same_bank(self.live)
        stats = fit_incremental(candidate, train_set, cfg) if len(train_set) else {}
        verdict = judge(candidate, self.live, holdout, self.anchor, self.s.guard)
        return Update(candidate, verdict,
                      {**stats, "train_samples": float(len(train_set)),
                       "update_seconds": time.perf_counter() - start}, train_set, holdout)

    def adopt(self, update: Update, live: Ranker | None = None) -> None:
        """Make ``update``'s candidate (or ``live``, the same model as reloaded) live."""
        assert update.train_set is not None and update.holdout is not None
        self.live = live or update.candidate
        self.buffer = _tail(concat([update.train_set, update.holdout]), self.s.buffer_samples)
        self._to_anchor(update.holdout)

    def reject(self, update: Update) -> None:
        """A rejected update: its samples are not replayed, but its held-out slice joins the
        anchor unless the guard found the slice's labels broken (``label_shift``): otherwise
        a run of rejections would freeze the anchor in a world that has moved on, and every
        later candidate that follows the world would lose there (see docs/training.md)."""
        if update.holdout is not None and update.verdict.reason not in ANCHOR_REFUSED:
            self._to_anchor(update.holdout)

    def _to_anchor(self, holdout: SampleSet) -> None:
        anchor = holdout if self.anchor is None else concat([self.anchor, holdout])
        self.anchor = _tail(anchor, self.s.anchor_samples)
