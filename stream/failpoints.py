"""Crash injection for the exactly-once tests: SIGKILL this process at named points.

``RECSTREAM_FAILPOINTS="after_feast=0.05,after_commit=0.05"`` makes :func:`failpoint` kill
the process with that probability each time the named point is passed. Unset (the default)
it does nothing. Points: ``after_samples`` (samples flushed, changelog not),
``after_changelog`` (changelog flushed, Feast not written), ``after_feast`` (Feast written,
offsets not committed), ``after_commit``; in the DLQ replay (:mod:`stream.replay`)
``replay_after_intent`` (a chunk's intent recorded, nothing sent), ``replay_after_send``
(sent, not recorded) and ``replay_after_done`` (recorded, the intent not closed).
"""

from __future__ import annotations

import os
import random
import signal


def _parse(spec: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, prob = part.partition("=")
        out[name] = float(prob or 1.0)
    return out


_POINTS = _parse(os.environ.get("RECSTREAM_FAILPOINTS", ""))
# The failpoints' own generator: the global one is also drawn from by libraries (kafka-python
# when a client starts), which made a seeded sequence of crashes depend on their internals.
_RNG = random.Random()


class Crash(BaseException):
    """Raised instead of SIGKILL when ``configure(..., raise_=True)`` (in-process tests)."""


_RAISE = [False]


def configure(spec: str, *, raise_: bool = False, seed: int | None = None) -> None:
    """Set the failpoints in-process (tests); ``raise_`` raises :class:`Crash` instead."""
    _POINTS.clear()
    _POINTS.update(_parse(spec))
    _RAISE[0] = raise_
    if seed is not None:
        _RNG.seed(seed)


def failpoint(name: str) -> None:
    """Kill this process (SIGKILL, no cleanup) with the probability configured for ``name``."""
    prob = _POINTS.get(name)
    if prob and _RNG.random() < prob:
        if _RAISE[0]:
            raise Crash(name)
        os.kill(os.getpid(), signal.SIGKILL)
