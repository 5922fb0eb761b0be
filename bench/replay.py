"""Temporal replay benchmark: a static model, the trainer's incremental updates and full
retraining, walked through the later half of a MovieLens folder window by window.

Run: ``python -m bench.replay --data ../shared/data/ml-100k --json
bench/results/replay_ml100k.json --plot bench/results/replay_ml100k.png`` (or ``recstream
bench replay ...``; ``--data`` defaults to RECSTREAM_ML100K, else ../shared/data/ml-100k).
The committed figures add ``--threads 1 --buffer-samples 5000 --incremental-lr 3e-4`` (the
defaults are the trainer's; docs/models.md says why).

Protocol (docs/models.md, "Replay benchmark"): the samples of ``bench quality`` (events in
time order, label = rating >= 4, history = the user's earlier clicks, the most recent 50);
the first ``--initial-frac`` of them train the initial model with bench quality's recipe; the
rest is cut into ``--windows`` equal windows. Every window is scored by the three policies
before any of them updates on it, so it is unseen data for all three:

* ``static``: the initial model, never updated;
* ``incremental``: :class:`train.update.TopUpdater` driven as :mod:`train.incremental` does
  (``propose`` on the window's samples, ``adopt`` when the guard promotes, else ``reject``):
  the top network fine-tuned, the bank frozen (its bytes are hashed after every window);
* ``full``: a new model (a new bank over the ids seen so far with ``--vocab seen``) trained
  with the initial recipe on every sample seen so far;
* with ``--top-bound`` a fourth, a diagnostic: ``top_refit``, a new top network on the
  initial (frozen) bank trained with the full recipe on every sample seen so far: what
  updating the top network alone can reach with all the data and compute (not a target).

The last window is only scored (no policy updates on it: nothing would score the update).
Compute seconds: wall seconds of the update calls alone (incremental: propose + adopt, guard
included; full: build + fit), evaluation excluded (also as process CPU seconds, which other
jobs on a shared host move less). ``gain_recovered`` = (mean AUC incremental - static) /
(mean AUC full - static); ``compute_ratio`` = incremental seconds / full seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import write_result
from bench.machine import machine
from models.allocator import keep_freed_memory
from models.bank import CAT, INIT_STD, ITEM, EmbeddingBank
from models.data.movielens import load_movielens
from models.data.samples import SampleSet, build_samples
from models.ranker import Ranker
from models.train import TrainConfig, build_model, config_overrides, evaluate, fit, fit_incremental
from train.settings import GuardSettings, TrainSettings
from train.update import TopUpdater

POLICIES = ("static", "incremental", "full")
METRICS = ("auc", "gauc", "logloss", "calibration")
TARGETS = {"gain_recovered_min": 0.7, "compute_ratio_max": 0.2}


def split_windows(n: int, windows: int, initial_frac: float = 0.5
                  ) -> tuple[int, list[tuple[int, int]]]:
    """(end of the initial training part, [start, end) of each window): the samples after the
    first ``initial_frac`` in ``windows`` windows of equal size (give or take one)."""
    cut = round(n * initial_frac)
    if windows < 1 or n - cut < windows:
        raise ValueError(f"{n - cut} samples after the initial part cannot make {windows} "
                         "windows")
    edges = np.linspace(cut, n, windows + 1).round().astype(int)
    return cut, [(int(lo), int(hi)) for lo, hi in pairwise(edges)]


def recipe(args: argparse.Namespace) -> TrainConfig:
    """The full-training recipe (bench quality's): the initial model and every retrain."""
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       lr_schedule=args.lr_schedule, bias_lr=args.bias_lr,
                       mba_lambda=args.mba_lambda, device=args.device, seed=args.seed)


def train_full(samples: SampleSet, end: int, args: argparse.Namespace,
               bank: EmbeddingBank | None = None) -> Ranker:
    """A new model of ``args.arch`` fit on the first ``end`` samples, its bank over their ids
    (``--vocab seen``; histories hold earlier events only) or over all of them (``all``);
    given a ``bank``, a new top network on it, the bank frozen (``--top-bound``)."""
    torch.manual_seed(args.seed)
    extra = config_overrides(args.arch, aux_weight=args.aux_weight,
                             input_var_floor=args.din_var_floor)
    known = end if args.vocab == "seen" else len(samples)
    ids = {ITEM: samples.item_id[:known], CAT: samples.cat_id[:known]}
    model = build_model(args.arch, bank or ids, dim=args.dim, init_std=args.init_std, **extra)
    (fit if bank is None else fit_incremental)(model, samples.subset(slice(0, end)),
                                               recipe(args))
    return model


def incremental_settings(args: argparse.Namespace) -> TrainSettings:
    """The trainer's settings for the incremental policy (the guard: the trainer's defaults,
    not read from the environment)."""
    return TrainSettings(arch=args.arch, batch_size=args.batch_size,
                         incremental_lr=args.incremental_lr,
                         buffer_samples=args.buffer_samples, holdout_frac=args.holdout_frac,
                         anchor_samples=args.anchor_samples, device=args.device,
                         seed=args.seed, guard=GuardSettings())


def bank_digest(bank: EmbeddingBank) -> str:
    """sha256 of every tensor of the bank (tables, item term, vocabularies)."""
    h = hashlib.sha256()
    for name, tensor in sorted(bank.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _clean(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _clock(policy: dict[str, Any], wall0: float, cpu0: float) -> None:
    """Append the wall and the process CPU seconds since ``wall0`` / ``cpu0``."""
    policy["update_seconds"].append(time.perf_counter() - wall0)
    policy["update_cpu_seconds"].append(time.process_time() - cpu0)


def replay(samples: SampleSet, args: argparse.Namespace) -> dict[str, Any]:
    """The three policies through the windows: per-window metrics, updates and seconds."""
    cut, bounds = split_windows(len(samples), args.windows, args.initial_frac)
    start = time.perf_counter()
    initial = train_full(samples, cut, args)
    initial_seconds = time.perf_counter() - start
    updater = TopUpdater(initial, incremental_settings(args))
    digest = bank_digest(initial.bank)
    full = bound = initial
    policies = (*POLICIES, "top_refit") if args.top_bound else POLICIES
    out: dict[str, Any] = {p: {m: [] for m in METRICS} | {"update_seconds": [],
                                                           "update_cpu_seconds": []}
                           for p in policies}
    verdicts: list[dict[str, Any]] = []
    bank_unchanged = True
    rows = []
    for w, (lo, hi) in enumerate(bounds):
        window = samples.subset(slice(lo, hi))
        rows.append({"index": w, "start": lo, "end": hi, "samples": hi - lo,
                     "first_ts": int(window.ts[0]), "last_ts": int(window.ts[-1]),
                     "click_rate": float(window.label.mean())})
        models = {"static": initial, "incremental": updater.live, "full": full,
                  "top_refit": bound}
        for policy in policies:
            found = evaluate(models[policy], window)
            for m in METRICS:
                out[policy][m].append(_clean(found[m]))
        if w == len(bounds) - 1:
            break  # nothing scores an update on the last window
        t0, c0 = time.perf_counter(), time.process_time()
        update = updater.propose(window)
        if update.verdict.promote:
            updater.adopt(update)
        else:
            updater.reject(update)
        _clock(out["incremental"], t0, c0)
        verdicts.append({"window": w, "promoted": update.verdict.promote,
                         "reason": update.verdict.reason,
                         "train_samples": int(update.stats.get("train_samples", 0))})
        bank_unchanged &= bank_digest(updater.live.bank) == digest
        t0, c0 = time.perf_counter(), time.process_time()
        full = train_full(samples, hi, args)
        _clock(out["full"], t0, c0)
        if args.top_bound:
            t0, c0 = time.perf_counter(), time.process_time()
            bound = train_full(samples, hi, args, bank=initial.bank)
            _clock(out["top_refit"], t0, c0)
        print(f"window {w}: auc static {out['static']['auc'][-1]:.4f} incremental "
              f"{out['incremental']['auc'][-1]:.4f} full {out['full']['auc'][-1]:.4f}; "
              f"update {verdicts[-1]['reason']}", flush=True)
    rejected = Counter(v["reason"] for v in verdicts if not v["promoted"])
    out["incremental"] |= {"promotions": sum(v["promoted"] for v in verdicts),
                           "rejections": sum(rejected.values()),
                           "rejection_reasons": dict(rejected), "verdicts": verdicts,
                           "bank_unchanged": bank_unchanged, "bank_sha256": digest}
    return {"windows": rows, "policies": out, "initial_train_samples": cut,
            "initial_train_seconds": initial_seconds}


def summarise(found: dict[str, Any]) -> dict[str, Any]:
    """Means per policy, compute seconds, ``gain_recovered``, ``compute_ratio``, targets."""
    pol = found["policies"]
    for p in pol:
        values = {m: [np.nan if v is None else v for v in pol[p][m]] for m in METRICS}
        pol[p]["mean"] = {m: _clean(float(np.nanmean(v))) if v else None
                          for m, v in values.items()}
        pol[p]["seconds"] = float(sum(pol[p]["update_seconds"]))
        pol[p]["cpu_seconds"] = float(sum(pol[p]["update_cpu_seconds"]))
    auc = {p: np.nan if pol[p]["mean"]["auc"] is None else pol[p]["mean"]["auc"]
           for p in POLICIES}
    gap = auc["full"] - auc["static"]
    gain = (auc["incremental"] - auc["static"]) / gap if gap > 0 else float("nan")
    ratio, cpu_ratio = (pol["incremental"][k] / pol["full"][k] if pol["full"][k] > 0
                        else float("nan") for k in ("seconds", "cpu_seconds"))
    met = {"gain_recovered": bool(np.isfinite(gain) and gain >= TARGETS["gain_recovered_min"]),
           "compute_ratio": bool(np.isfinite(ratio) and ratio <= TARGETS["compute_ratio_max"])}
    return found | {"gain_recovered": _clean(gain), "compute_ratio": _clean(ratio),
                    "compute_ratio_cpu": _clean(cpu_ratio),
                    "auc_gap_full_minus_static": _clean(gap),
                    "targets": TARGETS | {"met": met | {"all": all(met.values())}}}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="recstream bench replay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("RECSTREAM_ML100K", "../shared/data/ml-100k"),
                   help="MovieLens folder (either format load_movielens reads)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--plot", default=None, help="write the AUC-per-window plot (PNG) here")
    p.add_argument("--arch", choices=["base", "din", "dien"], default="din")
    p.add_argument("--windows", type=int, default=10)
    p.add_argument("--initial-frac", type=float, default=0.5,
                   help="share of the samples (by time) the initial model trains on")
    p.add_argument("--vocab", choices=["seen", "all"], default="seen",
                   help="a bank's ids: those seen up to its training's end (a new item is "
                        "OOV until a full retrain), or all the data's (bench quality's)")
    p.add_argument("--max-len", type=int, default=50)
    g = p.add_argument_group("full-training recipe (bench quality's defaults)")
    g.add_argument("--epochs", type=int, default=2)
    g.add_argument("--dim", type=int, default=16)
    g.add_argument("--init-std", type=float, default=INIT_STD)
    g.add_argument("--batch-size", type=int, default=256)
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--lr-schedule", choices=["linear", "constant"], default="linear")
    g.add_argument("--bias-lr", type=float, default=0.3)
    g.add_argument("--aux-weight", type=float, default=10.0, help="DIEN's auxiliary weight")
    g.add_argument("--din-var-floor", type=float, default=0.01)
    g.add_argument("--mba-lambda", type=float, default=0.0)
    i = p.add_argument_group("incremental policy (TrainSettings of the trainer)")
    i.add_argument("--incremental-lr", type=float, default=1e-3)
    i.add_argument("--buffer-samples", type=int, default=20_000)
    i.add_argument("--holdout-frac", type=float, default=0.2)
    i.add_argument("--anchor-samples", type=int, default=2_000)
    p.add_argument("--top-bound", action="store_true",
                   help="also the diagnostic top_refit policy (see above)")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run: ``python -m bench.replay --json PATH --plot PNG``."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    allocator = keep_freed_memory()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda asked but torch sees no CUDA device", file=sys.stderr)
        return 2
    load_before = os.getloadavg()  # a shared host: other jobs move the wall seconds
    frame = load_movielens(args.data)
    samples = build_samples(frame, max_len=args.max_len, seed=0)
    found = summarise(replay(samples, args))
    settings = incremental_settings(args)
    result = {
        "benchmark": "replay", "arguments": vars(args),
        **found,
        "protocol": {
            "data": Path(args.data).name, "events": len(frame), "label": "rating >= 4",
            "max_len": args.max_len, "arch": args.arch, "vocab": args.vocab,
            "initial": f"first {args.initial_frac:.0%} of the samples by time",
            "windows": args.windows,
            "order": "every window scored by the three policies before any update on it; "
                     "updates on every window but the last",
            "recipe": vars(recipe(args)),
            "incremental": settings.model_dump(include={
                "incremental_lr", "buffer_samples", "holdout_frac",
                "anchor_samples", "batch_size", "guard"}),
            "compute": "wall seconds of the update calls (incremental: propose + adopt, "
                       "guard included; full: build + fit), evaluation excluded; "
                       "compute_ratio_cpu: the same with the process's CPU seconds, "
                       "less moved by other jobs on a shared host"},
        "machine": machine(args.device) | {"malloc_keeps_freed_memory": allocator,
                                           "load_average_1_5_15_min": {
                                               "start": load_before, "end": os.getloadavg()}}}
    write_result(result, Path(args.json) if args.json else None)
    if args.plot:
        from bench.replay_plot import plot

        plot(result, Path(args.plot))
    means = {p: round(v["mean"]["auc"], 4) for p, v in result["policies"].items()}
    print(f"mean auc {means}; gain_recovered {result['gain_recovered']}, compute_ratio "
          f"{result['compute_ratio']}; targets met {result['targets']['met']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
