"""The recstream processes a user started against the local stack: ``stream run``, ``serve``.

``recstream stack down`` names those still running (they would otherwise retry a stopped
broker or cluster for ever) and, with ``--all``, stops them first. A process is one of
them when its command line is ``recstream stream run`` / ``recstream serve`` and the address
it reads from its environment (``STREAM_KAFKA__BOOTSTRAP_SERVERS``, ``SERVE_RAY_ADDRESS``,
or their defaults) is this stack's broker / Ray head: another stack's processes on the same
machine are left alone.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from serve.config import ServeSettings
from stream.kafka import KafkaConfig

_DEFAULT_BOOTSTRAP = str(KafkaConfig.model_fields["bootstrap_servers"].default)
_DEFAULT_RAY = str(ServeSettings.model_fields["ray_address"].default)


@dataclass(frozen=True)
class Running:
    """One recstream process: what it runs (``stream run``, ``serve``) and the process."""

    what: str
    proc: psutil.Process

    def __str__(self) -> str:
        return f"{self.what} (pid {self.proc.pid})"


def command_of(cmdline: Sequence[str]) -> str | None:
    """``"stream run"`` or ``"serve"`` for a ``recstream`` command line of those, else None."""
    for i, arg in enumerate(cmdline):
        if Path(arg).name == "recstream":
            words = [a for a in cmdline[i + 1:] if not a.startswith("-")]
            if words[:2] == ["stream", "run"]:
                return "stream run"
            return "serve" if words[:1] == ["serve"] else None
    return None


def _port(address: str) -> int | None:
    _, colon, port = address.strip().rpartition(":")
    return int(port) if colon and port.isdigit() else None


def _ours(what: str, env: dict[str, str], kafka_port: int, ray_port: int) -> bool:
    if what == "stream run":
        servers = env.get("STREAM_KAFKA__BOOTSTRAP_SERVERS", _DEFAULT_BOOTSTRAP)
        return any(_port(x) == kafka_port for x in servers.split(","))
    return _port(env.get("SERVE_RAY_ADDRESS", _DEFAULT_RAY)) == ray_port


def find(kafka_port: int, ray_port: int) -> list[Running]:
    """The ``stream run`` processes reading the broker on ``kafka_port`` and the ``serve``
    processes deploying to the Ray head on ``ray_port``, oldest first (this one excluded)."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.pid == os.getpid():
                continue
            what = command_of(proc.cmdline())
            if what and _ours(what, proc.environ(), kafka_port, ray_port):
                found.append((proc.create_time(), Running(what, proc)))
    return [r for _, r in sorted(found, key=lambda x: x[0])]


def describe(running: Sequence[Running]) -> str:
    return ", ".join(map(str, running))


def _gone(proc: psutil.Process) -> bool:
    """Exited: no such process, or a zombie (exited; its parent has not reaped it yet)."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(procs: Sequence[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until each has exited or ``timeout_s`` passed; those still running.
    (``psutil.wait_procs`` waits for the pid to vanish, which for a process that is not our
    child means until its parent reaps it: a parent that reaps late, such as a test's
    ``Popen``, held every stop for its whole grace, twice.)"""
    deadline = time.monotonic() + timeout_s
    alive = [p for p in procs if not _gone(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if not _gone(p)]
    return alive


def terminate(procs: Sequence[psutil.Process], grace_s: float) -> None:
    """SIGTERM each, then SIGKILL those still running after ``grace_s``; wait for them."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    alive = wait_gone(procs, grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    wait_gone(alive, grace_s)


def stop(running: Sequence[Running], grace_s: float = 30.0) -> None:
    """Stop them: ``stream run`` finishes its micro-batch, ``serve`` removes its app."""
    terminate([r.proc for r in running], grace_s)
