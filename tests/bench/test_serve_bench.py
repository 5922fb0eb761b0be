"""bench.serve: the model-only path's JSON (the one a GPU run writes), the FastAPI app on a
real Feast store and registry answering the load generator, and (integration: a local Ray,
~1-2 min) the whole run in miniature with its ratios and its reload block."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.serve import MODELS, gpu_target, main, make_requests
from bench.serve_http import bodies, build_world, fastapi_app, load

TINY = ["--warmup-s", "0.2", "--inprocess-s", "0.5", "--batched-s", "0.2",
        "--concurrency", "1,2", "--batch-sizes", "1,2"]


def test_model_only_writes_every_cell(tmp_path: Path) -> None:
    out = tmp_path / "serve.json"
    assert main(["--model-only", "--json", str(out), *TINY]) == 0
    result = json.loads(out.read_text())
    for arch in MODELS:
        for c in ("1", "2"):
            cell = result[arch]["inprocess"][c]
            assert cell["p50_ms"] > 0 and cell["p99_ms"] >= cell["p50_ms"] and cell["rps"] > 0
        for b in ("1", "2"):
            row = result[arch]["batched"][b]
            assert row["p99_request_bound_ms"] == pytest.approx(2 * row["call_p99_ms"], abs=0.01)
            assert row["calls"] >= 5
    assert result["settings"]["weights"].startswith("random")
    assert "judged on an NVIDIA GPU only" in result["targets"]["dien_gpu"]
    assert result["machine"]["device"] == "cpu"


def test_the_gpu_side_imports_torch_numpy_and_models_only() -> None:
    code = ("import sys; from bench.serve import batched, make_requests, random_model; "
            "batched(random_model('dien'), make_requests(4, 2), [2], 0.0, 'cpu', min_calls=1); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'ray', 'feast', 'kafka', 'pandas', 'fastapi', 'features', 'serve', 'stream'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_gpu_target_takes_the_fastest_batch_within_the_p99() -> None:
    rows = {"8": {"p99_request_bound_ms": 1.0, "rps": 4000.0},
            "32": {"p99_request_bound_ms": 2.9, "rps": 9000.0},
            "64": {"p99_request_bound_ms": 3.5, "rps": 15000.0}}
    judged = gpu_target(rows)
    assert (judged["batch_size"], judged["rps"], judged["met"]) == (32, 9000.0, True)
    assert gpu_target({"64": rows["64"]})["met"] is False


def test_the_fastapi_app_serves_the_features_written(tmp_path: Path) -> None:
    requests = make_requests(8, users=4)
    args = argparse.Namespace(models=["din"], events=2000, dim=8)
    world = build_world(tmp_path, args, requests)  # checks one read against what it wrote
    with fastapi_app(world, "din", 1, tmp_path / "uvicorn.log") as base:
        cell, seen = load(f"{base}/rank", bodies(requests), 1, 0.2, 1.0, track=True)
    assert cell["requests"] > 0 and "failed" not in cell
    assert {v for _, v in seen} == {world.versions["din"][0]}


@pytest.mark.integration
def test_the_whole_run_in_miniature(tmp_path: Path) -> None:
    out = tmp_path / "serve.json"
    assert main(["--json", str(out), "--models", "din", "--events", "2000", "--dim", "8",
                 "--workers", "1", "--duration", "1", "--reload-s", "3",
                 "--reload-concurrency", "2", *TINY]) == 0
    result = json.loads(out.read_text())
    row = result["din"]
    for system in ("inprocess", "fastapi", "recstream"):
        assert set(row[system]) == {"1", "2"}, system
        assert row[system]["2"]["rps"] > 0
    assert row["p50_ratio_c1"] > 0 and row["rps_ratio_c2"] > 0
    assert set(row["recstream_stages"]) == {"1", "2"}
    assert row["reload"]["reloads"] >= 2
    assert row["reload"]["reload_failed_requests"] == 0
    assert result["targets"]["din_reload_failed_requests_eq_0"]["met"] is True
