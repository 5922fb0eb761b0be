"""bench.quality: the paired interval, the targets, the user split, and a short tuned run on
a tiny synthetic world (seconds)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bench.quality import main
from bench.quality_protocols import user_split
from bench.quality_report import overall, paired_diff, targets
from models.data.samples import build_samples
from tests.models.conftest import planted_frame


def test_paired_diff_is_the_t_interval_of_the_per_seed_differences() -> None:
    ours, theirs = [0.70, 0.72, 0.71, 0.73, 0.69], [0.69, 0.70, 0.70, 0.70, 0.69]
    mean, (low, high) = paired_diff(ours, theirs)
    d = np.subtract(ours, theirs)
    half = 2.7764451 * d.std(ddof=1) / math.sqrt(5)  # t(0.975, 4 df)
    assert mean == pytest.approx(d.mean())
    assert (low, high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert math.isnan(paired_diff([0.7], [0.6])[1][0])


def _row(model: str, auc: float, diff: float, ci: list[float]) -> dict[str, object]:
    return {"model": model, "auc_mean": auc, "diff_mean": diff, "diff_ci95": ci,
            "logloss_mean": 0.60, "peer_logloss_mean": 0.61, "calibration_mean": 1.02,
            "peer_calibration_mean": 0.9}


def test_targets_on_a_protocol_and_across_protocols() -> None:
    rows = [_row("base", 0.68, 0.012, [0.005, 0.02]), _row("din", 0.69, 0.004, [-0.001, 0.009]),
            _row("dien", 0.70, -0.01, [-0.02, -0.001])]
    out = targets(rows, standard=True)
    assert out["base_beats_peer_by_0.01"] and not out["din_beats_peer_by_0.01"]
    assert out["din_level_with_peer"] and not out["dien_level_with_peer"]
    assert out["din_ahead_of_peer"] and not out["dien_ahead_of_peer"]
    assert out["din_logloss_le_peer"] and out["din_calibration_le_peer"]
    assert out["dien_gt_din_gt_base"]
    assert "din_beats_peer_by_0.01" not in targets(rows, standard=False)
    both = overall({"a": {"targets": out}, "b": {"targets": targets(rows, False)}})
    assert both == {"din_level_on_every_protocol": True, "din_ahead_on_most_protocols": True,
                    "dien_level_on_every_protocol": False,
                    "dien_ahead_on_most_protocols": False}


def test_user_split_holds_out_whole_users_and_tests_their_last_events() -> None:
    samples = build_samples(planted_frame(n_users=50, events_per_user=10), max_len=5)
    train, test = user_split(samples, test_users=0.2, last_frac=0.5)
    assert not set(train.user_id) & set(test.user_id)
    assert len(set(test.user_id)) == 10 and len(test) == 50  # 5 last events of each
    for u in set(test.user_id):
        assert test.ts[test.user_id == u].min() > samples.ts[samples.user_id == u].min()


def test_short_tuned_run_writes_the_json_schema(tmp_path: Path) -> None:
    path = tmp_path / "q.json"
    assert main(["--protocols", "synthetic", "--synthetic-events", "2000", "--models", "base",
                 "--seeds", "0,1", "--trials", "2", "--max-epochs", "2", "--no-peer",
                 "--threads", "1", "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    proto = result["protocols"]["synthetic"]
    (row,) = proto["models"]
    assert 0.5 < proto["best_auc"] <= 1.0
    assert row["gap_to_best"] == pytest.approx(proto["best_auc"] - row["auc_mean"])
    assert len(row["auc_runs"]) == 2 and row["auc_sd"] >= 0
    assert {"lr", "bias_lr", "epochs"} <= row["settings"].keys()
    assert len(row["tune"]["trials"]) == 2
    assert row["peer_auc_mean"] is None and row["diff_ci95"] is None
    assert result["procedure"]["tuned"] and result["procedure"]["trials"] == 2
    assert result["machine"]["cpu_count"]


def test_no_tune_trains_the_defaults_for_the_given_epochs(tmp_path: Path) -> None:
    path = tmp_path / "q.json"
    assert main(["--protocols", "synthetic", "--synthetic-events", "2000", "--models", "din",
                 "--seeds", "0", "--no-tune", "--epochs", "1", "--no-peer", "--threads", "1",
                 "--json", str(path)]) == 0
    (row,) = json.loads(path.read_text())["protocols"]["synthetic"]["models"]
    assert row["settings"] == {"lr": 1e-3, "bias_lr": 0.3, "aux_weight": 10.0,
                               "input_var_floor": 0.01, "epochs": 1}
    assert row["tune"] == {"val_auc": None}
