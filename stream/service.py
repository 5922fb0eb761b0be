"""The consumer service process: metrics endpoint, one consumer, clean shutdown on signals.

Besides the consumer it runs the parquet exporter of the samples (:mod:`stream.offline`).

Run: ``recstream stream run`` (settings from ``STREAM_*`` env vars), or
``python -m stream.service [--settings-json PATH] [--client-id ID]`` (the entry point the
crash tests kill with SIGKILL). SIGTERM/SIGINT stop it after the current micro-batch.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from stream.consumer import StreamConsumer
from stream.metrics import start_metrics_server
from stream.offline import SampleExporter
from stream.settings import StreamSettings

log = logging.getLogger(__name__)


def describe(settings: StreamSettings) -> str:
    """One line: what the service consumes, from where, and where its metrics are."""
    k = settings.kafka
    metrics = (f"http://127.0.0.1:{settings.metrics_port}/metrics" if settings.metrics_port
               else "off (STREAM_METRICS_PORT=0)")
    return (f"stream run: consuming {k.topics.events} as group {settings.group_id} from "
            f"{k.bootstrap_servers} (dead letters to {k.topics.dlq}, samples to "
            f"{k.topics.samples}); metrics {metrics}")


def run_service(settings: StreamSettings, stop: threading.Event | None = None,
                *, client_id: str | None = None,
                announce: Callable[[str], None] | None = None) -> None:
    """Serve /metrics on ``settings.metrics_port`` (0 = none) and consume until stopped.

    Stops when ``stop`` is set or, when called from the main thread, on SIGTERM/SIGINT.
    ``announce`` gets :func:`describe`'s line once the metrics endpoint listens (the CLI
    prints it).
    """
    stop = stop or threading.Event()
    previous: dict[signal.Signals, object] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        start_metrics_server(settings.metrics_port)
        log.info("%s", describe(settings))
        if announce is not None:
            announce(describe(settings))
        exporter = SampleExporter(settings)
        export = threading.Thread(target=exporter.run, args=(stop,), name="samples-parquet",
                                  daemon=True)
        export.start()
        consumer = StreamConsumer(settings, client_id=client_id)
        try:
            consumer.run(stop)
        finally:
            stop.set()
            consumer.close()
            export.join(timeout=30)
            exporter.close()
    finally:
        for sig_, handler in previous.items():
            signal.signal(sig_, handler)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    """``python -m stream.service``: run the service; settings from env or a JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings-json", type=Path, help="StreamSettings as JSON")
    parser.add_argument("--client-id", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.settings_json:
        settings = StreamSettings.model_validate_json(args.settings_json.read_text())
    else:
        settings = StreamSettings()
    run_service(settings, client_id=args.client_id)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
