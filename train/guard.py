"""The promotion guard: a candidate replaces the live version only if it is not worse.

Run: ``verdict = judge(candidate, live, holdout, anchor, GuardSettings())``;
``verdict.promote`` says whether to move ``live``, ``verdict.reason`` why not.

Both models are scored on the newest held-out slice (samples neither was trained on) and on
the anchor, the slices held out at the previous updates (older data whose labels passed the
guard's checks: a model that learned flipped labels, or forgot everything, fails there even
when the new slice is itself poisoned). A difference counts as worse only past its
tolerance plus ``noise_z`` bootstrap standard errors of the paired difference
(:mod:`train.paired`): on a few hundred samples the AUC moves by a few hundredths from slice
to slice. The checks, in order, each a rejection reason:

* ``nan``: a parameter or a prediction is not finite;
* ``collapsed``: the predictions on the slice barely vary (std below ``min_prediction_std``);
* ``label_shift``: the labels of the new slice broke from what live knew, checked on the
  data (so it holds before any anchor exists): live's calibration there is outside
  [1 / ``max_label_shift``, ``max_label_shift``] (the click rate moved further than a world
  does between two updates), or live ranks it significantly worse than chance (AUC below
  0.5 by more than ``noise_z`` standard errors: flipped labels, a broken producer);
* ``auc`` / ``logloss`` / ``calibration``: worse than live on the held-out slice
  (calibration: |mean predicted / observed - 1|);
* ``anchor_auc`` / ``anchor_logloss`` / ``anchor_calibration``: worse than live on the
  anchor (AUC and logloss with the looser ``anchor_auc_tol`` / ``anchor_logloss_tol``: the
  anchor is an older world, and a candidate that follows what changed since is worse there
  by design; the anchor is for a candidate that broke).

Too few held-out samples (``min_eval_samples``) is ``too_few_samples``: nothing can be judged.
With no live version, a sane candidate is promoted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from models.data.samples import SampleSet
from models.metrics import ranking_metrics
from models.ranker import Ranker
from models.train import predict
from train.paired import paired_differences
from train.settings import GuardSettings


@dataclass
class Verdict:
    """Whether to promote, the reason when not, and the metrics both models had."""

    promote: bool
    reason: str
    candidate: dict[str, float] = field(default_factory=dict)
    live: dict[str, float] = field(default_factory=dict)
    differences: dict[str, list[float]] = field(default_factory=dict)

    def metrics(self) -> dict[str, dict[str, float] | dict[str, list[float]]]:
        return {"candidate": self.candidate, "live": self.live,
                "differences": self.differences}


def _finite(model: Ranker) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.top.parameters())


def _summary(samples: SampleSet, probs: np.ndarray, prefix: str = "") -> dict[str, float]:
    found = ranking_metrics(samples.user_id, samples.label, probs)
    return {f"{prefix}{k}": float(v) for k, v in found.items()}


def _worse(diffs: dict[str, tuple[float, float]], name: str, tol: float, z: float,
           higher_is_better: bool) -> bool:
    """Whether the candidate is worse on ``name`` past ``tol + z * se`` (NaN: no)."""
    diff, se = diffs[name]
    loss = -diff if higher_is_better else diff
    return not math.isnan(loss) and loss > tol + z * se


def _labels_shifted(holdout: SampleSet, live_probs: np.ndarray, live_calibration: float,
                    tol: GuardSettings) -> bool:
    """Whether the slice's labels broke from what live predicts (see the module docstring)."""
    if not 1 / tol.max_label_shift <= live_calibration <= tol.max_label_shift:
        return True
    chance = np.full_like(live_probs, 0.5)
    above, se = paired_differences(holdout.label, live_probs, chance)["auc"]
    return above + tol.noise_z * se < 0


def judge(candidate: Ranker, live: Ranker | None, holdout: SampleSet,
          anchor: SampleSet | None, tol: GuardSettings) -> Verdict:
    """The verdict on ``candidate`` against ``live`` (see the module docstring)."""
    if len(holdout) < tol.min_eval_samples:
        return Verdict(False, "too_few_samples")
    if not _finite(candidate):
        return Verdict(False, "nan")
    probs = predict(candidate, holdout)
    if not np.isfinite(probs).all():
        return Verdict(False, "nan")
    cand = _summary(holdout, probs)
    if float(probs.std()) < tol.min_prediction_std:
        return Verdict(False, "collapsed", cand)
    if live is None:
        return Verdict(True, "no_live_version", cand)
    base_probs = predict(live, holdout)
    base = _summary(holdout, base_probs)
    if _labels_shifted(holdout, base_probs, base["calibration"], tol):
        return Verdict(False, "label_shift", cand, base)
    diffs = paired_differences(holdout.label, probs, base_probs)
    checks = [("auc", _worse(diffs, "auc", tol.auc_tol, tol.noise_z, True)),
              ("logloss", _worse(diffs, "logloss", tol.logloss_tol, tol.noise_z, False)),
              ("calibration", _worse(diffs, "calibration_error", tol.calibration_tol,
                                     tol.noise_z, False))]
    if anchor is not None and len(anchor) >= tol.min_eval_samples:
        a_cand, a_live = predict(candidate, anchor), predict(live, anchor)
        cand.update(_summary(anchor, a_cand, "anchor_"))
        base.update(_summary(anchor, a_live, "anchor_"))
        a_diffs = {f"anchor_{k}": v for k, v in
                   paired_differences(anchor.label, a_cand, a_live).items()}
        diffs.update(a_diffs)
        checks += [
            ("anchor_auc", _worse(a_diffs, "anchor_auc", tol.anchor_auc_tol, tol.noise_z,
                                  True)),
            ("anchor_logloss", _worse(a_diffs, "anchor_logloss", tol.anchor_logloss_tol,
                                      tol.noise_z, False)),
            ("anchor_calibration", _worse(a_diffs, "anchor_calibration_error",
                                          tol.calibration_tol, tol.noise_z, False))]
    found = {k: [float(d), float(se)] for k, (d, se) in diffs.items()}
    for reason, failed in checks:
        if failed:
            return Verdict(False, reason, cand, base, found)
    return Verdict(True, "not_worse", cand, base, found)
