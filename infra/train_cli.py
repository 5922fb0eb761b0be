"""``recstream train``: the first model, the incremental trainer and the full refresh.

``recstream train [--source synthetic|movielens] [--arch A]``: a first model from a source (a
checkpoint in ``TRAIN_OUT_DIR`` and a registry version, live when the family has none).
``recstream train incremental``: the incremental trainer on the stack's Ray cluster, followed
until Ctrl-C (``--detach``: left running; ``--stop``: stop it; ``--local``: in this process).
``recstream train full``: one full refresh now (``--schedule``: every ``TRAIN_REFRESH_EVERY``;
``--no-ray``: in this process). Settings: ``TRAIN_*`` (train/settings.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

from rich.console import Console

console = Console()


def add_parser(sub: Any) -> None:
    """Adds ``train`` and its actions to the ``recstream`` subparsers ``sub``."""
    tr = sub.add_parser("train", help="train a first model, run the incremental trainer or a "
                                      "full refresh (TRAIN_* settings)",
                        description="A first model from a source, the incremental trainer "
                                    "(on Ray) or a full refresh.")
    tr.add_argument("action", nargs="?", choices=["first", "incremental", "full"],
                    default="first", help="first (default): a first model from --source")
    tr.add_argument("--source", choices=["synthetic", "movielens"], default="synthetic")
    tr.add_argument("--events", type=int, default=20_000, help="synthetic impressions")
    tr.add_argument("--data", default=None, help="MovieLens folder (TRAIN_ML100K_DIR)")
    tr.add_argument("--arch", choices=["base", "din", "dien"], default=None)
    tr.add_argument("--out", default=None, help="checkpoint folder (TRAIN_OUT_DIR)")
    tr.add_argument("--local", action="store_true", help="incremental: in this process")
    tr.add_argument("--detach", action="store_true", help="incremental: leave it running")
    tr.add_argument("--stop", action="store_true", help="incremental: stop the running one")
    tr.add_argument("--schedule", action="store_true",
                    help="full: refresh every TRAIN_REFRESH_EVERY until stopped")
    tr.add_argument("--no-ray", action="store_true", help="full: train in this process")


def _settings(args: argparse.Namespace) -> Any:
    from train.settings import train_settings

    s = train_settings()
    update: dict[str, Any] = {}
    if args.arch:
        update["arch"] = args.arch
    if args.out:
        update["out_dir"] = Path(args.out)
    if "://" not in s.registry_root:  # the actor's working directory is not ours
        update["registry_root"] = str(Path(s.registry_root).resolve())
    update["feast_data_dir"] = s.feast_data_dir.resolve()
    return s.model_copy(update=update)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _ray_init(s: Any) -> None:
    if s.ray_auth_token_path is not None and s.ray_auth_token_path.exists():
        from infra.stack import ray_auth_env

        os.environ.update(ray_auth_env(s.ray_auth_token_path))
    import ray

    ray.init(address=s.ray_address, namespace="recstream", log_to_driver=False)


def _incremental(args: argparse.Namespace, s: Any) -> int:
    if args.local:
        from train.incremental import run_here

        return run_here(s, _stop_on_signals())
    _ray_init(s)
    from train import actor

    if args.stop:
        last = actor.stop(s.family)
        console.print(f"stopped: {last}" if last else f"no trainer of {s.family} is running")
        return 0
    handle = actor.start(s)
    console.print(f"trainer {actor.actor_name(s.family)} on Ray at {s.ray_address}: "
                  f"{s.kafka.topics.samples} -> registry {s.registry_root} (metrics on "
                  f":{s.metrics_port})")
    if args.detach:
        return 0
    stop = _stop_on_signals()
    actor.follow(handle, stop, show=console.print)
    console.print(f"stopping: {actor.stop(s.family)}")
    return 0


def _full(args: argparse.Namespace, s: Any) -> int:
    from train import full

    if not args.no_ray:
        _ray_init(s)
    if args.schedule:
        full.run_scheduled(s, _stop_on_signals(), use_ray=not args.no_ray)
        return 0
    try:
        result = full.refresh(s, use_ray=not args.no_ray)
    except RuntimeError as exc:
        console.print(f"[red]full refresh: {exc}[/red]")
        return 1
    console.print_json(json.dumps(result, default=str))
    return 0 if result["promoted"] else 2


def run(args: argparse.Namespace) -> int:
    """Runs ``recstream train ...``."""
    s = _settings(args)
    if args.action == "incremental":
        return _incremental(args, s)
    if args.action == "full":
        return _full(args, s)
    from train.job import load_frame, train_full

    frame = load_frame(args.source, args.events, Path(args.data or s.ml100k_dir))
    console.print_json(json.dumps(train_full(frame, s)))
    return 0
