"""Serving benchmark (issue 28): the model in-process, a plain FastAPI app, recstream on Ray Serve.

Run: ``recstream bench serve --json bench/results/serve_cpu.json`` (or ``python -m
bench.serve ...``); ``--model-only`` measures the model side alone (no Ray, Feast or HTTP);
``--device cuda --model-only --json bench/results/serve_cuda.json`` runs that side on an
NVIDIA GPU and imports nothing but torch, numpy and ``models`` (a GPU machine needs no Ray,
Feast or Kafka).

The same DIN and DIEN (dim 16, trained on synthetic events; random weights with
``--model-only``), requests of 200 candidates for users whose Feast sequence holds 50
clicks, on the same machine in one run:

1. ``inprocess``: :func:`models.inference.score_candidates` called in this process with the
   features already in hand (the floor), by N threads;
2. ``fastapi``: a plain FastAPI + uvicorn app (:mod:`bench.serve_fastapi`: Feast read with
   ``FeatureAccess.ranker_features``, then ``score_candidates``), 1 worker and 2 workers;
3. ``recstream``: ``serve.deploy.deploy`` on a local Ray over HTTP, the variant following
   the registry's ``<family>/live`` pointer (infra/serve.yaml's settings).

For each, at concurrency 1, 8 and 32 (N connections, each sending its next request when
the last is answered): p50, p99 and requests/s over a fixed window after a warm-up; then
``p50_ratio_c1`` and ``rps_ratio_c32`` of (3) over (2), and a (3) run with a registry
promotion every second (``reload``). The HTTP part lives in :mod:`bench.serve_http`.

``batched``: the model side with several requests a forward pass (``score_batch``), per
batch size: the call's p50/p99 and requests/s, and ``p99_request_bound_ms`` = 2 x the call's
p99 (a request that arrives while a batch runs waits for it, then for its own) on which the
GPU target (DIEN p99 <= 3 ms at >= 5,000 requests/s) is judged.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import write_result
from bench.machine import machine
from models.inference import score_batch
from models.ranker import Ranker

MODELS = ("din", "dien")
CONCURRENCY = (1, 8, 32)
CANDIDATES = 200
HISTORY = 50
N_CATEGORIES, ITEMS_PER_CATEGORY = 20, 50  # stream.synthetic's default world: 1,000 items
GPU_TARGET = {"p99_ms": 3.0, "rps": 5000.0}  # DIEN per 200-candidate request, with batching
# (user_id, hist items, hist cats, candidate items, candidate cats)
Request = tuple[int, list[int], list[int], list[int], list[int]]


def category(item: int) -> int:
    """The synthetic world's category of an item (blocks of ITEMS_PER_CATEGORY ids)."""
    return (item - 1) // ITEMS_PER_CATEGORY + 1


def make_requests(n: int, users: int, seed: int = 0) -> list[Request]:
    """``n`` requests: user ``1 + k % users``, a history of HISTORY clicks (the user's own,
    the same for every request of the user) and CANDIDATES distinct candidates."""
    n_items = N_CATEGORIES * ITEMS_PER_CATEGORY
    rng = np.random.default_rng(seed)
    hist = {u: [int(i) for i in rng.integers(1, n_items + 1, HISTORY)]
            for u in range(1, users + 1)}
    out: list[Request] = []
    for k in range(n):
        user = 1 + k % users
        cands = [int(i) for i in rng.choice(np.arange(1, n_items + 1), CANDIDATES,
                                            replace=False)]
        out.append((user, hist[user], [category(i) for i in hist[user]], cands,
                    [category(i) for i in cands]))
    return out


def random_model(arch: str, dim: int = 16, device: str = "cpu") -> Ranker:
    """An untrained ``arch`` model over the synthetic world's ids (latency does not depend
    on the weights); torch and ``models`` only, no pandas."""
    from models.archs import ARCHS
    from models.bank import CAT, ITEM, EmbeddingBank

    items = np.arange(1, N_CATEGORIES * ITEMS_PER_CATEGORY + 1)
    bank = EmbeddingBank({ITEM: items, CAT: (items - 1) // ITEMS_PER_CATEGORY + 1}, dim=dim)
    cfg_cls, model_cls = ARCHS[arch]
    model = model_cls(cfg_cls(dim=dim), bank).to(device)
    model.eval()
    return model


def summary(latencies_s: Sequence[float], window_s: float, failed: int = 0) -> dict[str, Any]:
    """p50/p99 (ms) of the latencies, requests/s = answered in the window / its length."""
    lat = np.asarray(latencies_s, dtype=np.float64) * 1000
    out: dict[str, Any] = {
        "p50_ms": round(float(np.percentile(lat, 50)), 3) if lat.size else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 3) if lat.size else None,
        "rps": round(lat.size / window_s, 2) if window_s > 0 else None,
        "requests": int(lat.size)}
    if failed:
        out["failed"] = failed
    return out


def inprocess(model: Ranker, requests: Sequence[Request], concurrency: int, duration_s: float,
              warmup_s: float) -> dict[str, Any]:
    """``concurrency`` threads (1: the calling thread) each scoring one request after the
    other with ``score_batch`` (torch frees the GIL in its kernels); latencies of the
    requests started in the window after ``warmup_s`` (longer when a thread had none in it:
    one at least)."""
    start = time.perf_counter()
    begin, end = start + warmup_s, start + warmup_s + duration_s
    per_thread: list[list[float]] = [[] for _ in range(concurrency)]
    last = [end] * concurrency  # when each thread's last measured request ended

    def worker(k: int) -> None:
        i = k
        while True:
            t0 = time.perf_counter()
            if t0 >= end and per_thread[k]:  # every thread measures one request at least
                return
            _, hi, hc, ci, cc = requests[i % len(requests)]
            score_batch(model, [(hi, hc, ci, cc)], max_len=HISTORY)
            if t0 >= begin:
                last[k] = time.perf_counter()
                per_thread[k].append(last[k] - t0)
            i += concurrency

    if concurrency == 1:  # the calling thread: torch ran ~1.3-2x slower from a second one
        worker(0)
    threads = [threading.Thread(target=worker, args=(k,), daemon=True)
               for k in range(concurrency if concurrency > 1 else 0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summary([x for lat in per_thread for x in lat], max(last) - begin)


def batched(model: Ranker, requests: Sequence[Request], batch_sizes: Sequence[int],
            duration_s: float, device: str, min_calls: int = 5) -> dict[str, Any]:
    """One thread, ``b`` requests a ``score_batch`` call (inputs built on the host and
    copied to ``device``, scores back on the host, as a Scorer does), per batch size:
    the call's p50/p99, requests/s, and the p99 bound of a request (module docstring)."""
    out: dict[str, Any] = {}
    for b in batch_sizes:
        def call(i: int, b: int = b) -> None:
            score_batch(model, [requests[(i + k) % len(requests)][1:] for k in range(b)],
                        max_len=HISTORY)

        for i in range(3):  # warm-up (CUDA kernels chosen, allocator primed)
            call(i)
        lat: list[float] = []
        end = time.perf_counter() + duration_s
        i = 0
        while time.perf_counter() < end or len(lat) < min_calls:
            t0 = time.perf_counter()
            call(i)
            lat.append(time.perf_counter() - t0)
            i += b
        p50, p99 = (float(np.percentile(lat, q)) * 1000 for q in (50, 99))
        out[str(b)] = {"call_p50_ms": round(p50, 3), "call_p99_ms": round(p99, 3),
                       "p99_request_bound_ms": round(2 * p99, 3),
                       "rps": round(b * len(lat) / sum(lat), 1), "calls": len(lat)}
    return out


def gpu_target(rows: dict[str, Any]) -> dict[str, Any]:
    """DIEN: the best batch size for requests/s among those whose request p99 bound is
    within the target, and whether it reaches the target's requests/s."""
    ok = {b: r for b, r in rows.items() if r["p99_request_bound_ms"] <= GPU_TARGET["p99_ms"]}
    best = max(ok, key=lambda b: ok[b]["rps"]) if ok else None
    return {"target": f"p99 <= {GPU_TARGET['p99_ms']} ms a request at >= "
                      f"{GPU_TARGET['rps']:.0f} requests/s (batched)",
            "batch_size": int(best) if best else None,
            "p99_request_bound_ms": ok[best]["p99_request_bound_ms"] if best else None,
            "rps": ok[best]["rps"] if best else None,
            "met": bool(best and ok[best]["rps"] >= GPU_TARGET["rps"])}


def model_side(args: argparse.Namespace, models: dict[str, Ranker],
               requests: Sequence[Request]) -> dict[str, Any]:
    """In-process cells (CPU only: the GPU side is batched) and the batched sweep."""
    out: dict[str, Any] = {}
    for arch, model in models.items():
        row: dict[str, Any] = {}
        if args.device == "cpu":
            row["inprocess"] = {str(c): inprocess(model, requests, c, args.inprocess_s,
                                                  args.warmup_s) for c in args.concurrency}
        row["batched"] = batched(model, requests, args.batch_sizes, args.batched_s,
                                 args.device)
        out[arch] = row
        print(f"{arch}: model side done", file=sys.stderr, flush=True)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="recstream bench serve", description=__doc__.splitlines()[0])
    p.add_argument("--json", help="write the result here")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cuda: the model side only, on torch alone (implies --model-only)")
    p.add_argument("--model-only", action="store_true",
                   help="the in-process / batched model side only (no Ray, Feast, HTTP)")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)))
    p.add_argument("--duration", type=float, default=10.0, help="seconds of an HTTP cell")
    p.add_argument("--inprocess-s", type=float, default=5.0, help="seconds of an in-process cell")
    p.add_argument("--warmup-s", type=float, default=2.0, help="warm-up before each cell")
    p.add_argument("--batch-sizes", default=None,
                   help="requests a forward in the batched sweep (default cpu 1,4,16; "
                        "cuda 1,8,16,32,64,128)")
    p.add_argument("--batched-s", type=float, default=3.0, help="seconds a batch size")
    p.add_argument("--workers", default="1,2", help="uvicorn worker counts of the FastAPI app")
    p.add_argument("--reload-s", type=float, default=15.0,
                   help="seconds of the reload run (a promotion every second; 0: none)")
    p.add_argument("--reload-concurrency", type=int, default=8)
    p.add_argument("--throughput-optimized", action="store_true",
                   help="start the local Ray with RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (Ray "
                        "Serve's documented high-throughput mode, Ray >= 2.56)")
    p.add_argument("--events", type=int, default=20_000, help="synthetic events to train on")
    p.add_argument("--users", type=int, default=200, help="users with a Feast sequence")
    p.add_argument("--dim", type=int, default=16)
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    sizes = args.batch_sizes or ("1,8,16,32,64,128" if args.device == "cuda" else "1,4,16")
    args.batch_sizes = [int(b) for b in sizes.split(",") if b.strip()]
    if args.device == "cuda":
        args.model_only = True
    return args


def main(argv: list[str] | None = None) -> int:
    """Run: ``python -m bench.serve --json bench/results/serve_cpu.json``."""
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda asked but torch sees no CUDA device", file=sys.stderr)
        return 2
    facts = machine(args.device)
    requests = make_requests(256, args.users)
    settings = {k: v for k, v in vars(args).items() if k != "json"} | {
        "candidates": CANDIDATES, "history": HISTORY, "requests_pool": len(requests)}
    if args.model_only:
        models = {a: random_model(a, args.dim, args.device) for a in args.models}
        result: dict[str, Any] = model_side(args, models, requests)
        if "dien" in result:
            result["targets"] = {"dien_gpu": gpu_target(result["dien"]["batched"])
                                 if args.device == "cuda" else
                                 "judged on an NVIDIA GPU only (--device cuda)"}
        settings["weights"] = "random (latency does not depend on them)"
    else:
        from bench.serve_http import run_systems

        result = run_systems(args, requests, model_side)
    facts["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result |= {"machine": facts, "settings": settings}
    write_result(result, Path(args.json) if args.json else None)
    print(json.dumps(result.get("targets"), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
