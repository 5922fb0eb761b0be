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


def terminate(procs: Sequence[psutil.Process], grace_s: float) -> None:
    """SIGTERM each, then SIGKILL those still there after ``grace_s``; wait for them."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace_s)


def stop(running: Sequence[Running], grace_s: float = 30.0) -> None:
    """Stop them: ``stream run`` finishes its micro-batch, ``serve`` removes its app."""
    terminate([r.proc for r in running], grace_s)
