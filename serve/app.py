"""The typed app builder: AppConfig -> a Ray Serve application, one deployment per stage.

Run: ``recstream serve`` (reads ``infra/serve.yaml``, or ``SERVE_CONFIG_PATH``). The graph is
``Ranker`` (HTTP) -> ``FeatureReader`` (Feast) and ``Ranker`` -> ``Scorer`` (one per variant).
"""

from __future__ import annotations

from ray.serve import Application

from features.store import FeastConfig
from serve.config import AppConfig
from serve.deployments import FeatureReader, Ranker, Scorer


def _gpus(setting: float | str, gpus_available: bool) -> float:
    if setting == "auto":
        return 1.0 if gpus_available else 0.0
    return float(setting)


def build_app(cfg: AppConfig, feast: FeastConfig, *, gpus_available: bool = False) -> Application:
    """The serving graph for ``cfg``; ``gpus_available`` resolves ``gpus_per_replica: auto``."""
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
        ).bind(str(v.model_dir), cfg.max_history)
        for v in cfg.variants
    }
    weights = {v.name: v.weight for v in cfg.variants}
    return Ranker.options(  # type: ignore[attr-defined]
        ray_actor_options={"num_cpus": cfg.ingress_cpus}
    ).bind(reader, scorers, weights)
