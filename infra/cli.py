"""The ``recstream`` command line: one entry point, a subcommand per part.

Run: ``recstream --help``; e.g. ``recstream stack up``, ``recstream produce --source
synthetic --rate 500``, ``recstream stream run``, ``recstream train``, ``recstream serve``,
``recstream dlq`` (and ``recstream dlq replay``), ``recstream demo``,
``recstream bench stream --json PATH``.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from infra import ab_cli, models_cli, train_cli

if TYPE_CHECKING:
    from stream.settings import StreamSettings

console = Console()
DEMO_DIR = Path(".recstream/demo")
# kafka-python and Feast use importlib.resources APIs that warn on every start (Feast's
# own `simplefilter("once", ...)` at import is undone by features/_feast_env.py).
warnings.filterwarnings("ignore", category=DeprecationWarning)


def _stack(args: argparse.Namespace) -> int:
    from infra import stack

    s = stack.StackSettings()
    if args.action == "up":
        try:
            stack.up(s, ray=not args.no_ray, log=console.print)
        except stack.StackError as exc:
            console.print(f"[red]stack up failed[/red]: {exc}")
            return 1
    elif args.action == "down":
        stack.down(s, stop_all=args.all, log=console.print)
    else:
        st = stack.status(s)
        for line in st.lines(s):
            console.print(line)
        return 0 if st.ready else 1
    return 0


def _produce(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from stream.producer import ProduceError, events_from_frame, produce
    from stream.settings import stream_settings
    from train.job import load_frame

    s = stream_settings()
    frame = load_frame(args.source, args.events, Path(args.data))
    if args.limit:
        frame = frame.head(args.limit)
    events = events_from_frame(frame, live=args.live, id_prefix=args.id_prefix)
    with Progress(console=console) as progress:
        task = progress.add_task("producing", total=None)
        try:
            n = produce(events, s.kafka, rate=args.rate,
                        on_sent=lambda k: progress.update(task, completed=k))
        except ProduceError as exc:
            console.print(f"[red]produce: {exc}[/red]")
            return 1
    clicks = n - len(frame)  # one impression a row, one click more for each clicked row
    console.print(f"sent {n} events ({len(frame)} impressions, {clicks} clicks) to "
                  f"{s.kafka.topics.events} at {s.kafka.bootstrap_servers}")
    return 0


def _stream(args: argparse.Namespace) -> int:
    from stream.service import run_service
    from stream.settings import stream_settings

    # its first line says what it consumes, flushed at once even into a file
    run_service(stream_settings(), threading.Event(), announce=lambda s: print(s, flush=True))
    return 0


def _dlq(args: argparse.Namespace) -> int:
    from collections import Counter

    from rich.table import Table

    from stream.dlq import read_letters
    from stream.settings import stream_settings

    s = stream_settings()
    if args.action == "replay":
        return _dlq_replay(args, s)
    stored, foreign = read_letters(s.kafka)
    if args.reason:
        stored = [x for x in stored if x.letter.reason == args.reason]
    shown = stored[-args.limit:] if args.limit > 0 else stored
    if args.json:  # one letter a line, the value's bytes exactly (base64) and as text
        for x in shown:
            d = x.letter
            print(json.dumps({
                "dlq_partition": x.partition, "dlq_offset": x.offset,
                "timestamp_ms": x.timestamp_ms, "reason": d.reason, "detail": d.detail,
                "source_topic": d.source_topic, "source_partition": d.source_partition,
                "source_offset": d.source_offset, "source_group": d.source_group,
                "key": d.key.decode(errors="replace") if d.key is not None else None,
                "value": d.value.decode(errors="replace"),
                "value_b64": base64.b64encode(d.value).decode()}))
        return 0
    by_reason = Table("reason", "letters", title=f"{s.kafka.topics.dlq}: dead letters")
    for reason, count in Counter(x.letter.reason for x in stored).most_common():
        by_reason.add_row(reason, str(count))
    console.print(by_reason)
    last = Table("dlq p/offset", "source p/offset", "reason", "detail", "value",
                 title=f"the last {len(shown)}")
    for x in shown:
        d = x.letter
        last.add_row(f"{x.partition}/{x.offset}", f"{d.source_partition}/{d.source_offset}",
                     d.reason, d.detail[:80], d.value[:60].decode(errors="replace"))
    console.print(last)
    if foreign:
        console.print(f"{foreign} records on {s.kafka.topics.dlq} are not dead letters")
    return 0


def _dlq_replay(args: argparse.Namespace, settings: StreamSettings) -> int:
    from rich.table import Table

    from stream.replay import Replayer, ReplayError

    try:
        report = Replayer(settings).run(dry_run=args.dry_run)
    except ReplayError as exc:
        console.print(f"[red]dlq replay: {exc}[/red]")
        return 1
    verb = "would replay" if args.dry_run else "replayed"
    table = Table("dlq p/offset", "source p/offset", "reason then", "value",
                  title=f"{verb} {len(report.replayed)} letters")
    for x in report.replayed[-args.limit:] if args.limit > 0 else report.replayed:
        d = x.letter
        table.add_row(f"{x.partition}/{x.offset}", f"{d.source_partition}/{d.source_offset}",
                      d.reason, d.value[:60].decode(errors="replace"))
    console.print(table)
    for reason, count in report.still_invalid.most_common():
        console.print(f"{count} letters still fail ({reason}): left on the DLQ")
    notes = [(report.already, "letters were replayed by earlier runs: not sent again"),
             (report.recovered, "letters were sent by a run that crashed before recording "
                                "them: recorded, not sent again"),
             (report.duplicates, "letters repeat an event this run sends: sent once"),
             (report.bounced, "of the replayed letters were replays the consumer had "
                              "rejected again (replay with the service's own settings)")]
    for count, what in notes:
        if count:
            console.print(f"{count} {what}")
    if report.other:
        console.print(f"{report.other} records of other groups or topics, or not letters: "
                      "left alone")
    return 0


def _use_ray_token(path: Path | None) -> None:
    """Export the cluster token settings; must run before anything imports ray."""
    import os

    from infra.stack import ray_auth_env

    if path is not None:
        os.environ.update(ray_auth_env(path))


def _serve(args: argparse.Namespace) -> int:
    from serve.config import serve_settings

    _use_ray_token(serve_settings().ray_auth_token_path)
    from serve.deploy import run_forever

    return run_forever()


def _demo(args: argparse.Namespace) -> int:
    from infra.stack import StackSettings

    _use_ray_token(StackSettings(data_dir=DEMO_DIR).ray_token_path)
    from infra.demo import run_demo

    return run_demo(DEMO_DIR, keep=args.keep, minutes=args.minutes)


def _bench(args: argparse.Namespace, rest: list[str]) -> int:
    """Run the benchmark ``args.which`` with the rest of the command line (its own options)."""
    import importlib

    from bench import BENCHMARKS

    return int(importlib.import_module(BENCHMARKS[args.which].module).main(rest))


def _add_bench_parser(sub: Any) -> None:
    """``bench NAME``, one NAME for each benchmark that registered itself (bench.BENCHMARKS);
    what follows NAME, ``--help`` included, is the benchmark's own (:func:`main`)."""
    from bench import BENCHMARKS

    be = sub.add_parser("bench", help="benchmarks (`recstream bench NAME --help`: its options)",
                        description="Benchmarks; `recstream bench NAME --help` lists the options "
                                    "of NAME. Results in bench/results/.")
    names = be.add_subparsers(dest="which", required=True, metavar="NAME")
    for name, benchmark in BENCHMARKS.items():
        names.add_parser(name, help=benchmark.what, add_help=False)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recstream", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    st = sub.add_parser("stack", help="start, inspect or stop the local stack")
    st.add_argument("action", choices=["up", "status", "down"])
    st.add_argument("--no-ray", action="store_true", help="broker and Feast only")
    st.add_argument("--all", action="store_true",
                    help="down: also stop the `stream run` and `serve` processes using it")

    pr = sub.add_parser("produce", help="write events to Kafka")
    pr.add_argument("--source", choices=["synthetic", "movielens"], default="synthetic")
    pr.add_argument("--events", type=int, default=10_000,
                    help="synthetic impressions; each click is one event more (~1.4 events "
                         "an impression)")
    pr.add_argument("--data", default="../shared/data/ml-100k", help="MovieLens folder")
    pr.add_argument("--limit", type=int, default=0, help="first N rows only")
    pr.add_argument("--rate", type=float, default=None, help="events per second")
    pr.add_argument("--live", action="store_true", help="stamp events with the wall clock")
    pr.add_argument("--id-prefix", default="ev")

    sr = sub.add_parser("stream", help="the consumer service")
    sr.add_argument("action", choices=["run"])

    dl = sub.add_parser("dlq", help="show the dead letters (rejected events) and why, or "
                                    "replay those that pass the contract now")
    dl.add_argument("action", nargs="?", choices=["show", "replay"], default="show",
                    help="replay: send the letters that pass now back to the events topic, "
                         "each once (after fixing the cause: a clock, a schema version)")
    dl.add_argument("--dry-run", action="store_true", help="replay: list, send nothing")
    dl.add_argument("--reason", help="only this reason (e.g. not_json, future_ts)")
    dl.add_argument("--limit", type=int, default=20, help="letters listed, the last N (0: all)")
    dl.add_argument("--json", action="store_true", help="JSON lines, original bytes included")

    train_cli.add_parser(sub)

    sub.add_parser("serve", help="run the Ray Serve app until interrupted")

    de = sub.add_parser("demo", help="the closed loop, short, on the local stack: simulated "
                                     "users, a static and an incremental arm, the A/B report")
    de.add_argument("--keep", action="store_true", help="leave the stack running")
    de.add_argument("--minutes", type=float, default=1.5, help="how long the users click")

    _add_bench_parser(sub)

    models_cli.add_parser(sub)
    ab_cli.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``recstream`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if argv[:1] == ["bench"]:
        # only "bench NAME" here: the rest, --help included, is the benchmark's own
        args = parser.parse_args(argv[:2])
        return _bench(args, argv[2:])
    args = parser.parse_args(argv)
    handlers = {"stack": _stack, "produce": _produce, "stream": _stream, "dlq": _dlq,
                "train": train_cli.run, "serve": _serve, "demo": _demo, "models": models_cli.run,
                "ab": ab_cli.run}
    if args.cmd not in ("produce", "stream", "dlq", "ab"):
        return int(handlers[args.cmd](args))
    from kafka.errors import KafkaTimeoutError

    try:
        return int(handlers[args.cmd](args))
    except KafkaTimeoutError as exc:
        if "bootstrap" not in str(exc):
            raise  # a timeout later on, not the first contact: the traceback says where
        from stream.settings import stream_settings

        servers = stream_settings().kafka.bootstrap_servers
        console.print(f"kafka: {exc} (bootstrap servers {servers}, from "
                      "STREAM_KAFKA__BOOTSTRAP_SERVERS; `recstream stack up` starts a local "
                      "broker)", markup=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())
