"""Quality benchmark: BaseModel, DIN and DIEN beside DeepCTR-Torch 0.3.0, each tuned alike.

Run: ``python -m bench.quality --data ../shared/data/ml-100k --jobs 2 --json
bench/results/quality_ml100k_tuned.json`` (or ``recstream bench quality ...``); ``--data``
takes any MovieLens folder ``models.data.movielens.load_movielens`` reads.

For each protocol (``bench.quality_protocols``: time splits at 70/80/90%, a split by user,
the synthetic world) and model: ours and the peer are each tuned once with the same budget
(``models.tune``: ``--trials`` settings, at most ``--max-epochs`` epochs with early
stopping, on the last ``--val-frac`` of the training period, seed 0), then trained with the
chosen settings once per seed (``--seeds``, at least 5 for the intervals) on the whole
training period and scored on the test split. Per model: mean and sd over the seeds, the
paired difference against the peer (same seeds and splits) with its 95% t interval
(``bench.quality_report``). Both sides: dim 16, batch 256, Adam, the same threads; ours with
the linear schedule and the item term (its rate tuned), the peer (``bench.quality_peer``)
with its own fit (constant rate). ``--no-tune`` trains the defaults for ``--epochs``
instead. The tasks run in ``--jobs`` processes of ``--threads`` torch threads each (speeds
measured so share the host); the JSON is written after each protocol. The peer (``pip
install --no-deps deepctr-torch==0.3.0``) is optional; without it its fields are null.
"""

from __future__ import annotations

import argparse
import heapq
import json
import multiprocessing
import sys
import time
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from pathlib import Path
from typing import Any

import torch

from bench import write_result
from bench.machine import machine
from bench.quality_protocols import PROTOCOLS, STANDARD, load_protocol
from bench.quality_report import overall, summarise, targets
from models.allocator import keep_freed_memory
from models.bank import INIT_STD
from models.tune import DEFAULTS, TuneConfig, Tuned, tune_model

# relative cost of a sample-epoch (1-thread worker seconds per 100k), to start long tasks first
COST = {("base", "ours"): 2, ("din", "ours"): 3, ("dien", "ours"): 10,
        ("base", "peer"): 3, ("din", "peer"): 18, ("dien", "peer"): 58}


def _init_worker(threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)
    keep_freed_memory()  # process-wide: both libraries train under it


def _train_config(args: argparse.Namespace) -> Any:
    from models.train import TrainConfig

    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       lr_schedule=args.lr_schedule, bias_lr=DEFAULTS["bias_lr"],
                       mba_lambda=args.mba_lambda, device=args.device, seed=0)


def _untuned(side: str, arch: str, args: argparse.Namespace) -> dict[str, Any]:
    """``--no-tune``: the defaults (ours: the ml-100k recipe) for ``--epochs``."""
    from bench.quality_peer import peer_defaults

    params = peer_defaults(arch) if side == "peer" else DEFAULTS | {"lr": args.lr}
    return {"params": {**params, "epochs": args.epochs}, "val_auc": None}


def run_task(kind: str, protocol: str, arch: str, side: str, seed: int,
             params: dict[str, Any] | None, args: argparse.Namespace) -> dict[str, Any]:
    """One task in a worker: ``tune`` (the search) or ``fit`` (a seed's run and its metrics)."""
    if kind == "tune" and args.no_tune:
        return _untuned(side, arch, args)
    p = load_protocol(protocol, args.data, args.max_len, args.synthetic_events)
    tcfg = TuneConfig(trials=args.trials, max_epochs=args.max_epochs, patience=args.patience,
                      val_frac=args.val_frac, seed=0)
    base = _train_config(args)
    if side == "peer":
        from bench.quality_peer import run_peer, tune_peer

        if kind == "tune":
            return tune_peer(arch, p, args.dim, args.batch_size, tcfg, args.device).summary()
        assert params is not None
        return run_peer(arch, p, args.dim, args.batch_size, params, seed, args.device)
    from models.train import build_model, evaluate, fit

    if kind == "tune":
        return tune_model(arch, p.frame, p.train, base, tcfg, dim=args.dim,
                          init_std=args.init_std).summary()
    assert params is not None
    tuned = Tuned(params, float("nan"))
    torch.manual_seed(seed)
    model = build_model(arch, p.frame, dim=args.dim, init_std=args.init_std,
                        **tuned.overrides(arch))
    cfg = tuned.train_config(base)
    cfg.seed = seed
    stats = fit(model, p.train, cfg)
    return {**evaluate(model, p.test), "train_seconds": stats["seconds"],
            "train_samples_per_s": stats["samples_per_s"]}


def run(args: argparse.Namespace, sides: list[str], out: dict[str, Any],
        on_protocol: Any) -> None:
    """Every task, at most ``--jobs`` at once: per protocol (in order) its searches first,
    longest first, each search's seeds as soon as it ends; ``on_protocol`` after each."""
    archs = [a.strip() for a in args.models.split(",") if a.strip()]
    protocols = [x.strip() for x in args.protocols.split(",") if x.strip()]
    seeds = [int(x) for x in str(args.seeds).split(",") if x.strip()]
    ready: list[tuple[Any, ...]] = []
    done: dict[tuple[Any, ...], Any] = {}
    started = {name: 0.0 for name in protocols}
    for pi, name in enumerate(protocols):
        for arch in archs:
            for side in sides:
                ready.append(((pi, 0, -COST[arch, side]), "tune", name, arch, side, 0))
    heapq.heapify(ready)
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch's threads
    pool: Executor = (ProcessPoolExecutor(args.jobs, ctx, _init_worker, (args.threads,))
                      if args.jobs > 1 else ThreadPoolExecutor(1))
    running: dict[Future[dict[str, Any]], tuple[Any, ...]] = {}
    with pool:
        while ready or running:
            while ready and len(running) < args.jobs:
                prio, kind, name, arch, side, seed = heapq.heappop(ready)
                started[name] = started[name] or time.perf_counter()
                params = None if kind == "tune" else done[name, arch, side]["params"]
                fut = pool.submit(run_task, kind, name, arch, side, seed, params, args)
                running[fut] = (prio, kind, name, arch, side, seed)
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                prio, kind, name, arch, side, seed = running.pop(fut)
                result = fut.result()
                if kind == "tune":
                    done[name, arch, side] = result
                    print(f"{name} {arch} {side}: chosen {result['params']}", flush=True)
                    for s in seeds:
                        heapq.heappush(ready, ((prio[0], 1, prio[2]), "fit", name, arch, side,
                                               s))
                else:
                    done[name, arch, side, seed] = result
                    print(f"{name} {arch} {side} seed {seed}: auc {result['auc']:.4f}",
                          flush=True)
                if all((name, a, sd, s) in done for a in archs for sd in sides for s in seeds):
                    out[name] = _protocol_result(name, archs, sides, seeds, done, args)
                    out[name]["seconds"] = time.perf_counter() - started[name]
                    on_protocol()


def _protocol_result(name: str, archs: list[str], sides: list[str], seeds: list[int],
                     done: dict[Any, Any], args: argparse.Namespace) -> dict[str, Any]:
    p = load_protocol(name, args.data, args.max_len, args.synthetic_events)
    rows = []
    for arch in archs:
        peer = "peer" in sides
        rows.append(summarise(
            arch, [done[name, arch, "ours", s] for s in seeds],
            [done[name, arch, "peer", s] for s in seeds] if peer else None,
            done[name, arch, "ours"], done[name, arch, "peer"] if peer else None, p.best_auc))
    return {**p.facts(), "models": rows, "targets": targets(rows, name == STANDARD)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="recstream bench quality", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/ml-100k", help="MovieLens folder")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--protocols", default=",".join(PROTOCOLS),
                   help=f"comma-separated, of {','.join(PROTOCOLS)}")
    p.add_argument("--models", default="base,din,dien")
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated training seeds")
    p.add_argument("--trials", type=int, default=3, help="settings tried per model and side")
    p.add_argument("--max-epochs", type=int, default=3, help="epochs a trial may train")
    p.add_argument("--patience", type=int, default=0, help="epochs without a gain, then stop")
    p.add_argument("--val-frac", type=float, default=0.1,
                   help="validation split: the end of the training period")
    p.add_argument("--no-tune", action="store_true",
                   help="no search: both sides' defaults for --epochs")
    p.add_argument("--epochs", type=int, default=2, help="epochs with --no-tune")
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--init-std", type=float, default=INIT_STD,
                   help="initial std of our embedding tables (the peer keeps its own 1e-4)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--synthetic-events", type=int, default=50_000)
    p.add_argument("--lr", type=float, default=1e-3, help="our Adam rate with --no-tune")
    p.add_argument("--lr-schedule", choices=["linear", "constant"], default="linear",
                   help="our lr schedule (the library's default is constant)")
    p.add_argument("--mba-lambda", type=float, default=0.0,
                   help="our mini-batch aware L2 on the tables (0: off)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--jobs", type=int, default=1, help="tasks at once (processes)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per job (0: leave as is)")
    p.add_argument("--no-peer", action="store_true", help="skip DeepCTR-Torch")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run: ``python -m bench.quality --jobs 2 --threads 1 --json bench/results/q.json``."""
    args = parse_args(argv)
    _init_worker(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda asked but torch sees no CUDA device", file=sys.stderr)
        return 2
    sides = ["ours"]
    if not args.no_peer:
        try:
            import deepctr_torch  # noqa: F401

            sides.append("peer")
        except ImportError:
            print("DeepCTR-Torch is not installed; peer skipped "
                  "(pip install --no-deps deepctr-torch==0.3.0)", file=sys.stderr)
    if args.no_tune:
        args.trials, args.max_epochs = 0, args.epochs
    protocols: dict[str, Any] = {}
    start = time.perf_counter()
    result: dict[str, Any] = {"protocols": protocols}

    def write() -> None:
        result.update({
            "overall": overall(protocols), "seconds": time.perf_counter() - start,
            "machine": machine(args.device) | {"jobs": args.jobs},
            "procedure": {"data": Path(args.data).name, "seeds": args.seeds,
                          "tuned": not args.no_tune, "trials": args.trials,
                          "max_epochs": args.max_epochs, "patience": args.patience,
                          "val_frac": args.val_frac, "tuned_on": "seed 0, the last "
                          "val_frac of the training period", "dim": args.dim,
                          "batch_size": args.batch_size, "max_len": args.max_len,
                          "init_std": args.init_std, "lr_schedule": args.lr_schedule,
                          "mba_lambda": args.mba_lambda, "label": "rating >= 4",
                          "peer": "deepctr-torch 0.3.0" if "peer" in sides else None,
                          "aggregate": "metrics: mean and sd over the seeds; speeds: median; "
                                       "diff_ci95: 95% t interval of the paired AUC "
                                       "differences ours - peer"}})
        write_result(result, Path(args.json) if args.json else None)

    run(args, sides, protocols, write)
    write()
    print(json.dumps({k: v["targets"] for k, v in protocols.items()} | result["overall"],
                     indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
