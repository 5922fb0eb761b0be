"""The quality benchmark's protocols: how the events become train and test samples.

Run: ``load_protocol("time80", "../shared/data/ml-100k")``; names in :data:`PROTOCOLS`.

* ``time70`` / ``time80`` / ``time90``: events in time order, the first 70/80/90% train, the
  rest test (``time80`` is the standard protocol of docs/models.md);
* ``user``: users partitioned as in the DIN paper: a seeded 20% of the users are test
  users, the others' events all train; the test samples are each test user's last half of
  events (their earlier events appear only as the history of those);
* ``synthetic``: ``stream.synthetic``'s drifting-interest world (its true click probability
  known), time split at 80%: ``best_auc`` is the AUC of the true probability on the test
  samples, the best any model can reach.

Every protocol's samples come from ``build_samples`` (history = the user's earlier clicks,
``max_len`` most recent) over the whole frame, and the vocabularies from the whole frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from models.data.movielens import load_movielens
from models.data.samples import SampleSet, build_samples, time_split

PROTOCOLS = ("time80", "user", "synthetic", "time70", "time90")
STANDARD = "time80"


@dataclass
class Protocol:
    """A protocol's samples: ``frame`` (the vocabularies), ``train``, ``test``, and where
    the truth is known the best achievable test AUC."""

    name: str
    description: str
    frame: pd.DataFrame
    train: SampleSet
    test: SampleSet
    best_auc: float | None = None

    def vocab(self, column: str) -> np.ndarray:
        """Sorted positive ids of a frame column (as the bank builds its vocabulary)."""
        ids = self.frame[column].to_numpy(np.int64)
        return np.unique(ids[ids > 0])

    def facts(self) -> dict[str, object]:
        return {"description": self.description, "events": len(self.frame),
                "train": len(self.train), "test": len(self.test), "best_auc": self.best_auc}


def user_split(samples: SampleSet, test_users: float = 0.2, last_frac: float = 0.5,
               seed: int = 0) -> tuple[SampleSet, SampleSet]:
    """(train, test) by user: a seeded ``test_users`` share of the users is held out; train
    is every event of the others, test the last ``last_frac`` of each test user's events."""
    users = np.unique(samples.user_id)
    rng = np.random.default_rng(seed)
    held = rng.permutation(users)[:max(1, round(len(users) * test_users))]
    is_test = np.isin(samples.user_id, held)
    events = pd.Series(samples.user_id)
    position = events.groupby(events).cumcount().to_numpy()  # samples are in time order
    count = events.map(events.value_counts()).to_numpy()
    late = position >= count - np.maximum(1, np.round(count * last_frac)).astype(np.int64)
    return (samples.subset(np.flatnonzero(~is_test)),
            samples.subset(np.flatnonzero(is_test & late)))


@lru_cache(maxsize=4)
def load_protocol(name: str, data: str, max_len: int = 50,
                  synthetic_events: int = 50_000) -> Protocol:
    """The protocol ``name`` on the MovieLens folder ``data`` (any format
    ``load_movielens`` reads; ``synthetic`` ignores it). Cached: workers reuse it."""
    if name == "synthetic":
        from stream.synthetic import generate

        frame = generate(synthetic_events)
        train, test = time_split(build_samples(frame, max_len=max_len, seed=0), 0.8)
        p_true = frame["p_click"].to_numpy(np.float64)[len(train):]
        best = float(roc_auc_score(test.label, p_true))
        return Protocol(name, f"stream.synthetic world, {synthetic_events} events, first 80% "
                        "by time train; best_auc: the true click probability's AUC",
                        frame, train, test, best)
    frame = load_movielens(data)
    samples = build_samples(frame, max_len=max_len, seed=0)
    if name == "user":
        train, test = user_split(samples)
        return Protocol(name, "users split: 20% test users (seeded), each one's last half "
                        "of events test; the other users' events train", frame, train, test)
    if name.startswith("time") and name[4:].isdigit():
        frac = int(name[4:]) / 100
        train, test = time_split(samples, frac)
        return Protocol(name, f"first {name[4:]}% of events by time train, the rest test",
                        frame, train, test)
    raise ValueError(f"unknown protocol {name!r}; one of {PROTOCOLS}")
