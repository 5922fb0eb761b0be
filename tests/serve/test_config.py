"""The typed serving config: the shipped YAML parses; bad configs fail with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from serve.config import AppConfig, ServeSettings, load_app_config


def _write(tmp_path: Path, variants: list[dict]) -> Path:
    import yaml

    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump({"variants": variants}))
    return path

def test_shipped_config_parses_and_resolves_model_dirs(tmp_path: Path) -> None:
    cfg = load_app_config(ServeSettings().config_path, base_dir=tmp_path)
    assert cfg.variants and all(v.model_dir is None or v.model_dir.is_absolute()
                                for v in cfg.variants)
    assert all(v.batch.max_batch_size >= 1 for v in cfg.variants)
    assert cfg.variants[0].source() == {"family": "din", "pointer": "live", "version": None}
    rel = load_app_config(_write(tmp_path, [{"name": "a", "model_dir": "m"}]), tmp_path)
    assert rel.variants[0].model_dir == (tmp_path / "m").resolve()


@pytest.mark.parametrize("variant", [
    {"name": "a"},  # no model at all
    {"name": "a", "model_dir": "m", "family": "din"},  # two
    {"name": "a", "model_dir": "m", "version": "din-1"},
])
def test_a_variant_names_exactly_one_model(variant: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="model_dir, or family"):
        load_app_config(_write(tmp_path, [variant]), tmp_path)


@pytest.mark.parametrize(
    "variants",
    [
        [],
        [{"name": "a", "model_dir": "m"}, {"name": "a", "model_dir": "m"}],
        [{"name": "a", "model_dir": "m", "weight": 0}],
        [{"name": "a b", "model_dir": "m"}],
        [{"name": "a", "model_dir": "m", "batch": {"max_batch_size": 0}}],
    ],
)
def test_bad_configs_are_refused(variants: list[dict]) -> None:
    with pytest.raises(ValidationError):
        AppConfig.model_validate({"variants": variants})


def test_settings_come_from_serve_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVE_HTTP_PORT", "9999")
    monkeypatch.setenv("SERVE_FEAST__ONLINE_STORE", "redis")
    s = ServeSettings()
    assert s.http_port == 9999 and s.feast.online_store == "redis"
