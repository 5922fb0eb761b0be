"""Ranking metrics: AUC, GAUC, logloss and calibration (scikit-learn for the AUCs/logloss)."""

from __future__ import annotations

import itertools

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score


def gauc(user_ids: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> float:
    """Per-user AUC weighted by the user's impressions; users with one class are skipped.

    NaN when no user has both classes.
    """
    order = np.argsort(user_ids, kind="stable")
    u, y, p = user_ids[order], labels[order], probs[order]
    bounds = np.flatnonzero(np.r_[True, u[1:] != u[:-1], True])
    total, weight = 0.0, 0
    for lo, hi in itertools.pairwise(bounds):
        yu = y[lo:hi]
        if yu.min() == yu.max():
            continue
        total += float(roc_auc_score(yu, p[lo:hi])) * int(hi - lo)
        weight += int(hi - lo)
    return total / weight if weight else float("nan")


def ranking_metrics(user_ids: np.ndarray, labels: np.ndarray,
                    probs: np.ndarray) -> dict[str, float]:
    """``auc, gauc, logloss, calibration`` (mean predicted CTR / observed CTR)."""
    two_classes = labels.min() != labels.max() if len(labels) else False
    observed = float(labels.mean()) if len(labels) else float("nan")
    return {
        "auc": float(roc_auc_score(labels, probs)) if two_classes else float("nan"),
        "gauc": gauc(user_ids, labels, probs),
        "logloss": float(log_loss(labels, probs, labels=[0, 1])) if len(labels) else float("nan"),
        "calibration": float(probs.mean()) / observed if observed > 0 else float("nan"),
    }
