"""The quality benchmark's figures: per model and protocol, ours beside the peer, paired.

``summarise`` turns the per-seed runs of one model on one protocol into the JSON row
(``auc_mean``, ``auc_sd``, ``peer_auc_mean``, ``diff_ci95`` ...); ``targets`` checks issue 30's
targets on a protocol's rows, ``overall`` across protocols.
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np
from scipy import stats

METRICS = ("auc", "gauc", "logloss", "calibration")


def paired_diff(ours: list[float], theirs: list[float], level: float = 0.95
                ) -> tuple[float, list[float]]:
    """Mean of the per-seed differences ``ours - theirs`` and its t interval (NaNs when
    fewer than two seeds)."""
    d = np.asarray(ours, np.float64) - np.asarray(theirs, np.float64)
    mean = float(d.mean()) if len(d) else float("nan")
    if len(d) < 2:
        return mean, [float("nan"), float("nan")]
    sem = float(stats.sem(d))
    if sem == 0.0:
        return mean, [mean, mean]
    low, high = stats.t.interval(level, len(d) - 1, loc=mean, scale=sem)
    return mean, [float(low), float(high)]


def _side(runs: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in METRICS:
        values = [r[m] for r in runs]
        out[f"{prefix}{m}_mean"] = statistics.fmean(values)
        out[f"{prefix}{m}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
    out[f"{prefix}auc_runs"] = [r["auc"] for r in runs]
    speeds = [r["train_samples_per_s"] for r in runs]
    out[f"{prefix}train_samples_per_s"] = statistics.median(speeds)  # robust to a neighbour
    return out


def summarise(arch: str, ours: list[dict[str, Any]], theirs: list[dict[str, Any]] | None,
              tuned: dict[str, Any], peer_tuned: dict[str, Any] | None,
              best_auc: float | None) -> dict[str, Any]:
    """The row of one model on one protocol (``theirs``/``peer_tuned`` None: no peer)."""
    row: dict[str, Any] = {"model": arch, **_side(ours, ""), "settings": tuned["params"],
                           "tune": {k: v for k, v in tuned.items() if k != "params"}}
    if best_auc is not None:
        row["gap_to_best"] = best_auc - row["auc_mean"]
    if not theirs or peer_tuned is None:
        return row | {"peer_auc_mean": None, "diff_mean": None, "diff_ci95": None}
    row.update(_side(theirs, "peer_"))
    row["peer_settings"] = peer_tuned["params"]
    row["peer_tune"] = {k: v for k, v in peer_tuned.items() if k != "params"}
    row["diff_mean"], row["diff_ci95"] = paired_diff(row["auc_runs"], row["peer_auc_runs"])
    if best_auc is not None:
        row["peer_gap_to_best"] = best_auc - row["peer_auc_mean"]
    return row


def targets(rows: list[dict[str, Any]], standard: bool) -> dict[str, bool]:
    """Issue 30's targets on one protocol's rows (only those the rows can answer)."""
    out: dict[str, bool] = {}
    by = {r["model"]: r for r in rows}
    for arch, r in by.items():
        if r.get("diff_ci95") is None:
            continue
        out[f"{arch}_level_with_peer"] = bool(r["diff_ci95"][1] > 0)
        out[f"{arch}_ahead_of_peer"] = bool(r["diff_mean"] > 0)
        if standard:
            out[f"{arch}_beats_peer_by_0.01"] = bool(r["diff_mean"] >= 0.01)
        out[f"{arch}_logloss_le_peer"] = bool(r["logloss_mean"] <= r["peer_logloss_mean"])
        out[f"{arch}_calibration_le_peer"] = bool(
            abs(r["calibration_mean"] - 1) <= abs(r["peer_calibration_mean"] - 1))
    if {"base", "din", "dien"} <= by.keys():
        auc = {a: by[a]["auc_mean"] for a in ("base", "din", "dien")}
        out["dien_gt_din_gt_base"] = bool(auc["dien"] > auc["din"] > auc["base"])
    return out


def overall(protocols: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Across protocols: DIN and DIEN level with the peer on every one, ahead on most."""
    out: dict[str, Any] = {}
    for arch in ("din", "dien"):
        level = [p["targets"].get(f"{arch}_level_with_peer") for p in protocols.values()]
        ahead = [p["targets"].get(f"{arch}_ahead_of_peer") for p in protocols.values()]
        if None in level or not level:
            continue
        out[f"{arch}_level_on_every_protocol"] = all(level)
        out[f"{arch}_ahead_on_most_protocols"] = sum(ahead) > len(ahead) / 2
    return out
