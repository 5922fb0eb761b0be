"""``recstream ab set / show / reset``: the experiment override the serving ingress follows
(its effect on a running app: tests/serve/test_app.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from infra.cli import main
from serve.experiment import ExperimentStore


@pytest.fixture
def serve_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cfg = {"variants": [{"name": "a", "family": "din"}, {"name": "b", "family": "din",
                                                          "pointer": "candidate"}]}
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("SERVE_CONFIG_PATH", str(tmp_path / "serve.yaml"))
    monkeypatch.setenv("SERVE_EXPERIMENT_PATH", str(tmp_path / "experiment.json"))
    return tmp_path / "experiment.json"


def test_set_show_and_reset_record_every_change(serve_env: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ab", "set", "a=0.9,b=0.1", "--reason", "ramp"]) == 0
    store = ExperimentStore(serve_env)
    assert store.read() == {"weights": {"a": 0.9, "b": 0.1}}
    assert main(["ab", "set", "--shadow", "b", "--salt", "exp-2"]) == 0
    assert store.read() == {"weights": {"a": 0.9, "b": 0.1}, "shadow": "b", "salt": "exp-2"}
    assert main(["ab", "set", "c=1"]) == 1 and main(["ab", "set", "--shadow", "z"]) == 1
    assert main(["ab", "reset", "--reason", "done"]) == 0
    assert store.read() is None
    history = store.history()
    assert [h["reason"] for h in history] == ["ramp", "", "done"]
    assert history[1]["before"] == {"weights": {"a": 0.9, "b": 0.1}}
    capsys.readouterr()
    assert main(["ab", "show"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["override"] is None and len(shown["changes"]) == 3
    assert shown["config"]["weights"] == {"a": 1.0, "b": 1.0}
