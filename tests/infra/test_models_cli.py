"""`recstream models list|show|promote|rollback|history|gc`, JSON for scripts and tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from infra import models_cli
from infra.cli import main
from models.registry import Registry
from models.train import build_model

VOCAB = {"item": np.arange(1, 30), "cat": np.arange(1, 4)}


@pytest.fixture
def registry(tmp_path: Path) -> tuple[str, list[str]]:
    """A registry with three ``din`` versions (the first two promoted) and one ``base``."""
    torch.manual_seed(0)
    reg = Registry(tmp_path / "registry")
    vids: list[str] = []
    for i, arch in enumerate(["din", "din", "din", "base"]):
        model = build_model(arch, VOCAB, dim=4)
        vids.append(reg.publish(model, arch, parent=vids[-1] if i in (1, 2) else None,
                                sample_range={"window": [i, i + 1]},
                                metrics={"auc": 0.6 + i / 100}))
    reg.promote("din", vids[0])
    reg.promote("din", vids[1], reason="auc +0.01")
    return str(tmp_path / "registry"), vids


def _json(capsys: pytest.CaptureFixture[str], argv: list[str], code: int = 0) -> object:
    assert main(argv) == code
    return json.loads(capsys.readouterr().out)


def test_list_gives_versions_oldest_first_with_their_pointers(
        registry: tuple[str, list[str]], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    root, vids = registry
    monkeypatch.setattr(models_cli, "console", Console(width=160))  # a row a line
    out = _json(capsys, ["models", "list", "--root", root, "--json"])
    assert isinstance(out, dict)
    assert [v["version"] for v in out["versions"]] == vids
    assert out["versions"][1]["pointers"] == ["live"] and out["versions"][1]["parent"] == vids[0]
    assert out["versions"][1]["metrics"] == {"auc": 0.61}
    assert out["pointers"] == {"din": {"live": vids[1]}}
    only = _json(capsys, ["models", "list", "--root", root, "--family", "base", "--json"])
    assert isinstance(only, dict) and [v["version"] for v in only["versions"]] == vids[3:]
    assert main(["models", "list", "--root", root]) == 0  # the table
    table = capsys.readouterr().out
    assert all(v in table for v in vids) and "live" in table and "auc=0.61" in table


def test_show_gives_the_manifest(registry: tuple[str, list[str]],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    root, vids = registry
    out = _json(capsys, ["models", "show", vids[1], "--root", root, "--json"])
    assert isinstance(out, dict) and out["version"] == vids[1] and out["pointers"] == ["live"]
    assert out["parent"] == vids[0] and set(out["files"]) == {"top.safetensors"}
    assert main(["models", "show", vids[2], "--root", root]) == 0
    assert vids[2] in capsys.readouterr().out


def test_promote_then_rollback_one_promotion_at_a_time(
        registry: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    root, vids = registry
    assert _json(capsys, ["models", "promote", "din", vids[2], "--root", root, "--json",
                          "--reason", "by hand"]) == {
        "family": "din", "pointer": "live", "version": vids[2], "previous": vids[1]}
    back = _json(capsys, ["models", "rollback", "din", "--root", root, "--json"])
    assert isinstance(back, dict) and (back["version"], back["previous"]) == (vids[1], vids[2])
    assert main(["models", "rollback", "din", "--root", root]) == 0
    assert f"{vids[1]} -> {vids[0]}" in capsys.readouterr().out
    error = _json(capsys, ["models", "rollback", "din", "--root", root, "--json"], code=1)
    assert isinstance(error, dict) and "no earlier version" in error["error"]
    history = _json(capsys, ["models", "history", "din", "--root", root, "--json"])
    assert isinstance(history, list)
    assert [(e["action"], e["version"]) for e in history] == [
        ("promote", vids[0]), ("promote", vids[1]), ("promote", vids[2]),
        ("rollback", vids[1]), ("rollback", vids[0])]
    assert history[2]["reason"] == "by hand"
    assert Registry(root).pointer("din") == vids[0]


def test_candidate_pointers_and_refusals(registry: tuple[str, list[str]],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    root, vids = registry
    assert main(["models", "promote", "din", vids[2], "--pointer", "candidate",
                 "--root", root]) == 0
    assert Registry(root).pointers("din") == {"live": vids[1], "candidate": vids[2]}
    capsys.readouterr()
    assert main(["models", "promote", "din", vids[3], "--root", root]) == 1  # a base version
    assert main(["models", "show", "../../etc", "--root", root]) == 1
    assert "invalid version" in capsys.readouterr().err
    error = _json(capsys, ["models", "show", "din-nope", "--root", root, "--json"], code=1)
    assert isinstance(error, dict) and "no complete version" in error["error"]


def test_gc_removes_orphans_only(registry: tuple[str, list[str]],
                                capsys: pytest.CaptureFixture[str]) -> None:
    root, vids = registry
    (Path(root) / "versions" / "din-orphan").mkdir()
    (Path(root) / "versions" / "din-orphan" / "top.safetensors").write_bytes(b"half")
    assert _json(capsys, ["models", "gc", "--root", root, "--min-age", "600", "--json"]) == {
        "removed": []}
    assert _json(capsys, ["models", "gc", "--root", root, "--json"]) == {
        "removed": ["versions/din-orphan"]}
    assert main(["models", "gc", "--root", root]) == 0
    assert "0 orphans removed" in capsys.readouterr().out
    assert [m["version"] for m in Registry(root).versions()] == vids


def test_the_root_comes_from_the_environment(registry: tuple[str, list[str]],
                                             capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = registry
    monkeypatch.setenv("TRAIN_REGISTRY_ROOT", f"file://{root}")
    out = _json(capsys, ["models", "list", "--json"])
    assert isinstance(out, dict) and len(out["versions"]) == 4
    assert out["root"] == f"file://{root}"
