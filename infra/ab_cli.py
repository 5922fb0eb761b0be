"""``recstream ab``: the live experiment of the ranking service, and its A/B analysis.

``recstream ab set a=0.5,b=0.5 [--salt S] [--shadow NAME | --no-shadow] [--reason TEXT]``:
change the serving experiment without a restart (serve/experiment.py; the ingress replicas
apply it within ``reload_poll_s``; every change is recorded), ``recstream ab show``: the
config's experiment, the override and the recorded changes, ``recstream ab reset``: back to
the config's.

``recstream ab report [--weights a=0.5,b=0.5] [--control a] [--json] [--plot PNG]
[--parquet DIR] [--since MS] [--cuped [--pre-start MS]] [--online]``: reads the samples
topic (``STREAM_KAFKA__*``) or the offline export (``--parquet``), prints a table (or one
JSON document with ``--json``) and writes the PNG of CTR over time; ``--online`` adds the AUC
of the served scores (:mod:`stream.ab_online`). Exits 1 on bad arguments; the
report itself exits 0 also when its SRM check fires (the report says so).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

console = Console()


def add_parser(sub: Any) -> None:
    """Adds ``ab`` and its action ``report`` to the ``recstream`` subparsers ``sub``."""
    ab = sub.add_parser("ab", help="A/B analysis of the ranking variants from the samples",
                        description="CTR per variant and model version with delta-method "
                                    "intervals, lift vs the control, SRM check, CUPED.")
    ab.add_argument("action", choices=["report", "set", "show", "reset"])
    ab.add_argument("split", nargs="?", default=None,
                    help="set: the new weights, e.g. a=0.5,b=0.5 (names of the config)")
    ab.add_argument("--salt", default=None, help="set: a new salt (reshuffles every user)")
    ab.add_argument("--shadow", default=None, help="set: the shadow variant")
    ab.add_argument("--no-shadow", action="store_true", help="set: no shadow variant")
    ab.add_argument("--reason", default="", help="set/reset: why (kept in the record)")
    ab.add_argument("--weights", default=None,
                    help="configured split, e.g. a=0.5,b=0.5 (default: the serving config's "
                         "weights, else equal over the variants seen)")
    ab.add_argument("--control", default=None,
                    help="the control variant (default: the first in sorted order)")
    ab.add_argument("--json", action="store_true", help="one JSON document, no table")
    ab.add_argument("--plot", default=None, metavar="PNG", help="CTR over time per variant")
    ab.add_argument("--parquet", default=None, metavar="DIR",
                    help="read the offline export (parquet parts) instead of the topic")
    ab.add_argument("--since", type=int, default=None, metavar="MS",
                    help="experiment start, event time in ms since the epoch")
    ab.add_argument("--cuped", action="store_true",
                    help="CUPED with each user's CTR before --since as the covariate")
    ab.add_argument("--pre-start", type=int, default=None, metavar="MS",
                    help="--cuped: the pre-period starts here (default: the first sample)")
    ab.add_argument("--bins", type=int, default=24, help="time bins of the plot")
    ab.add_argument("--online", action="store_true",
                    help="also the AUC of the served scores per variant and model version "
                         "(the predictions topic joined to the samples; not with --parquet)")


def parse_weights(text: str) -> dict[str, float]:
    """``"a=0.5,b=0.5"`` -> ``{"a": 0.5, "b": 0.5}``."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--weights: {part!r} is not NAME=WEIGHT")
        out[name.strip()] = float(value)
    if not out or any(w < 0 for w in out.values()) or sum(out.values()) <= 0:
        raise ValueError("--weights: give NAME=WEIGHT pairs, weights >= 0 with a positive sum")
    return out


def configured_weights() -> dict[str, float] | None:
    """The live weights: an ``ab set`` override, else the serving config's (SERVE_*); None
    when neither can be read. The shadow variant scores a copy and never serves: left out."""
    import yaml

    from serve.config import ServeSettings, load_app_config
    from serve.experiment import ExperimentStore

    s = ServeSettings()
    try:
        cfg = load_app_config(s.config_path)
    except (OSError, ValueError, yaml.YAMLError):  # missing, invalid (pydantic), not YAML
        return None
    live = {**cfg.experiment(), **(ExperimentStore(s.experiment_path).read() or {})}
    weights: dict[str, float] = dict(live["weights"])
    return {n: w for n, w in weights.items() if n != live.get("shadow")}


def _experiment(args: argparse.Namespace) -> int:
    """``ab set`` / ``ab show`` / ``ab reset``."""
    import json

    from serve.config import ServeSettings, load_app_config
    from serve.experiment import ExperimentStore

    s = ServeSettings()
    cfg = load_app_config(s.config_path)
    store = ExperimentStore(s.experiment_path)
    if args.action == "show":
        console.print_json(json.dumps({"config": cfg.experiment(), "override": store.read(),
                                       "changes": store.history()}))
        return 0
    if args.action == "reset":
        store.set(None, reason=args.reason)
        console.print(f"experiment: back to {s.config_path}'s {cfg.experiment()}")
        return 0
    names = {v.name for v in cfg.variants}
    override: dict[str, Any] = dict(store.read() or {})
    try:
        if args.split:
            weights = parse_weights(args.split.replace(" ", ","))
            if unknown := set(weights) - names:
                raise ValueError(f"unknown variants {sorted(unknown)}; the config has "
                                 f"{sorted(names)}")
            override["weights"] = {n: weights.get(n, 0.0) for n in sorted(names)}
        if args.shadow is not None and args.shadow not in names:
            raise ValueError(f"shadow {args.shadow!r} is not a variant ({sorted(names)})")
    except ValueError as exc:
        console.print(f"[red]ab set: {exc}[/red]")
        return 1
    if args.salt is not None:
        override["salt"] = args.salt
    if args.shadow is not None or args.no_shadow:
        override["shadow"] = None if args.no_shadow else args.shadow
    change = store.set(override, reason=args.reason)
    console.print(f"experiment set (applied by the ingress within {cfg.reload_poll_s} s): "
                  f"{change['after']}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.action != "report":
        return _experiment(args)
    from stream import ab, ab_report

    try:
        weights = parse_weights(args.weights) if args.weights else None
        if args.cuped and args.since is None:
            raise ValueError("--cuped needs --since (the experiment start)")
        if args.bins < 1:
            raise ValueError("--bins must be at least 1")
        if args.online and args.parquet:
            raise ValueError("--online reads the predictions topic: not with --parquet")
    except ValueError as exc:
        console.print(f"[red]ab report: {exc}[/red]")
        return 1
    if args.parquet:
        frame = ab.read_parquet(Path(args.parquet))
    else:
        from stream.settings import stream_settings

        frame = ab.read_topic(stream_settings().kafka)
    experiment, pre = ab.split_period(frame, args.since, args.pre_start)
    try:
        report = ab.analyse(experiment, weights=weights, configured=configured_weights(),
                            control=args.control, pre=pre if args.cuped else None,
                            bins=args.bins)
    except ValueError as exc:
        console.print(f"[red]ab report: {exc}[/red]")
        return 1
    if args.online:
        from stream.ab_online import online_auc, read_predictions
        from stream.settings import stream_settings

        kafka = stream_settings().kafka
        report["online"] = online_auc(read_predictions(kafka), experiment)
    if args.json:
        print(ab_report.to_json(report))
    else:
        ab_report.print_report(report, console)
    if args.plot:
        ab_report.plot(report, Path(args.plot))
        if not args.json:
            console.print(f"plot: {args.plot}")
    return 0
