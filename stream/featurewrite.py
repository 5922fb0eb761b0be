"""The stream consumer's Feast write of a batch: tries after membership checks, and the pause
after a batch the online store failed.

Run: made and used by :class:`stream.consumer.StreamConsumer` only (``consumer.writer``).
docs/stream.md, "An online store that fails", tells the whole rule.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from features.store import FeatureAccess, StoreUnavailable
from stream import metrics
from stream.batch import Batch

log = logging.getLogger(__name__)

# Pause after a batch whose Feast read or write failed, doubled at each failure in a row up
# to the maximum: short enough that poll, batch, retries and pause stay within
# max_poll_interval_ms.
STORE_BACKOFF_S, STORE_BACKOFF_MAX_S = 0.25, 2.0
WRITE_TRIES = 5  # tries of a batch's Feast write, each after a membership check


class FeatureWriter:
    """Writes a batch's sequences and item categories; ``fence(stage)`` raises when the group
    may have moved the partitions on (then no try is made)."""

    def __init__(self, features: FeatureAccess, fence: Callable[[str], None]) -> None:
        self.features = features
        self.fence = fence
        self.backoff_s = STORE_BACKOFF_S

    def write(self, batch: Batch) -> float:
        """Write the batch; return the time the sequences became readable. Up to
        ``WRITE_TRIES`` tries with backoff, each after the fence (a try after the group may
        have moved the partitions on could overwrite the new owner's rows); ``StoreUnavailable``
        after the last."""
        tries = Retrying(stop=stop_after_attempt(WRITE_TRIES), reraise=True,
                         wait=wait_exponential(0.05, max=2),
                         retry=retry_if_exception_type(StoreUnavailable),
                         before=lambda _: self.fence("feast"))
        done = 0.0
        for attempt in tries:
            with attempt:
                batch.refused = self.features.write_sequences(batch.changed)
                done = time.time()  # the new sequences are readable from here on
                self.features.write_items(batch.items)
        self.backoff_s = STORE_BACKOFF_S
        return done

    def failed(self, op: str, err: StoreUnavailable, records: int) -> None:
        """A batch's ``op`` (read, write) failed and is being rewound: log and count it."""
        log.error("the Feast online %s failed (%s): batch of %d records rewound, retried in "
                  "%.2f s", op, err, records, self.backoff_s)
        metrics.STORE_FAILURES.labels(op).inc()

    def pause(self) -> None:
        """Sleep after a failed batch: 0.25 s, doubled at each failure in a row up to 2 s."""
        time.sleep(self.backoff_s)
        self.backoff_s = min(2 * self.backoff_s, STORE_BACKOFF_MAX_S)
