"""serve.deploy's refusals that need no cluster."""

from pathlib import Path

import pytest

from features.store import FeastConfig
from serve.config import ServeSettings
from serve.deploy import DeployError, deploy


def test_a_redis_password_in_the_connection_string_is_refused(tmp_path: Path) -> None:
    """Ray keeps a deployment's arguments in plain: the password must come from a file."""
    s = ServeSettings(feast=FeastConfig(online_store="redis",
                                        redis_connection_string="10.0.0.5:6379,password=pw"),
                      registry_root=str(tmp_path / "registry"), ray_auth_token_path=None)
    with pytest.raises(DeployError, match="SERVE_FEAST__REDIS_PASSWORD_FILE") as raised:
        deploy(s)
    assert "pw" not in str(raised.value).replace("password", "")
