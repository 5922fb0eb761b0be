"""Ranking metrics: AUC, GAUC, logloss and calibration (scikit-learn for the AUC and logloss,
scipy's ranks for the GAUC: every user's AUC in one pass)."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import log_loss, roc_auc_score


def gauc(user_ids: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> float:
    """Per-user AUC weighted by the user's impressions; users with one class are skipped.

    NaN when no user has both classes. Every user at once by the rank-sum (Mann-Whitney)
    form of the AUC: ranks of the predictions within each user (ties averaged, as
    ``roc_auc_score`` counts them), ``AUC_u = (sum of the positives' ranks - P(P+1)/2) / (P N)``.
    """
    if not len(labels):
        return float("nan")
    _, user = np.unique(user_ids, return_inverse=True)
    # one key per (user, prediction), ordered by user then prediction: its average rank
    # among all keys, less the samples of the users before, is the rank within the user
    key = user.astype(np.int64) * (len(probs) + 1) + rankdata(probs, method="dense")
    sizes = np.bincount(user)
    ranks = rankdata(key) - (np.cumsum(sizes) - sizes)[user]
    y = labels.astype(np.float64)
    pos = np.bincount(user, weights=y)
    neg = sizes - pos
    both = (pos > 0) & (neg > 0)
    if not both.any():
        return float("nan")
    rank_sum = np.bincount(user, weights=ranks * y)
    auc = (rank_sum[both] - pos[both] * (pos[both] + 1) / 2) / (pos[both] * neg[both])
    return float(np.average(auc, weights=sizes[both]))


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
