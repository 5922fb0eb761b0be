"""The promotion guard and the anchor (train/guard.py, train/update.py), in process: a candidate
that learned flipped labels is rejected, and the anchor's looser tolerances still catch it
where the new slice is partly poisoned; a sane candidate passes; a rejected update's held-out
slice renews the anchor unless its labels were found broken."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from models.data.samples import SampleSet, build_samples
from models.ranker import Ranker
from models.train import TrainConfig, build_model, fit, fit_incremental
from train.guard import Verdict, judge
from train.settings import GuardSettings, TrainSettings
from train.update import TopUpdater, Update, on_same_bank

from .conftest import MAX_LEN


def _flipped(s: SampleSet, share: float = 1.0) -> SampleSet:
    out = s.subset(slice(None))
    flip = np.random.default_rng(0).random(len(s)) < share
    out.label = np.where(flip, 1 - s.label, s.label)
    return out


@pytest.fixture(scope="module")
def parts(world: pd.DataFrame) -> tuple[Ranker, SampleSet, SampleSet, SampleSet]:
    """A live DIN trained on the first 3,000 events; a training part, a new slice and an
    anchor of later events."""
    samples = build_samples(world, max_len=MAX_LEN)
    torch.manual_seed(0)  # the initial weights: the same whatever ran before
    live = build_model("din", world, dim=8)
    fit(live, samples.subset(slice(0, 3000)), TrainConfig(epochs=4, batch_size=256))
    return (live, samples.subset(slice(3000, 6000)), samples.subset(slice(6000, 7000)),
            samples.subset(slice(7000, 9000)))


def _candidate(live: Ranker, train: SampleSet) -> Ranker:
    model = on_same_bank(live)
    fit_incremental(model, train, TrainConfig(epochs=2, batch_size=256, lr=3e-3))
    return model


def test_a_sane_candidate_passes_and_a_flipped_one_is_rejected(parts: tuple) -> None:
    live, train, new, anchor = parts
    tol = GuardSettings()
    assert judge(_candidate(live, train), live, new, anchor, tol).promote
    verdict = judge(_candidate(live, _flipped(train)), live, new, anchor, tol)
    assert not verdict.promote and verdict.reason in ("auc", "logloss", "calibration")


def test_the_anchor_catches_a_broken_candidate_past_its_looser_tolerances(
        parts: tuple) -> None:
    live, train, new, anchor = parts
    tol = GuardSettings()
    poisoned = _flipped(new, share=0.45)  # live still above chance there: no label_shift
    verdict = judge(_candidate(live, _flipped(train)), live, poisoned, anchor, tol)
    assert not verdict.promote and verdict.reason != "label_shift"
    auc, auc_se = verdict.differences["anchor_auc"]
    logloss, logloss_se = verdict.differences["anchor_logloss"]
    assert -auc > tol.anchor_auc_tol + tol.noise_z * auc_se  # each anchor check alone
    assert logloss > tol.anchor_logloss_tol + tol.noise_z * logloss_se  # would reject it


def test_a_rejected_slice_renews_the_anchor_unless_its_labels_broke(parts: tuple) -> None:
    live, train, new, _ = parts
    updater = TopUpdater(live, TrainSettings(anchor_samples=1500))
    first, second = new.subset(slice(0, 1000)), train.subset(slice(0, 1000))
    updater.reject(Update(live, Verdict(False, "anchor_logloss"), holdout=first))
    assert updater.anchor is not None and len(updater.anchor) == 1000
    updater.reject(Update(live, Verdict(False, "label_shift"), holdout=second))
    assert len(updater.anchor) == 1000
    updater.reject(Update(live, Verdict(False, "auc"), holdout=second))
    assert len(updater.anchor) == 1500  # the newest 1,500
    assert np.array_equal(updater.anchor.item_id[-1000:], second.item_id)
