"""Quality benchmark: BaseModel, DIN and DIEN beside DeepCTR-Torch 0.3.0 on MovieLens.

Run: ``python -m bench.quality --data ../shared/data/ml-100k --json
bench/results/quality_ml100k_cpu.json`` (or ``recstream bench quality ...``).

Protocol (docs/models.md): events in time order, label = rating >= 4, history = the user's
earlier clicked items (most recent 50, oldest first), category = first genre, first 80% of
events train and the last 20% test. Ours and the peer train on the same samples, the same
split, the same machine and settings (epochs, embedding dim, Adam lr 1e-3, batch size); ours
with its recipe (the rate decayed linearly to 0, the bank's item term at Adam rate 0.3:
``--lr-schedule``, ``--bias-lr``; DIEN's auxiliary loss at weight 10, ``--aux-weight``; DIN's
input-normalisation variance floor at inference 0.01, ``--din-var-floor``; the DIN
paper's mini-batch aware L2 is off, ``--mba-lambda``), the peer with its own fit
(constant rate, no item term, its DIEN's auxiliary weight 1, its default embedding L2: 1e-6,
WDL 1e-5);
train samples/s = samples trained / wall seconds of the fit call, for both. glibc's allocator
keeps freed memory (``models.allocator``) from the start, for both libraries. The peer
(``pip install --no-deps deepctr-torch==0.3.0``) is optional; without it its fields are null.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import write_result
from models.allocator import keep_freed_memory
from models.bank import INIT_STD
from models.data.movielens import load_movielens
from models.data.samples import SampleSet, build_samples, time_split
from models.inference import score_candidates
from models.metrics import ranking_metrics
from models.train import TrainConfig, build_model, config_overrides, evaluate, fit

PEER = "deepctr-torch 0.3.0"
PEER_ARCH = {"base": "WDL (sum-pooled history)", "din": "DIN", "dien": "DIEN (AUGRU, negsampling)"}


def _peer_inputs(s: SampleSet, item_vocab: np.ndarray, cat_vocab: np.ndarray,
                 neg: bool) -> dict[str, np.ndarray]:
    """The samples as DeepCTR input arrays: ids remapped to 1..n (0 = padding)."""
    def remap(vocab: np.ndarray, ids: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(vocab, ids)
        return np.where(ids > 0, pos + 1, 0).astype(np.int64)

    x = {"item_id": remap(item_vocab, s.item_id), "cate_id": remap(cat_vocab, s.cat_id),
         "hist_item_id": remap(item_vocab, s.hist_item),
         "hist_cate_id": remap(cat_vocab, s.hist_cat), "seq_length": s.hist_len.astype(np.int64)}
    if neg:
        x["neg_hist_item_id"] = remap(item_vocab, s.neg_item)
        x["neg_hist_cate_id"] = remap(cat_vocab, s.neg_cat)
    return x


def run_peer(arch: str, train: SampleSet, test: SampleSet, item_vocab: np.ndarray,
             cat_vocab: np.ndarray, args: argparse.Namespace, seed: int = 0) -> dict[str, Any]:
    """Trains and evaluates the peer's model of ``arch``; its metrics and train speed."""
    from deepctr_torch.inputs import SparseFeat, VarLenSparseFeat, get_feature_names
    from deepctr_torch.models import DIEN, DIN, WDL

    n_items, n_cats, dim, t = len(item_vocab) + 1, len(cat_vocab) + 1, args.dim, train.max_len
    sparse = [SparseFeat("item_id", n_items, embedding_dim=dim),
              SparseFeat("cate_id", n_cats, embedding_dim=dim)]
    combiner = "sum" if arch == "base" else "mean"
    hist = [VarLenSparseFeat(SparseFeat(f"{p}hist_item_id", n_items, embedding_dim=dim,
                                        embedding_name="item_id"), t, combiner, "seq_length")
            for p in (["", "neg_"] if arch == "dien" else [""])]
    hist += [VarLenSparseFeat(SparseFeat(f"{p}hist_cate_id", n_cats, embedding_dim=dim,
                                         embedding_name="cate_id"), t, combiner, "seq_length")
             for p in (["", "neg_"] if arch == "dien" else [""])]
    columns = sparse + hist
    behaviour = ["item_id", "cate_id"]
    device = "cuda:0" if args.device == "cuda" else "cpu"
    model: Any
    if arch == "base":
        model = WDL(sparse, columns, device=device, seed=seed)
    elif arch == "din":
        model = DIN(columns, behaviour, device=device, seed=seed)
    else:
        model = DIEN(columns, behaviour, gru_type="AUGRU", use_negsampling=True, device=device,
                     seed=seed)
    model.compile("adam", "binary_crossentropy")
    names = get_feature_names(columns)
    x_train = _peer_inputs(train, item_vocab, cat_vocab, arch == "dien")
    x_test = _peer_inputs(test, item_vocab, cat_vocab, arch == "dien")
    start = time.perf_counter()
    model.fit({k: x_train[k] for k in names}, train.label.astype(np.float32),
              batch_size=args.batch_size, epochs=args.epochs, verbose=0, shuffle=True)
    seconds = time.perf_counter() - start
    probs = model.predict({k: x_test[k] for k in names}, batch_size=4096).ravel()
    metrics = ranking_metrics(test.user_id, test.label, probs.astype(np.float64))
    return {"peer_" + k: v for k, v in metrics.items()} | {
        "peer_train_seconds": seconds,
        "peer_train_samples_per_s": len(train) * args.epochs / seconds,
        "peer_model": PEER_ARCH[arch]}


def latency_ms(model: Any, test: SampleSet, candidates: int = 100, repeats: int = 50
               ) -> dict[str, float]:
    """p50 / p90 ms of score_candidates for one user with ``candidates`` candidates."""
    rng = np.random.default_rng(0)
    times = []
    for r in range(repeats + 5):
        i = int(rng.integers(len(test)))
        n = int(test.hist_len[i])
        cand = rng.integers(len(test), size=candidates)
        start = time.perf_counter()
        score_candidates(model, test.hist_item[i, :n].tolist(), test.hist_cat[i, :n].tolist(),
                         test.item_id[cand].tolist(), test.cat_id[cand].tolist())
        if r >= 5:
            times.append((time.perf_counter() - start) * 1e3)
    q = statistics.quantiles(times, n=10)
    return {"p50": statistics.median(times), "p90": q[-1], "candidates": float(candidates)}


def machine(device: str) -> dict[str, Any]:
    """Facts about where the benchmark ran."""
    cpu = platform.processor()
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    facts: dict[str, Any] = {
        "cpu_model": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "device": device}
    try:
        import deepctr_torch

        facts["peer"] = f"deepctr-torch {deepctr_torch.__version__}"
    except ImportError:
        facts["peer"] = None
    if device == "cuda" and torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(0)
    return facts


def targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets, checked on the measured rows (True / False / None if unknown)."""
    by = {r["model"]: r for r in rows}
    out: dict[str, Any] = {}
    for arch, r in by.items():
        if r.get("peer_auc") is not None:
            out[f"{arch}_auc_beats_peer_by_0.01"] = r["auc"] - r["peer_auc"] >= 0.01
        if r.get("peer_train_samples_per_s") and arch in ("din", "dien"):
            out[f"{arch}_speed_at_least_5x_peer"] = (
                r["train_samples_per_s"] >= 5 * r["peer_train_samples_per_s"])
    if {"base", "din", "dien"} <= by.keys():
        out["dien_gt_din_gt_base_auc"] = by["dien"]["auc"] > by["din"]["auc"] > by["base"]["auc"]
    return out


def _mean_rows(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Over the seeds: the mean of each metric (plus ``<field>_std``), the median of each
    speed (plus ``<field>_runs``)."""
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        values = [r[key] for r in runs]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if key.endswith(("samples_per_s", "seconds")):
                # speed: the median, robust to a run slowed by a neighbour on a shared host
                out[key] = statistics.median(values)
                out[f"{key}_runs"] = values
            else:
                out[key] = statistics.fmean(values)
            if key.endswith(("auc", "logloss")) and len(values) > 1:
                out[f"{key}_std"] = statistics.stdev(values)
        else:
            out[key] = value
    return out


def run_arch(arch: str, frame: Any, train: SampleSet, test: SampleSet, seeds: list[int],
             peer: bool, args: argparse.Namespace) -> dict[str, Any]:
    """Ours (and the peer) of ``arch``, trained once per seed: the mean row."""
    ours: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    latency: dict[str, float] = {}
    for seed in seeds:
        torch.manual_seed(seed)
        extra = config_overrides(arch, aux_weight=args.aux_weight,
                                 input_var_floor=args.din_var_floor)
        model = build_model(arch, frame, dim=args.dim, init_std=args.init_std, **extra)
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          lr_schedule=args.lr_schedule, bias_lr=args.bias_lr,
                          mba_lambda=args.mba_lambda, device=args.device, seed=seed,
                          progress=sys.stderr.isatty())  # epochs and steps on a terminal
        stats = fit(model, train, cfg)
        ours.append({**evaluate(model, test), "train_seconds": stats["seconds"],
                     "train_samples_per_s": stats["samples_per_s"]})
        print(f"{arch} seed {seed}: auc {ours[-1]['auc']:.4f} "
              f"{ours[-1]['train_samples_per_s']:.0f} samples/s", flush=True)
        if not latency:
            latency = latency_ms(model, test)
        if peer:
            torch.manual_seed(seed)
            theirs.append(run_peer(arch, train, test, model.bank.vocab("item").numpy(),
                                   model.bank.vocab("cat").numpy(), args, seed))
            print(f"  peer {theirs[-1]['peer_model']}: auc {theirs[-1]['peer_auc']:.4f} "
                  f"{theirs[-1]['peer_train_samples_per_s']:.0f} samples/s", flush=True)
    row: dict[str, Any] = {"model": arch, **_mean_rows(ours), "latency_ms_1x100": latency,
                           "auc_runs": [r["auc"] for r in ours]}
    row.update({k: None for k in ("peer_auc", "peer_gauc", "peer_logloss", "peer_calibration",
                                  "peer_train_samples_per_s")})
    if theirs:
        row.update(_mean_rows(theirs))
        row["peer_auc_runs"] = [r["peer_auc"] for r in theirs]
    return row


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="recstream bench quality", description=__doc__)
    p.add_argument("--data", default="../shared/data/ml-100k", help="MovieLens folder")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--init-std", type=float, default=INIT_STD,
                   help="initial std of our embedding tables (the peer keeps its own 1e-4)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-3)
    # Our training recipe on ml-100k, chosen on a validation split (docs/models.md, "Training
    # recipe"); the peer's fit has no schedule and trains every weight at --lr.
    p.add_argument("--lr-schedule", choices=["linear", "constant"], default="linear",
                   help="our lr schedule (the library's default is constant)")
    p.add_argument("--bias-lr", type=float, default=0.3,
                   help="Adam rate of our first-order item term (library default: --lr)")
    p.add_argument("--aux-weight", type=float, default=10.0,
                   help="our DIEN's auxiliary loss weight (library default: 1)")
    p.add_argument("--din-var-floor", type=float, default=0.01,
                   help="inference variance floor of our DIN's MLP input BatchNorm "
                        "(DINConfig.input_var_floor; library default 0: off)")
    p.add_argument("--mba-lambda", type=float, default=0.0,
                   help="our mini-batch aware L2 on the tables (0: off; 100 won on the "
                        "validation split, not on the test split: docs/models.md)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--models", default="base,din,dien")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--no-peer", action="store_true", help="skip DeepCTR-Torch")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run: ``python -m bench.quality --json bench/results/quality_ml100k_cpu.json``."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    # Process-wide and permanent: set before either library trains, so both run under it.
    allocator = keep_freed_memory()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda asked but torch sees no CUDA device", file=sys.stderr)
        return 2
    archs = [a.strip() for a in args.models.split(",") if a.strip()]
    peer = not args.no_peer
    if peer:
        try:
            import deepctr_torch  # noqa: F401
        except ImportError:
            print("DeepCTR-Torch is not installed; peer skipped "
                  "(pip install --no-deps deepctr-torch==0.3.0)", file=sys.stderr)
            peer = False
    frame = load_movielens(args.data)
    samples = build_samples(frame, max_len=args.max_len, seed=0)
    train, test = time_split(samples, 0.8)
    seeds = [int(x) for x in str(args.seeds).split(",") if x.strip()]
    rows = [run_arch(arch, frame, train, test, seeds, peer, args) for arch in archs]
    result = {
        "models": rows, "targets": targets(rows),
        "machine": machine(args.device) | {"malloc_keeps_freed_memory": allocator},
        "protocol": {"data": Path(args.data).name, "events": len(frame), "train": len(train),
                     "test": len(test), "label": "rating >= 4", "max_len": args.max_len,
                     "split": "first 80% of events by time train", "epochs": args.epochs,
                     "dim": args.dim, "init_std": args.init_std,
                     "batch_size": args.batch_size, "optimizer": "Adam",
                     "lr": args.lr, "lr_schedule": args.lr_schedule,
                     "bias_lr": args.bias_lr, "dien_aux_weight": args.aux_weight,
                     "mba_lambda": args.mba_lambda, "din_input_var_floor": args.din_var_floor,
                     "seeds": seeds, "peer": PEER if peer else None,
                     "aggregate": "metrics: mean over the seeds (*_std: standard deviation); "
                                  "speeds and seconds: median over the seeds (*_runs: "
                                  "per-seed values)"}}
    write_result(result, Path(args.json) if args.json else None)
    print(json.dumps(result["targets"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
