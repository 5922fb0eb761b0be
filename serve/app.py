"""The typed app builder: AppConfig -> a Ray Serve application, one deployment per stage.

Run: ``recstream serve`` (reads ``infra/serve.yaml``, or ``SERVE_CONFIG_PATH``). The graph is
``Ranker`` (HTTP) -> ``FeatureReader`` (Feast) and ``Ranker`` -> ``Scorer`` (one per variant).
"""

from __future__ import annotations

from ray.serve import Application

from features.store import FeastConfig
from serve.config import AppConfig
from serve.ingress import Ranker
from serve.reader import FeatureReader
from serve.scorer import Scorer
from serve.watch import RegistryWatcher
from stream.kafka import KafkaConfig


def _gpus(setting: float | str, gpus_available: bool) -> float:
    if setting == "auto":
        return 1.0 if gpus_available else 0.0
    return float(setting)


def build_app(cfg: AppConfig, feast: FeastConfig, *, registry_root: str = ".recstream/registry",
              experiment_path: str = ".recstream/experiment.json",
              kafka: KafkaConfig | None = None, api_key_digests: list[str] | None = None,
              gpus_available: bool = False) -> Application:
    """The serving graph for ``cfg``; ``gpus_available`` resolves ``gpus_per_replica: auto``;
    variants that follow a registry pointer read it from ``registry_root`` (one watcher);
    answers are logged to ``kafka``'s predictions topic (None: not logged); with
    ``api_key_digests`` a request needs one of those keys; ``experiment_path`` overrides the
    config's weights, salt and shadow at runtime (:mod:`serve.experiment`)."""
    watcher = RegistryWatcher.options(  # type: ignore[attr-defined]
        ray_actor_options={"num_cpus": 0}
    ).bind(registry_root, experiment_path, cfg.reload_poll_s)
    reader = FeatureReader.options(  # type: ignore[attr-defined]
        num_replicas=cfg.reader_replicas, max_ongoing_requests=cfg.reader_max_ongoing,
        ray_actor_options={"num_cpus": cfg.reader_cpus}
    ).bind(feast.model_dump(mode="json"))
    scorers = {
        v.name: Scorer.options(  # type: ignore[attr-defined]
            name=f"Scorer_{v.name}",
            num_replicas=v.num_replicas,
            max_ongoing_requests=v.max_ongoing_requests or 2 * v.batch.max_batch_size,
            ray_actor_options={"num_gpus": _gpus(v.gpus_per_replica, gpus_available),
                               "num_cpus": v.cpus_per_replica},
            user_config=v.batch.model_dump(),
        ).bind(v.name, v.source(), cfg.max_history, registry_root, watcher, v.torch_threads)
        for v in cfg.variants
    }
    limits = {"max_candidates": cfg.max_candidates, "request_timeout_s": cfg.request_timeout_s,
              "max_body_bytes": cfg.max_body_bytes, "api_key_digests": api_key_digests or []}
    return Ranker.options(  # type: ignore[attr-defined]
        num_replicas=cfg.ingress_replicas, max_ongoing_requests=cfg.ingress_max_ongoing,
        ray_actor_options={"num_cpus": cfg.ingress_cpus},
        user_config=cfg.experiment(),
    ).bind(reader, scorers, limits, kafka.model_dump(mode="json") if kafka else None,
           watcher, experiment_path)
