"""Typed configuration of the serving app: variants, their traffic weights and batch limits.

Loaded from a YAML file (``infra/serve.yaml`` by default) by :func:`load_app_config`;
``SERVE_*`` env vars (:class:`ServeSettings`) say where that file and the Feast store are.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from features.store import FeastConfig
from stream.kafka import KafkaConfig


class BatchConfig(BaseModel):
    """Dynamic batching limits of a scorer; sent to replicas as ``user_config``."""

    max_batch_size: int = Field(default=32, ge=1)
    # How long a batch waits for company after its first request. Requests that arrive
    # while a batch is scored queue up and form the next batch without waiting, so a short
    # wait costs little batching under load and saves its whole length at low load.
    batch_wait_timeout_s: float = Field(default=0.001, ge=0)


class VariantConfig(BaseModel):
    """One model variant of an A/B test: a registry pointer it follows (``family`` +
    ``pointer``, e.g. ``din`` / ``live``), a pinned registry ``version``, or a checkpoint
    folder ``model_dir`` loaded once."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    model_dir: Path | None = None
    family: str | None = None
    pointer: str = "live"
    version: str | None = None
    weight: float = Field(default=1.0, ge=0)
    num_replicas: int = Field(default=1, ge=1)
    cpus_per_replica: float = Field(default=0.5, ge=0)
    # "auto": one GPU per replica where the cluster has GPUs, else CPU.
    gpus_per_replica: float | str = "auto"
    batch: BatchConfig = Field(default_factory=BatchConfig)
    # Requests a replica takes at once (None: twice max_batch_size, so a batch can fill;
    # Ray Serve's own default of 5 would cap every batch at 5).
    max_ongoing_requests: int | None = Field(default=None, ge=1)
    # torch's intra-op threads in a CPU replica (None: Ray's choice, the replica's CPUs
    # rounded up: 1 for the default 0.5).
    torch_threads: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> VariantConfig:
        if (self.model_dir is None) == (self.family is None and self.version is None):
            raise ValueError(f"variant {self.name}: give model_dir, or family (+ pointer) "
                             "or version of the registry, not both")
        return self

    def source(self) -> dict[str, str | None]:
        """What the scorer loads: ``{"model_dir"}`` or ``{"family", "pointer", "version"}``."""
        if self.model_dir is not None:
            return {"model_dir": str(self.model_dir)}
        return {"family": self.family, "pointer": self.pointer, "version": self.version}


class AppConfig(BaseModel):
    """The whole serving app."""

    name: str = "recstream"
    route_prefix: str = "/"
    max_candidates: int = Field(default=1000, ge=1)
    max_history: int = Field(default=50, ge=1)
    # CPU shares of the light stages (a 2-core node must fit every replica).
    ingress_cpus: float = Field(default=0.25, ge=0)
    reader_cpus: float = Field(default=0.25, ge=0)
    ingress_replicas: int = Field(default=2, ge=1)
    reader_replicas: int = Field(default=2, ge=1)
    # Requests an ingress / feature-reader replica takes at once (Ray Serve's default is 5:
    # 2 ingress replicas would hold 10 requests and queue the rest in the proxy).
    ingress_max_ongoing: int = Field(default=100, ge=1)
    reader_max_ongoing: int = Field(default=32, ge=1)
    request_timeout_s: float = Field(default=10.0, gt=0)  # a 504 past it
    max_body_bytes: int = Field(default=1 << 20, ge=1024)  # a 413 past it
    # The experiment: sticky assignment salt (a new salt reshuffles users) and an optional
    # shadow variant that scores a copy of the traffic (logged, never returned).
    salt: str = "recstream-ab"
    shadow: str | None = None
    variants: list[VariantConfig] = Field(min_length=1)
    # How often the registry's pointers are read (by one watcher, whatever the replicas).
    reload_poll_s: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> AppConfig:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        if sum(v.weight for v in self.variants) <= 0:
            raise ValueError("at least one variant needs a positive weight")
        if self.shadow is not None and self.shadow not in names:
            raise ValueError(f"shadow {self.shadow!r} is not a variant ({names})")
        return self

    def experiment(self) -> dict[str, object]:
        """The ingress' ``user_config``: what can change without a restart."""
        return {"weights": {v.name: v.weight for v in self.variants}, "salt": self.salt,
                "shadow": self.shadow}


class ServeSettings(BaseSettings):
    """Settings of the serving part, from ``SERVE_*`` env vars."""

    model_config = SettingsConfigDict(env_prefix="SERVE_", env_nested_delimiter="__")

    config_path: Path = Path(__file__).resolve().parent.parent / "infra" / "serve.yaml"
    feast: FeastConfig = Field(default_factory=FeastConfig)
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    ray_address: str = "127.0.0.1:6390"
    # The model registry the variants' pointers are read from (a folder or an fsspec URL).
    registry_root: str = ".recstream/registry"
    # `recstream ab set` writes the live experiment here; the ingress follows it.
    experiment_path: Path = Path(".recstream/experiment.json")
    # Every answer goes to the predictions topic of this cluster (False: not logged).
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    log_predictions: bool = True
    # API keys (optional): a file of keys, one a line, and/or SERVE_API_KEYS=k1,k2. Only
    # their SHA-256 digests reach the deployment; a request then needs an x-api-key header.
    api_keys_file: Path | None = None
    api_keys: SecretStr | None = None

    def api_key_digests(self) -> list[str]:
        from serve.http import digest

        keys = self.api_keys.get_secret_value().split(",") if self.api_keys else []
        if self.api_keys_file is not None:
            keys += self.api_keys_file.read_text().splitlines()
        return [digest(k) for k in keys if k.strip()]
    # Token of a cluster with token authentication (the local stack writes this file).
    ray_auth_token_path: Path | None = Path(".recstream/ray_auth_token")


@lru_cache(maxsize=1)
def serve_settings() -> ServeSettings:
    """The process-wide settings, read from the environment once."""
    return ServeSettings()


def load_app_config(path: Path, base_dir: Path | None = None) -> AppConfig:
    """Parse ``path``; relative model_dir entries resolve against ``base_dir`` (default cwd)."""
    cfg = AppConfig.model_validate(yaml.safe_load(path.read_text()))
    base = base_dir or Path.cwd()
    for v in cfg.variants:
        if v.model_dir is not None and not v.model_dir.is_absolute():
            v.model_dir = (base / v.model_dir).resolve()
    return cfg
