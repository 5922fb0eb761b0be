"""A benchmark's progress on a terminal, nothing in CI or a log.

Run: ``phases = Phases("bench stream", total=8); phases("produce"); ...; phases.close()``
(or ``with Phases(...) as phases:``): a tqdm bar on stderr, shown only while stderr is a
terminal (tqdm's ``disable=None``), so the JSON on stdout and the output of CI and of a
redirected run stay as they were. Benchmarks call it between their timed regions, never
inside one.
"""

from __future__ import annotations

from types import TracebackType

from tqdm import tqdm


class Phases:
    """``total`` phases, each named when it starts; the bar counts those finished."""

    def __init__(self, desc: str, total: int) -> None:
        self._bar = tqdm(total=total, desc=desc, unit="phase", disable=None, leave=False)
        self._started = False

    def __call__(self, name: str) -> None:
        """The phase ``name`` starts now (the one before it is done)."""
        if self._started:
            self._bar.update(1)
        self._started = True
        self._bar.set_postfix_str(name)

    def close(self) -> None:
        """Take the bar off the terminal."""
        self._bar.close()

    def __enter__(self) -> Phases:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
