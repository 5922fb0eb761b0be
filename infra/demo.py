"""The end-to-end demo: stack up, stream clicks through Kafka, train, serve, rank over HTTP.

Run: ``make demo`` (or ``recstream demo [--keep]``). Everything it starts is stopped at the
end, also on failure, unless ``--keep`` is given.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import requests
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from features.store import FeatureAccess
from infra import serving, stack
from models.registry import Registry
from serve.config import ServeSettings
from stream.producer import events_from_frame, produce
from stream.settings import StreamSettings
from stream.synthetic import SyntheticConfig, generate
from train.job import train_full
from train.settings import TrainSettings

console = Console()


def _wait_for_clicks(features: FeatureAccess, user_id: int, want: int, timeout: float) -> int:
    """Poll the online store until ``user_id`` has ``want`` clicks in its sequence."""
    deadline = time.monotonic() + timeout
    have = 0
    while time.monotonic() < deadline:
        seq = features.read_sequences([user_id]).get(user_id)
        have = len(seq.item_ids) if seq else 0
        if have >= want:
            return have
        time.sleep(0.2)
    raise TimeoutError(f"user {user_id} has {have}/{want} clicks in Feast after {timeout:.0f} s")


def _print_ranking(body: dict, hist: list[int], cats: dict[int, int]) -> None:
    console.print(f"user {body['user_id']}: recent clicked categories "
                  f"{[cats.get(i, 0) for i in hist[-10:]]} (variant {body['variant']}, "
                  f"model {body['model_version']})")
    table = Table("rank", "item_id", "category", "score")
    for n, item in enumerate(body["items"], 1):
        table.add_row(str(n), str(item["item_id"]), str(cats.get(item["item_id"], 0)),
                      f"{item['score']:.4f}")
    console.print(table)


def run_demo(data_dir: Path, *, keep: bool = False, events: int = 4000, rate: float = 1000.0
             ) -> int:
    """Run the whole path once on the embedded stack under ``data_dir``; return an exit code.

    Ray's token settings must already be in the environment (the CLI exports them).
    """
    sst = stack.StackSettings(data_dir=data_dir)
    sst.feast.data_dir = sst.data_dir / "feast"
    stream_cfg = StreamSettings(kafka=sst.kafka(), feast=sst.feast, metrics_port=0)
    model_dir = sst.data_dir / "models" / "din"
    stop = threading.Event()
    consumer: threading.Thread | None = None
    try:
        console.rule("1. stack up (Tansu broker, Feast, Ray)")
        stack.up(sst, log=console.print)

        console.rule("2. consumer service: Kafka -> user sequences in Feast")
        from stream.service import run_service

        consumer = threading.Thread(target=run_service, args=(stream_cfg, stop), daemon=True)
        consumer.start()

        console.rule("3. train DIN on synthetic history (embeddings + top network)")
        world = SyntheticConfig()
        result = train_full(generate(20_000, world),
                            TrainSettings(arch="din", out_dir=model_dir, epochs=1,
                                          registry_root=str(sst.data_dir / "registry")))
        Registry(sst.data_dir / "registry").promote("din", result["version"],
                                                    reason="the demo's model")
        console.print(f"trained in {result['seconds']:.1f} s, held-out AUC {result['auc']:.3f}"
                      f", live version {result['version']}")

        console.rule(f"4. produce {events} live impressions (+ clicks) to Kafka")
        live = generate(events, SyntheticConfig(seed=world.seed + 1))
        with Progress(console=console) as progress:
            task = progress.add_task("producing", total=None)
            sent = produce(events_from_frame(live, live=True, id_prefix="demo"),
                           stream_cfg.kafka, rate=rate,
                           on_sent=lambda k: progress.update(task, completed=k))
        console.print(f"sent {sent} events")
        clicks = live[live.label == 1]
        user = int(clicks.user_id.value_counts().idxmax())
        features = FeatureAccess.open(sst.feast)
        n = _wait_for_clicks(features, user, int((clicks.user_id == user).sum()), 60)
        console.print(f"user {user}: {n} clicks arrived through Kafka into Feast")

        console.rule("5. Ray Serve: POST /rank over HTTP")
        s = ServeSettings(feast=sst.feast, ray_address=stack.ray_address(sst.ray_port),
                          ray_auth_token_path=sst.ray_token_path,
                          registry_root=str(sst.data_dir / "registry"),
                          config_path=Path(__file__).with_name("serve.yaml"))
        base = serving.deploy(s)
        candidates = sorted(set(live.item_id.sample(20, random_state=1).tolist())
                            | set(clicks[clicks.user_id == user].item_id.tail(5).tolist()))
        resp = requests.post(f"{base}/rank", json={"user_id": user, "candidates": candidates,
                                                    "k": 10}, timeout=30)
        resp.raise_for_status()
        seq = features.read_sequences([user])[user]
        cats = dict(zip(live.item_id, live.category_id, strict=True))
        _print_ranking(resp.json(), seq.item_ids, cats)
        if keep:
            console.print(f"[green]kept running[/green]: {base}/rank; `recstream stack down`")
        return 0
    finally:
        stop.set()
        if consumer is not None:
            consumer.join(timeout=15)
        if not keep:
            console.rule("6. shutting down")
            serving.shutdown()
            stack.down(sst, log=console.print)
