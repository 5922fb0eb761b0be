"""The consumer's garbage-collector regime: the start-up heap frozen, full passes rarer.

Run: :func:`freeze_startup_heap` once a process has imported everything (the stream consumer
calls it when it starts; the benchmarks call it before their anchors, so that both run
under the same regime).
"""

from __future__ import annotations

import gc

_frozen = False
FULL_GC_EVERY = 100  # middle-generation passes between full ones (CPython's default: 10)


def freeze_startup_heap() -> None:
    """Move what start-up allocated out of the cyclic GC's reach, and make full collections
    rarer (``FULL_GC_EVERY``), once per process.

    Everything allocated by then (Feast, pandas, pyarrow, kafka-python: ~300k objects) lives
    as long as the process; full GC passes over it took ~270 ms and were the worst freshness
    outliers. Garbage is collected first so that no dead cycle is frozen (kept forever).
    """
    global _frozen
    if not _frozen:
        gc.collect()
        gc.freeze()
        # Full collections only every FULL_GC_EVERY middle-generation passes instead of 10.
        # What is not frozen is the consumer's own state (caches, join entries, a batch's
        # samples): a full pass over it took 12-14 ms, twice in the benchmark's 28k events
        # (~0.9 µs an event, half of all GC time); the consumer's garbage is acyclic almost
        # all of it, freed by reference counts, so rarer passes hold little memory longer.
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, FULL_GC_EVERY)
        _frozen = True
