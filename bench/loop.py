"""The closed loop, measured: simulated users on the whole local stack, a static arm against
an arm whose top network the incremental trainer keeps updating.

Run: ``recstream bench loop --minutes 10 --json bench/results/loop.json --plot
bench/results/loop.png`` (``python -m bench.loop``). Everything runs on this machine and is
stopped at the end: a Tansu broker, Feast (SQLite), a local Ray with the Serve app, the stream
consumer and the incremental trainer (threads of this process), and the simulated clients.

1. The world (bench/world.py) logs a pre-period of random exposure; the first DIN trains on
   it and is published as the family's live version.
2. Serve splits users 50/50, sticky: ``static`` is pinned to that first version,
   ``incremental`` follows ``din/live``.
3. The clients ask ``/rank`` for 20 candidates, are shown the top 5, click by the world's true
   probabilities and send impressions and clicks back with the response's ``request_id``,
   ``variant`` and ``model_version``. The consumer joins them into samples; the trainer learns
   from every arm's samples (the world is the same for both arms, and twice the data; the
   static arm never learns, so the comparison is of the update policy, not of the data).
4. The report: CTR per arm from the samples topic (the stream's own join; delta-method
   intervals, lift, SRM, and CUPED on the logged pre-period: stream/ab.py), the online AUC
   of each arm's served scores (the predictions topic joined to the labels), the true
   expected CTR of what each arm showed, of the oracle (the true top 5) and of a random 5,
   model freshness, update seconds, promotions and rejections, failed requests, and
   impressions lost or duplicated between the clients and the samples.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from bench.world import World, WorldConfig


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_loop(minutes: float, *, seed: int = 7, interval_s: float = 5.0, clients: int = 4,
             warmup_events: int = 20_000, world: WorldConfig | None = None,
             log: Any = print, stack: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole loop (module docstring); returns the raw material of the report.

    ``stack``: run on a stack already up (``recstream demo``): ``kafka`` (KafkaConfig),
    ``feast`` (FeastConfig), ``ray_address``, ``data_dir`` and the ``stream_metrics_port`` /
    ``train_metrics_port`` its Prometheus scrapes; else a broker, Feast and a local Ray of
    the loop's own, all stopped at the end.
    """
    import ray

    from bench.loop_sim import Clients
    from features.store import FeastConfig, apply_definitions, open_store
    from models.registry import Registry
    from serve import deploy as serving
    from serve.config import ServeSettings
    from stream.ab_online import read_predictions
    from stream.kafka import KafkaConfig, ensure_topics
    from stream.localservices import start_broker
    from stream.service import run_service
    from stream.settings import StreamSettings
    from train.incremental import IncrementalTrainer
    from train.job import train_full
    from train.settings import TrainSettings

    given = stack or {}
    tmp = Path(given.get("data_dir") or tempfile.mkdtemp(prefix="recstream-loop-")) / "loop"
    shutil.rmtree(tmp / "registry", ignore_errors=True)  # a demo's earlier run
    tmp.mkdir(parents=True, exist_ok=True)
    world_cfg = world or WorldConfig(seed=seed)
    sim = World(world_cfg)
    broker = None
    if "kafka" not in given:
        port = _free_port()
        broker = start_broker(port, tmp / "tansu.log", die_with_parent=True)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        kafka = given.get("kafka") or KafkaConfig(bootstrap_servers=f"127.0.0.1:{port}",
                                                  partitions=2)
        ensure_topics(kafka)
        feast = given.get("feast") or FeastConfig(data_dir=tmp / "feast")
        if "feast" not in given:
            apply_definitions(open_store(feast))
        root = str(tmp / "registry")
        log(f"1. the first model on {warmup_events} logged impressions")
        logged = sim.logged(warmup_events, start_ts=int(time.time()) - 600)
        first = train_full(logged, TrainSettings(
            arch="din", dim=16, epochs=2, out_dir=tmp / "first", registry_root=root))
        reg = Registry(root)
        log("2. Ray Serve: static (pinned) and incremental (din/live), 50/50")
        if "ray_address" in given:
            ray.init(address=given["ray_address"], namespace="recstream-loop",
                     log_to_driver=False)
        else:
            ray.init(address="local", num_cpus=2, include_dashboard=False,
                     log_to_driver=False, namespace="recstream-loop")
        cfg = {"name": "loop", "route_prefix": "/", "reload_poll_s": 0.5,
               "ingress_replicas": 1, "reader_replicas": 1,
               "variants": [{"name": "static", "version": first["version"], "weight": 0.5},
                            {"name": "incremental", "family": "din", "weight": 0.5}]}
        (tmp / "serve.yaml").write_text(yaml.safe_dump(cfg))
        base = serving.deploy(ServeSettings(
            config_path=tmp / "serve.yaml", feast=feast, http_port=_free_port(),
            registry_root=root, kafka=kafka, experiment_path=tmp / "experiment.json"))
        log(f"3. the consumer and the incremental trainer (TRAIN_INTERVAL_S={interval_s})")
        stream = StreamSettings(kafka=kafka, feast=feast,
                                metrics_port=given.get("stream_metrics_port", 0),
                                attribution_window_s=2.0, group_id="loop-stream")
        trainer = IncrementalTrainer(TrainSettings(
            arch="din", kafka=kafka, registry_root=root, group_id="loop-train",
            interval_s=interval_s, min_new_samples=300, buffer_samples=5000,
            metrics_port=given.get("train_metrics_port", 0)))
        if trainer.s.metrics_port:
            from train.metrics import start_metrics_server

            start_metrics_server(trainer.s.metrics_port)
        threads = [threading.Thread(target=run_service, args=(stream, stop), daemon=True),
                   threading.Thread(target=trainer.run, args=(stop,), daemon=True)]
        for th in threads:
            th.start()
        log(f"4. {clients} simulated clients for {minutes} min")
        sim_clients = Clients(sim, base, kafka, n_clients=clients, seed=seed)
        sim_clients.run(minutes * 60)
        log("5. waiting for the last samples")
        samples = _wait_samples(kafka, sim_clients.impressions, timeout_s=60)
        return {"clients": sim_clients, "samples": samples, "registry": reg,
                "predictions": read_predictions(kafka), "logged": logged,
                "first": first["version"], "interval_s": interval_s, "world": world_cfg,
                "minutes": minutes}
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=30)
        if "ray_address" in given:
            serving.shutdown("loop")  # the app off the cluster the caller gave; it keeps running
        else:
            ray.shutdown()  # our own instance, Serve with it (serve.shutdown waited ~30 s)
        if broker is not None:
            broker.terminate()
            broker.wait(timeout=10)


def _wait_samples(kafka: Any, impressions: int, timeout_s: float) -> Any:
    """The samples topic once it holds a sample per impression (or after ``timeout_s``)."""
    from stream.ab import read_topic

    deadline = time.monotonic() + timeout_s
    while True:
        frame = read_topic(kafka)
        looked = frame.dropna(subset=["request_id"])
        if len(looked) >= impressions or time.monotonic() > deadline:
            return frame
        time.sleep(2.0)


def main(argv: list[str] | None = None) -> int:
    """``recstream bench loop``: run the loop, write the JSON and the plot."""
    from bench import write_result
    from bench.loop_report import plot, report

    p = argparse.ArgumentParser(prog="recstream bench loop", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--interval", type=float, default=5.0, help="TRAIN_INTERVAL_S")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--warmup-events", type=int, default=20_000)
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    args = p.parse_args(argv)
    raw = run_loop(args.minutes, seed=args.seed, interval_s=args.interval,
                   clients=args.clients, warmup_events=args.warmup_events)
    result = report(raw)
    print({k: result[k] for k in ("lift", "lift_ci95", "gap_closed", "requests",
                                  "failed_requests", "lost", "duplicated",
                                  "model_freshness_p50_s", "model_freshness_p99_s")})
    if args.json:
        write_result(result, Path(args.json))
    if args.plot:
        plot(raw, Path(args.plot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
