"""The demo: the closed loop, short, on the local stack, then the A/B report.

Run: ``make demo`` (or ``recstream demo [--minutes M] [--keep]``). It starts the stack (Tansu,
Feast, a Ray head, Prometheus when installed), trains a first DIN on a simulated pre-period,
serves a static arm (that first version) and an incremental arm (following ``din/live``) 50/50
with Ray Serve, runs the stream consumer and the incremental trainer, and lets simulated users
(bench/world.py) ask for rankings, click and send their events back for ``--minutes``. It ends
with the A/B report from the samples topic, the loop's figures, where the plot is, and the
Prometheus URL with the queries that matter; then stops everything it started (``--keep``:
leaves the stack up).
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from infra import stack

console = Console()
QUERIES = [
    ("model freshness (s)", "recstream:train_model_freshness_seconds:max"),
    ("promotions / rejections in the last hour", "recstream:train_promotions:increase1h"),
    ("rejections by reason", "recstream:train_rejections:increase1h"),
    ("feature freshness p99 (s)", "recstream:stream_feature_freshness_seconds:p99_5m"),
    ("answered / s by variant", "recstream:rank_requests:rate1m"),
]


def run_demo(data_dir: Path, *, keep: bool = False, minutes: float = 1.5) -> int:
    """The demo on the stack under ``data_dir``; returns an exit code.

    Ray's token settings must already be in the environment (the CLI exports them).
    """
    from bench.loop import run_loop
    from bench.loop_report import plot, report
    from stream.ab_report import print_report
    from stream.settings import StreamSettings
    from train.settings import TrainSettings

    sst = stack.StackSettings(data_dir=data_dir)
    sst.feast.data_dir = sst.data_dir / "feast"
    try:
        console.rule("1. stack up (Tansu broker, Feast, Ray, Prometheus)")
        stack.up(sst, log=console.print)
        console.rule(f"2. the closed loop for {minutes} min")
        raw = run_loop(minutes, clients=3, warmup_events=10_000, log=console.print, stack={
            "kafka": sst.kafka(), "feast": sst.feast, "data_dir": sst.data_dir,
            "ray_address": stack.ray_address(sst.ray_port),
            "stream_metrics_port": StreamSettings().metrics_port,
            "train_metrics_port": TrainSettings().metrics_port})
        console.rule("3. the A/B report (from the samples topic)")
        from stream.ab import analyse

        print_report(analyse(raw["samples"], configured={"static": 0.5, "incremental": 0.5},
                             control="static"), console)
        result = report(raw)
        png = sst.data_dir / "loop.png"
        plot(raw, png)
        console.print(
            f"requests {result['requests']} (failed {result['failed_requests']}), "
            f"promotions {result['promotions']}, rejections {result['rejections']}, "
            f"model freshness p50 {_s(result['model_freshness_p50_s'])}, "
            f"gap to the oracle closed {_pct(result['gap_closed'])}, "
            f"impressions lost {result['lost']}, duplicated {result['duplicated']}")
        console.print(f"plot: {png}")
        if stack.status(sst).prometheus:
            url = f"http://127.0.0.1:{sst.prometheus_port}"
            console.print(f"Prometheus: {url}/graph (alerts: {url}/alerts); queries:")
            for what, query in QUERIES:
                console.print(f"  {what:42} {query}")
        return 0
    finally:
        if keep:
            console.print("[green]kept running[/green]: `recstream stack down` stops it")
        else:
            console.rule("4. shutting down")
            stack.down(sst, log=console.print)


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"
