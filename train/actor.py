"""The incremental trainer as a Ray actor: on the stack's Ray cluster, or a RayJob's.

Run: ``recstream train incremental`` (connects to ``TRAIN_RAY_ADDRESS``, starts the actor
``recstream-trainer-<family>`` and follows it until Ctrl-C; ``--detach`` leaves it running,
``recstream train incremental --stop`` stops it). On a cluster, a RayJob whose entrypoint is
``recstream train incremental`` does the same.

The actor restarts when its process dies (``max_restarts=-1``) and the trainer resumes from
what the registry recorded (:mod:`train.incremental`), so a crash loses and repeats nothing.
It serves its Prometheus metrics on ``TRAIN_METRICS_PORT`` from the worker's host.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import ray

from train import metrics
from train.incremental import IncrementalTrainer
from train.settings import TrainSettings

NAMESPACE = "recstream"


def actor_name(family: str) -> str:
    return f"recstream-trainer-{family}"


@ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=-1)
class TrainerActor:
    """Runs :class:`IncrementalTrainer` on a thread of its own; answers status and stop."""

    def __init__(self, settings_json: str) -> None:
        self.s = TrainSettings.model_validate_json(settings_json)
        metrics.start_metrics_server(self.s.metrics_port)
        self.stopping = threading.Event()
        self.trainer = IncrementalTrainer(self.s)
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name="trainer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.trainer.run(self.stopping)
        except Exception as exc:  # kept for status(); the actor stays up to say so
            self.error = repr(exc)
            raise
        finally:
            self.trainer.close()

    def status(self) -> dict[str, Any]:
        """Updates done, the live version followed, samples waiting, and any error."""
        return {"updates": self.trainer.updates, "live": self.trainer.live_vid,
                "pending_samples": self.trainer.pending_samples(),
                "running": self.thread.is_alive(), "error": self.error}

    def stop(self) -> dict[str, Any]:
        """Stop after the current update; returns the last status."""
        self.stopping.set()
        self.thread.join(timeout=60)
        return self.status()


def start(s: TrainSettings) -> Any:
    """The family's trainer actor (started now, or the one already running)."""
    return TrainerActor.options(  # type: ignore[attr-defined]
        name=actor_name(s.family), namespace=NAMESPACE, lifetime="detached",
        get_if_exists=True).remote(s.model_dump_json())


def stop(family: str) -> dict[str, Any] | None:
    """Stop and remove the family's trainer actor; its last status, None if none ran."""
    try:
        actor = ray.get_actor(actor_name(family), namespace=NAMESPACE)
    except ValueError:
        return None
    last: dict[str, Any] = dict(ray.get(actor.stop.remote(), timeout=90))
    ray.kill(actor, no_restart=True)
    return last


def follow(actor: Any, stop_event: threading.Event, every_s: float = 5.0,
           show: Any = print) -> None:
    """Print the actor's status every ``every_s`` until ``stop_event`` is set."""
    last = None
    while not stop_event.wait(every_s if last is not None else 0.5):
        status = ray.get(actor.status.remote(), timeout=60)
        if status != last:
            show(f"{time.strftime('%H:%M:%S')} updates {status['updates']}, live "
                 f"{status['live']}, pending {status['pending_samples']} samples"
                 + (f", error {status['error']}" if status["error"] else ""))
            last = status
