"""bench.quality: the target checks, the seed aggregation and a short real run on ml-100k."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.quality import _mean_rows, main, targets


def _row(model: str, auc: float, peer_auc: float | None, sps: float, peer_sps: float | None
         ) -> dict[str, object]:
    return {"model": model, "auc": auc, "peer_auc": peer_auc, "train_samples_per_s": sps,
            "peer_train_samples_per_s": peer_sps}


def test_targets_are_checked_on_the_measured_rows() -> None:
    rows = [_row("base", 0.70, 0.68, 100.0, 90.0), _row("din", 0.71, 0.705, 600.0, 100.0),
            _row("dien", 0.72, 0.70, 400.0, 100.0)]
    out = targets(rows)
    assert out["base_auc_beats_peer_by_0.01"] is True
    assert out["din_auc_beats_peer_by_0.01"] is False
    assert out["din_speed_at_least_5x_peer"] is True
    assert out["dien_speed_at_least_5x_peer"] is False
    assert out["dien_gt_din_gt_base_auc"] is True
    assert "base_speed_at_least_5x_peer" not in out


def test_targets_without_the_peer_are_unknown_not_met() -> None:
    out = targets([_row("din", 0.7, None, 100.0, None)])
    assert out == {}


def test_mean_rows_averages_numbers_and_keeps_labels() -> None:
    runs = [{"auc": 0.6, "train_seconds": 2.0, "peer_model": "DIN"},
            {"auc": 0.8, "train_seconds": 4.0, "peer_model": "DIN"}]
    out = _mean_rows(runs)
    assert out["auc"] == pytest.approx(0.7)
    assert out["auc_std"] == pytest.approx(0.1414, abs=1e-3)
    assert out["train_seconds"] == pytest.approx(3.0)
    assert out["peer_model"] == "DIN"
    assert "train_seconds_std" not in out
    assert out["train_seconds_runs"] == [2.0, 4.0]


def test_short_run_writes_the_json_schema(ml100k_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "q.json"
    assert main(["--data", str(ml100k_dir), "--json", str(path), "--models", "base",
                 "--epochs", "1", "--seeds", "0", "--no-peer"]) == 0
    result = json.loads(path.read_text())
    (row,) = result["models"]
    assert row["model"] == "base"
    assert 0.55 < row["auc"] < 1.0  # a trained model ranks better than chance
    for key in ("gauc", "logloss", "calibration", "train_seconds", "train_samples_per_s",
                "peer_auc", "peer_gauc", "peer_logloss", "peer_train_samples_per_s"):
        assert key in row
    assert row["peer_auc"] is None
    assert result["protocol"]["seeds"] == [0]
    assert result["protocol"]["dien_aux_weight"] == 10.0  # our DIEN recipe, recorded
    assert result["machine"]["cpu_count"]
