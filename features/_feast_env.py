"""Import Feast without its import-time side effects on the process (and its children).

Importing Feast 0.67 (``feast/__init__`` imports ``feast.metrics``) does two things to the
whole process:

- it creates a temporary directory, exports it as ``PROMETHEUS_MULTIPROCESS_DIR`` and
  ``PROMETHEUS_MULTIPROC_DIR`` when they are unset, and removes it when the process exits.
  That puts ``prometheus_client`` into multiprocess mode (every metric a file-backed mmap:
  ``Counter.inc`` ~3x slower), and every process started afterwards (the Ray head and its
  workers, Prometheus, the broker) inherits a directory that vanishes with its parent: a Ray
  worker that imports Feast later dies in ``prometheus_client`` (``FileNotFoundError``);
- it inserts ``warnings.simplefilter("once", DeprecationWarning)`` in front of the filters,
  which undoes a program's own ``ignore`` of library deprecation warnings.

:func:`import_feast` (run by ``features/__init__.py``, so before any module of ``features``
imports Feast) imports it with the warning filters saved and restored, removes the variables
and the directory Feast created, and leaves ``prometheus_client`` in the mode the
environment asked for: in-process values unless the deployment set ``PROMETHEUS_MULTIPROC_DIR``
itself before starting the process (docs/metrics.md, "Multiprocess mode").
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

VARS = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")
_FEAST_PREFIX = "feast_metrics_"  # tempfile.mkdtemp(prefix=...) in feast/metrics.py


def feast_made(value: str | None, feast_dir: str | None = None) -> bool:
    """Whether ``value`` (an env var's) is a directory Feast created: the one this process's
    Feast made, or one named like it, inherited from a process that imported Feast unguarded
    (a user never chooses ``/tmp/feast_metrics_XXXX``)."""
    if not value:
        return False
    return value == feast_dir or Path(value).name.startswith(_FEAST_PREFIX)


def clean_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default ``os.environ``) without Feast's metrics directories, for the
    processes recstream starts; a directory the deployment chose stays."""
    env = dict(os.environ if env is None else env)
    for var in VARS:
        if feast_made(env.get(var)):
            del env[var]
    return env


def import_feast() -> None:
    """Import Feast (idempotent) and undo its effects on the environment, on
    ``prometheus_client``'s value class and on the warning filters."""
    # Before Feast sets the variables: prometheus_client picks its value class from the
    # environment when first imported, so Feast's own metrics get the mode asked for too.
    for var in VARS:
        if feast_made(os.environ.get(var)):
            del os.environ[var]
    import prometheus_client.values as values

    with warnings.catch_warnings():  # Feast's simplefilter("once", ...) is undone on exit
        import feast.metrics as feast_metrics

    feast_dir: str | None = getattr(feast_metrics, "_prometheus_mp_dir", None)
    owned = bool(getattr(feast_metrics, "_owns_mp_dir", False))
    for var in VARS:
        if feast_made(os.environ.get(var), feast_dir if owned else None):
            del os.environ[var]
    if owned and feast_dir and feast_made(feast_dir) and feast_dir not in os.environ.values():
        # Nothing uses it now; removed at once so a killed process leaves nothing in /tmp
        # (Feast's own atexit removal finds it gone).
        shutil.rmtree(feast_dir, ignore_errors=True)
    multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ or \
        "prometheus_multiproc_dir" in os.environ
    in_process = values.ValueClass is values.MutexValue
    if multiprocess == in_process:
        # Only when the class is wrong (Feast imported before this guard ran): a second
        # MultiProcessValue() would open the same files through a second set of mmaps.
        values.ValueClass = values.get_value_class()
