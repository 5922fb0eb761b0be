"""Benchmarks (`recstream bench {stream,feast,quality}`); results in bench/results/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_result(result: dict[str, Any], path: Path | None) -> str:
    """The result as indented JSON, also written to ``path`` (folders made) when given.

    Numbers that ``json`` does not know (numpy scalars) are written as floats.
    """
    text = json.dumps(result, indent=2, default=float)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return text
