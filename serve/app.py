"""The typed app builder: AppConfig -> a Ray Serve application, one deployment per stage.

Run: ``recstream serve`` (reads ``infra/serve.yaml``, or ``SERVE_CONFIG_PATH``). The graph is
``Ranker`` (HTTP) -> ``FeatureReader`` (Feast) and ``Ranker`` -> ``Scorer`` (one per variant).
"""

from __future__ import annotations

from ray.serve import Application

from features.store import FeastConfig
from serve.config import AppConfig
from serve.deployments import FeatureReader, Ranker
from serve.scorer import Scorer
from serve.watch import RegistryWatcher


def _gpus(setting: float | str, gpus_available: bool) -> float:
    if setting == "auto":
        return 1.0 if gpus_available else 0.0
    return float(setting)


def build_app(cfg: AppConfig, feast: FeastConfig, *, registry_root: str = ".recstream/registry",
              gpus_available: bool = False) -> Application:
    """The serving graph for ``cfg``; ``gpus_available`` resolves ``gpus_per_replica: auto``;
    variants that follow a registry pointer read it from ``registry_root`` (one watcher)."""
    follows = any(v.family is not None and v.version is None for v in cfg.variants)
    watcher = RegistryWatcher.options(  # type: ignore[attr-defined]
        ray_actor_options={"num_cpus": 0}
    ).bind(registry_root, cfg.reload_poll_s) if follows else None
    reader = FeatureReader.options(  # type: ignore[attr-defined]
        ray_actor_options={"num_cpus": cfg.reader_cpus}
    ).bind(feast.model_dump(mode="json"))
    scorers = {
        v.name: Scorer.options(  # type: ignore[attr-defined]
            name=f"Scorer_{v.name}",
            num_replicas=v.num_replicas,
            ray_actor_options={"num_gpus": _gpus(v.gpus_per_replica, gpus_available),
                               "num_cpus": v.cpus_per_replica},
            user_config=v.batch.model_dump(),
        ).bind(v.name, v.source(), cfg.max_history, registry_root, watcher)
        for v in cfg.variants
    }
    weights = {v.name: v.weight for v in cfg.variants}
    return Ranker.options(  # type: ignore[attr-defined]
        ray_actor_options={"num_cpus": cfg.ingress_cpus}
    ).bind(reader, scorers, weights)
