"""glibc keeps freed memory for the next step once ``keep_freed_memory`` ran."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# A "step" that frees 20 MiB in 1 MiB blocks and allocates them again, as a training step does.
CHILD = """
import resource, sys
import numpy as np
if sys.argv[1] == "1":
    from models.allocator import keep_freed_memory
    assert keep_freed_memory() and keep_freed_memory()
def step():
    blocks = [np.ones(1 << 20, np.uint8) for _ in range(20)]
    del blocks
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def _faults_per_step(setting: str) -> float:
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", CHILD, setting], cwd=root, check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_blocks_are_reused_instead_of_faulted_back_in() -> None:
    default, kept = _faults_per_step("0"), _faults_per_step("1")
    assert default > 2000  # glibc's default trims the 20 MiB and faults 5,120 pages back in
    assert kept < 100
