"""Facts about where a benchmark ran (CPU model, cores, torch, the GPU): torch alone, so a
GPU machine without pandas, Ray or Feast can record them too."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch


def cpu_model() -> str:
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def machine(device: str) -> dict[str, Any]:
    """The machine's facts for a run on ``device`` ("cpu" or "cuda")."""
    facts: dict[str, Any] = {
        "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "platform": platform.platform(), "device": device,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    if device == "cuda" and torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(0)
    return facts
