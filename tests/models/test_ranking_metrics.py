"""AUC, GAUC, logloss and calibration."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score

from models.metrics import gauc, ranking_metrics


def test_gauc_weights_users_by_impressions_and_skips_one_class_users() -> None:
    users = np.array([1, 1, 1, 2, 2, 3, 3, 3, 3])
    labels = np.array([1, 0, 0, 1, 1, 0, 1, 1, 0])
    probs = np.array([0.9, 0.2, 0.95, 0.3, 0.4, 0.1, 0.6, 0.2, 0.3])
    a1 = roc_auc_score(labels[:3], probs[:3])
    a3 = roc_auc_score(labels[5:], probs[5:])
    assert math.isclose(gauc(users, labels, probs), (3 * a1 + 4 * a3) / 7)


def test_calibration_is_mean_prediction_over_observed_rate() -> None:
    labels = np.array([1, 0, 0, 0])
    m = ranking_metrics(np.array([1, 1, 2, 2]), labels, np.array([0.5, 0.5, 0.5, 0.5]))
    assert math.isclose(m["calibration"], 2.0) and math.isclose(m["auc"], 0.5)
    assert math.isnan(gauc(np.array([1, 2]), np.array([1, 0]), np.array([0.1, 0.2])))
