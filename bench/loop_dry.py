"""The live loop without the stack: the same world, the trainer's own update step and guard,
in one process on simulated time, for trying the trainer's and the guard's settings in a
minute or two instead of a 12-minute run of ``recstream bench loop``.

Run: ``python -m bench.loop_dry --minutes 10 [--buffer 5000 --anchor 2000 --lr 1e-3
--guard '{"anchor_logloss_tol": 0.005}' --old-anchor --no-guard --users 400
--world '{"trend_period_s": 40}' --trace]`` (``--help``: every option);
prints one JSON line (the loop report's main figures, with the oracle's expected CTR and the
share of the static-to-oracle gap the incremental arm closed).

What it keeps from the live loop (bench/loop.py): the world (bench/world.py) and its seed,
the first DIN on 20,000 logged impressions, the 50/50 sticky split, 20 candidates and the
top 5 shown, clicks by the true probabilities, samples emitted as the consumer emits them (a
click at once, a non-click when its 2-s attribution window closes) with the user's clicks
as the history, and the trainer's step (:class:`train.update.TopUpdater`) every
``--interval`` s on what was emitted. What it leaves out: Kafka, Feast, Serve and their
timings; the request rate is fixed (``--rps``, the committed live run's) and a promoted
model serves ``--lag`` s after its cut (the live run's freshness p50 was ~6 s). So its
figures are for comparing settings with each other, not for the targets.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bench.world import World, WorldConfig

K = 5


def _shown(world: World, model: Any, reqs: list[tuple[float, int, list[int], np.ndarray]],
           hist: dict[int, list[tuple[int, int]]], rng: np.random.Generator
           ) -> list[tuple[float, int, list[int], np.ndarray, np.ndarray, list]]:
    """Each request's top K by ``model``, its true probabilities and clicks."""
    from models.inference import score_batch

    hists = [hist.get(u, [])[-50:] for _, u, _, _ in reqs]
    scores = score_batch(model, [([i for i, _ in h], [c for _, c in h], cands,
                                  [int(world.category[i]) for i in cands])
                                 for h, (_, _, cands, _) in zip(hists, reqs, strict=True)])
    out = []
    for (t, user, cands, p_all), sc, h in zip(reqs, scores, hists, strict=True):
        top = np.argsort(-sc, kind="stable")[:K]
        out.append((t, user, [cands[i] for i in top], p_all[top],
                    rng.random(K) < p_all[top], h))
    return out


def run(a: argparse.Namespace) -> dict[str, Any]:
    """The dry loop (module docstring); returns its figures."""
    from models.registry import load_checkpoint
    from train.data import to_sample_set
    from train.job import train_full
    from train.settings import GuardSettings, TrainSettings
    from train.update import TopUpdater, on_same_bank

    torch.set_num_threads(1)
    torch.manual_seed(a.seed)  # the first model's initial weights
    rules = json.loads(a.world)
    if {"seed", "n_users"} & rules.keys():
        raise ValueError("--world: give the seed and the users with --seed and --users")
    world = World(WorldConfig(seed=a.seed, n_users=a.users, **rules))
    logged = world.logged(a.warmup_events, start_ts=int(time.time()) - 600)
    tmp = Path(tempfile.mkdtemp(prefix="recstream-dry-"))
    train_full(logged, TrainSettings(arch="din", dim=16, epochs=2, out_dir=tmp / "first"),
               publish=False)
    static = load_checkpoint(tmp / "first")
    s = TrainSettings(arch="din", buffer_samples=a.buffer, anchor_samples=a.anchor,
                      incremental_lr=a.lr, guard=GuardSettings(**json.loads(a.guard)))
    updater = TopUpdater(on_same_bank(static), s)
    serving, coming = updater.live, None
    incremental = np.random.default_rng([a.seed, 99]).random(a.users + 1) < 0.5
    rng = np.random.default_rng([a.seed, 1])
    hist: dict[int, list[tuple[int, int]]] = {}
    emitted: list[dict[str, Any]] = []
    rows, reasons, promotions, seconds = [], Counter[str](), 0, []
    t, next_update, per_tick = 0.0, a.interval, max(1, round(0.5 * a.rps))
    while t < a.minutes * 60:
        if coming is not None and t >= coming[0]:
            serving, coming = coming[1], None
        reqs = []
        for j in range(per_tick):
            user = int(rng.integers(1, a.users + 1))
            cands = world.candidates(user, t + j / a.rps)
            reqs.append((t + j / a.rps, user, cands, world.p_click(user, cands, t + j / a.rps)))
        p_of = {(r[0], r[1]): r[3] for r in reqs}
        for arm, model in ((False, static), (True, serving)):
            mine = [r for r in reqs if incremental[r[1]] == arm]
            for when, user, shown, p, clicked, h in (_shown(world, model, mine, hist, rng)
                                                     if mine else []):
                for item, c in zip(shown, clicked, strict=True):
                    emitted.append({"user_id": user, "item_id": item,
                                    "category_id": int(world.category[item]), "label": int(c),
                                    "event_ts_ms": int(when * 1000), "emit": when + (0 if c else 2),
                                    "hist_item_ids": [i for i, _ in h],
                                    "hist_cat_ids": [x for _, x in h]})
                    if c:
                        hist.setdefault(user, []).append((item, int(world.category[item])))
                        world.record_click(user, item)
                rows.append((when, user, arm, float(p.mean()), int(clicked.sum()),
                             float(np.sort(p_of[when, user])[-K:].mean())))
        t += per_tick / a.rps
        ready = [x for x in emitted if x["emit"] <= t]
        if t < next_update or len(ready) < 500:
            continue
        emitted = [x for x in emitted if x["emit"] > t]
        ready.sort(key=lambda x: x["emit"])
        start = time.perf_counter()
        update = updater.propose(to_sample_set(ready, by_event_time=False).samples)
        if a.no_guard or update.verdict.promote:
            updater.adopt(update)
            promotions += 1
            coming = (t + a.lag, updater.live)
        else:
            reasons[update.verdict.reason] += 1
            if not a.old_anchor:
                updater.reject(update)
        seconds.append(time.perf_counter() - start)
        if a.trace:
            v = update.verdict
            print(f"t={t:6.1f} {v.reason:18s}", {k: round(d[0], 3) for k, d in
                                                  v.differences.items()}, flush=True)
        next_update = t + a.interval
    return _figures(a, rows, logged, promotions, reasons, seconds)


def _figures(a: argparse.Namespace, rows: list, logged: pd.DataFrame, promotions: int,
             reasons: Counter[str], seconds: list[float]) -> dict[str, Any]:
    from stream.ab import analyse

    f = pd.DataFrame(rows, columns=["t", "user", "inc", "shown_p", "clicks", "oracle_p"])
    imp = f.loc[f.index.repeat(K)].assign(k=lambda x: x.groupby(level=0).cumcount())
    frame = pd.DataFrame({"user_id": imp.user, "label": (imp.k < imp.clicks).astype(int),
                          "event_ts_ms": (imp.t * 1000).astype("int64"),
                          "variant": np.where(imp.inc, "incremental", "static"),
                          "model_version": "-"}).reset_index(drop=True)
    ab = analyse(frame, control="static", pre=logged[["user_id", "label"]])
    inc = next(v for v in ab["variants"] if v["variant"] == "incremental")
    expected = f.groupby("inc").shown_p.mean()
    oracle = float(f.oracle_p.mean())
    return {"settings": {k: v for k, v in vars(a).items() if k != "trace"},
            "expected_ctr": {"static": expected[False], "incremental": expected[True],
                             "oracle": oracle},
            "gap_closed": (expected[True] - expected[False]) / (oracle - expected[False])
            if oracle > expected[False] else None,
            "lift": inc["lift"]["lift"], "lift_ci95": [inc["lift"]["low"], inc["lift"]["high"]],
            "lift_cuped_ci95": [inc["cuped"]["lift"]["low"], inc["cuped"]["lift"]["high"]],
            "cuped_variance_reduction": [v["cuped"]["variance_reduction"]
                                         for v in ab["variants"]],
            "promotions": promotions, "rejections": dict(reasons),
            "update_seconds_p50": float(np.median(seconds)) if seconds else None}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The options (see ``--help``)."""
    p = argparse.ArgumentParser(prog="python -m bench.loop_dry",
                                description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rps", type=float, default=28.6)
    p.add_argument("--interval", type=float, default=5.0)
    p.add_argument("--lag", type=float, default=3.0)
    p.add_argument("--buffer", type=int, default=5000)
    p.add_argument("--anchor", type=int, default=2000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--guard", default="{}", help="GuardSettings fields as JSON")
    p.add_argument("--old-anchor", action="store_true",
                   help="rejected slices stay out of the anchor (before 2026-12-07)")
    p.add_argument("--no-guard", action="store_true", help="promote every candidate")
    p.add_argument("--users", type=int, default=400)
    p.add_argument("--world", default="{}", help="WorldConfig fields as JSON")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--warmup-events", type=int, default=20_000)
    p.add_argument("--trace", action="store_true", help="a line per update")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    print(json.dumps(run(parse(argv)), default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
