"""infra/processes.py: a stopped process counts as gone once it has exited, also while its
parent has not reaped it yet (a zombie), so `stack down --all` does not sit out its grace."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from infra.processes import terminate, wait_gone


def test_an_exited_but_unreaped_child_counts_as_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    proc = psutil.Process(child.pid)
    deadline = time.monotonic() + 60
    while proc.status() != psutil.STATUS_ZOMBIE:  # exited, not yet reaped by us
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert psutil.pid_exists(child.pid)  # what psutil.wait_procs waits on
    assert wait_gone([proc], 0.0) == []
    child.wait()
    assert wait_gone([proc], 0.0) == []  # reaped: no such process


def test_terminate_stops_a_running_child_with_sigterm() -> None:
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    proc = psutil.Process(running.pid)
    assert wait_gone([proc], 0.0) == [proc]
    terminate([proc], grace_s=60.0)
    assert wait_gone([proc], 0.0) == []
    assert running.wait(timeout=60) == -15  # SIGTERM, not the SIGKILL after the grace
