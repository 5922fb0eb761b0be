"""Benchmarks (``recstream bench NAME``); results in bench/results/.

:data:`BENCHMARKS` is the list the CLI offers (``recstream bench --help``): a benchmark
registers itself here with its module, whose ``main(argv)`` parses its own options (``recstream
bench NAME --help``) and runs it. Importing this package imports no benchmark.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple


class Benchmark(NamedTuple):
    module: str  # has main(argv: list[str] | None) -> int
    what: str  # one line for the CLI's help


BENCHMARKS: dict[str, Benchmark] = {
    "stream": Benchmark("bench.stream", "the streaming pipeline vs a bare consumer, freshness, "
                                        "lost/duplicated, scale-out (real broker and Feast)"),
    "feast": Benchmark("bench.feast_write", "the Feast online write: recstream's stores vs "
                                            "Feast's own (SQLite, Redis when one listens)"),
    "quality": Benchmark("bench.quality", "BaseModel/DIN/DIEN vs DeepCTR-Torch on ml-100k"),
    "loop": Benchmark("bench.loop", "the closed loop: simulated users on the whole stack, a "
                                    "static arm vs one the incremental trainer updates"),
    "replay": Benchmark("bench.replay", "static vs incremental vs full retraining through time "
                                        "windows of MovieLens"),
    "serve": Benchmark("bench.serve", "DIN/DIEN in-process vs a plain FastAPI app vs recstream "
                                      "on Ray Serve (p50/p99/rps, reloads; --device cuda)"),
}


def write_result(result: dict[str, Any], path: Path | None) -> str:
    """The result as indented JSON, also written to ``path`` (folders made) when given.

    Numbers that ``json`` does not know (numpy scalars) are written as floats.
    """
    text = json.dumps(result, indent=2, default=float)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return text
