"""bench.replay: a short run on a fake ml-latest-small folder (the CSV format), the JSON
schema, the plot, the windows and the incremental policy's frozen bank; the CLI's help."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

import bench.replay as replay
from infra.cli import main as cli_main
from train.update import TopUpdater, Update


def _fake_ml_latest(root: Path, n: int = 4000, seed: int = 0) -> Path:
    """ratings.csv + movies.csv as ml-latest-small has them (half stars, genre lists)."""
    rng = np.random.default_rng(seed)
    genres = ["Action|Adventure", "Comedy", "Drama|Romance", "Children|Animation",
              "(no genres listed)", "Sci-Fi|IMAX"]
    n_items, n_users = 120, 60
    item_genre = rng.integers(len(genres), size=n_items)
    quality = rng.normal(size=n_items)
    taste = rng.normal(size=(n_users, len(genres)))
    users = rng.integers(n_users, size=n)
    items = rng.integers(n_items, size=n)
    score = 3.2 + quality[items] + taste[users, item_genre[items]] + rng.normal(0, 0.5, n)
    folder = root / "ml-latest-small"
    folder.mkdir()
    pd.DataFrame({"userId": users + 1, "movieId": items * 7 + 1,
                  "rating": np.clip(np.round(score * 2) / 2, 0.5, 5.0),
                  "timestamp": 1_500_000_000 + np.sort(rng.integers(10**7, size=n))}
                 ).to_csv(folder / "ratings.csv", index=False)
    pd.DataFrame({"movieId": np.arange(n_items) * 7 + 1,
                  "title": [f"Movie {i} (2001)" for i in range(n_items)],
                  "genres": [genres[g] for g in item_genre]}).to_csv(folder / "movies.csv",
                                                                      index=False)
    return folder


def test_split_windows_are_equal_and_cover_the_later_part() -> None:
    cut, bounds = replay.split_windows(103, 10, 0.5)
    assert cut == 52 and bounds[0][0] == cut and bounds[-1][1] == 103
    assert all(a[1] == b[0] for a, b in pairwise(bounds))
    assert {hi - lo for lo, hi in bounds} <= {5, 6}
    with pytest.raises(ValueError):
        replay.split_windows(20, 11, 0.5)


def test_short_replay_on_the_ml_latest_format(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    digests: list[str] = []
    moved: list[bool] = []

    class Watched(TopUpdater):
        """The trainer's updater, its live bank hashed after every update."""

        def adopt(self, update: Update, live: Any = None) -> None:
            assert update.candidate.bank is self.live.bank  # trained on the live bank
            super().adopt(update, live)

        def propose(self, samples: Any) -> Update:
            update = super().propose(samples)
            digests.append(replay.bank_digest(self.live.bank))
            live, cand = self.live.top.state_dict(), update.candidate.top.state_dict()
            moved.append(any(not torch.equal(v, cand[k]) for k, v in live.items()
                             if v.dtype.is_floating_point))
            return update

    monkeypatch.setattr(replay, "TopUpdater", Watched)
    data = _fake_ml_latest(tmp_path)
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    windows = 4
    assert replay.main(["--data", str(data), "--json", str(out), "--plot", str(png),
                        "--windows", str(windows), "--epochs", "1", "--dim", "8",
                        "--buffer-samples", "1000", "--anchor-samples", "500"]) == 0
    result = json.loads(out.read_text())

    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    bounds = [(w["start"], w["end"]) for w in result["windows"]]
    assert len(bounds) == windows and bounds[0][0] == result["initial_train_samples"] == 2000
    assert all(a[1] == b[0] for a, b in pairwise(bounds))
    for policy in replay.POLICIES:
        found = result["policies"][policy]
        for metric in ("auc", "gauc", "logloss"):
            assert len(found[metric]) == windows  # one figure per window, the same windows
            assert found["mean"][metric] is not None
        assert found["seconds"] >= 0 and found["cpu_seconds"] >= 0
    pol = result["policies"]
    assert list(pol) == list(replay.POLICIES)  # no diagnostic policy unless asked
    # window 0 is scored before any update: the three policies are the same model there
    assert pol["static"]["auc"][0] == pol["incremental"]["auc"][0] == pol["full"]["auc"][0]
    assert len(pol["incremental"]["update_seconds"]) == windows - 1
    assert len(pol["full"]["update_seconds"]) == windows - 1
    inc = pol["incremental"]
    assert inc["promotions"] + inc["rejections"] == windows - 1
    assert sum(inc["rejection_reasons"].values()) == inc["rejections"]

    # the bank of the incremental policy is bitwise the one the initial model trained
    assert len(digests) == windows - 1 and set(digests) == {inc["bank_sha256"]}
    assert inc["bank_unchanged"] is True
    # ... while every candidate's top network moved
    assert moved == [True] * (windows - 1)

    for key in ("gain_recovered", "compute_ratio", "compute_ratio_cpu",
                "auc_gap_full_minus_static"):
        assert key in result
    assert result["targets"]["gain_recovered_min"] == 0.7
    assert result["targets"]["compute_ratio_max"] == 0.2
    assert set(result["targets"]["met"]) == {"gain_recovered", "compute_ratio", "all"}
    assert result["protocol"]["recipe"]["epochs"] == 1
    assert result["protocol"]["incremental"]["buffer_samples"] == 1000
    assert result["machine"]["cpu_count"]
    assert set(result["machine"]["load_average_1_5_15_min"]) == {"start", "end"}


def test_top_bound_adds_the_diagnostic_policy(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert replay.main(["--data", str(_fake_ml_latest(tmp_path, n=2000)), "--json", str(out),
                        "--windows", "2", "--epochs", "1", "--dim", "8", "--top-bound"]) == 0
    pol = json.loads(out.read_text())["policies"]
    assert list(pol) == [*replay.POLICIES, "top_refit"]
    assert len(pol["top_refit"]["auc"]) == 2 and len(pol["top_refit"]["update_seconds"]) == 1
    assert pol["top_refit"]["auc"][0] == pol["static"]["auc"][0]


def test_cli_help_lists_the_benchmark_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli_main(["bench", "replay", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for option in ("--data", "--json", "--plot", "--windows", "--incremental-lr", "--arch"):
        assert option in text
