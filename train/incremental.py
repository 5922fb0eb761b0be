"""The incremental trainer: follows the samples topic and updates the live top network.

Run: ``recstream train incremental`` (on the stack's Ray cluster, :mod:`train.actor`), or in
this process ``python -m train.incremental`` (settings from ``TRAIN_*``; SIGTERM stops it
after the current update).

Loop: read samples into ``pending``; when ``TRAIN_INTERVAL_S`` has passed with at least
``TRAIN_MIN_NEW_SAMPLES`` (or at once at ``TRAIN_MAX_NEW_SAMPLES``), split the pending
samples by event time into a training part and the newest ``TRAIN_HOLDOUT_FRAC`` (held out),
fine-tune a copy of the live top on the training part plus up to ``TRAIN_BUFFER_SAMPLES``
earlier accepted samples (bank frozen), judge it (:mod:`train.guard`), then publish and
promote it, or record the rejection with its reason, in the registry. Only then are the
samples' offsets committed.

Guarantees:

* Each samples record feeds exactly one update: every published version and every recorded
  rejection names its records (``sample_range``: partition -> [first, end)); a restart
  starts after the last range the registry names, even when the kill came between the
  publish and the commit (:mod:`train.feed`), and finishes a promotion a kill interrupted.
* The trainer follows its family's ``live`` pointer: when a full refresh moves it to a new
  bank, the next update starts from that version; a top is only ever published on the bank
  it was trained against, and a candidate whose parent is no longer live is not promoted
  (``live_moved``).
* A rejected batch is not replayed by later updates (it stays in Kafka and in the offline
  store for the full refresh).
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from models.registry import Registry
from train import metrics
from train.data import to_sample_set
from train.feed import Record, SampleFeed
from train.settings import TrainSettings
from train.update import TopUpdater

log = logging.getLogger(__name__)


@dataclass
class StepResult:
    """What one update did."""

    promoted: bool
    reason: str
    version: str | None
    samples: int
    seconds: float


class IncrementalTrainer:
    """One family's incremental trainer (see the module docstring)."""

    def __init__(self, s: TrainSettings, registry: Registry | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.s = s
        self.reg = registry or Registry(s.registry_root)
        self.clock = clock
        self.source = {"source": "kafka", "topic": s.kafka.topics.samples, "group": s.group_id}
        self._finish_interrupted()
        self.feed = SampleFeed(s.kafka, s.group_id, self.recorded_ends())
        self.pending: list[Record] = []
        self.updater: TopUpdater | None = None  # once a live version exists
        self.live_vid: str | None = None
        self.last_update = clock()
        self.updates = 0

    # -- where to start -------------------------------------------------------------------
    def _own(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The sample range of a manifest or rejection when this trainer's feed wrote it."""
        rng = record.get("sample_range") or {}
        mine = all(rng.get(k) == v for k, v in self.source.items())
        return rng if mine else None

    def _records(self) -> list[dict[str, Any]]:
        rejected = [r.get("candidate", {}) for r in self.reg.rejections(self.s.family)]
        return self.reg.versions(self.s.family) + rejected

    def recorded_ends(self) -> dict[int, int]:
        """Per partition, the end of the last range a version or rejection of ours names."""
        ends: dict[int, int] = {}
        for record in self._records():
            rng = self._own(record)
            for p, (_, end) in (rng or {}).get("partitions", {}).items():
                ends[int(p)] = max(ends.get(int(p), 0), int(end))
        return ends

    def _finish_interrupted(self) -> None:
        """Promote our newest version if a kill came between its publish and its promotion
        (the guard had passed it and its parent is still live)."""
        own = [m for m in self.reg.versions(self.s.family) if self._own(m)]
        if not own:
            return
        last = own[-1]
        live = self.reg.pointer(self.s.family)
        if (last.get("extra") or {}).get("verdict") == "promote" and live != last["version"] \
                and live == last.get("parent"):
            self.reg.promote(self.s.family, last["version"], reason="finish interrupted update")
            log.info("promoted %s, published before a restart", last["version"])

    # -- the loop -------------------------------------------------------------------------
    def poll(self, timeout_ms: int = 200) -> int:
        """Read what the samples topic has; returns the samples read."""
        got = self.feed.poll(timeout_ms)
        self.pending.extend(got)
        return sum(len(r.samples) for r in got)

    def pending_samples(self) -> int:
        return sum(len(r.samples) for r in self.pending)

    def due(self) -> bool:
        """Whether an update should run now (interval passed with enough samples, or many)."""
        n = self.pending_samples()
        enough = max(self.s.min_new_samples,
                     math.ceil(self.s.guard.min_eval_samples / self.s.holdout_frac))
        waited = self.clock() - self.last_update >= self.s.interval_s
        return n >= self.s.max_new_samples or (waited and n >= enough)

    def _follow_live(self) -> bool:
        """Load the family's live version when the pointer moved; False while there is none."""
        vid = self.reg.pointer(self.s.family)
        if vid is None:
            return False
        if vid != self.live_vid:
            live = self.reg.load(vid, device=self.s.device, frozen_bank=True)
            if self.updater is None:
                self.updater = TopUpdater(live, self.s)
            else:
                self.updater.follow(live)
            self.live_vid = vid
            log.info("following live version %s", vid)
        self._set_freshness()
        return True

    def _set_freshness(self) -> None:
        if self.live_vid is None:
            return
        newest = (self.reg.manifest(self.live_vid).get("sample_range") or {}).get(
            "newest_event_ts_ms")
        if newest is not None:
            metrics.FRESHNESS.set(time.time() - int(newest) / 1000)

    def step(self) -> StepResult | None:
        """One update on the pending samples; None when there is no live version yet."""
        if not self.pending or not self._follow_live():
            return None
        start = time.perf_counter()
        records, self.pending = self.pending, []
        # In the order the stream emitted them, not by event time: a click's positive is
        # emitted at once, an impression's negative only when its attribution window closes,
        # so the newest event times hold the positives of impressions whose negatives are
        # not out yet. Held out by event time, that slice's click rate is inflated and the
        # next training part's deflated; by emission, both are alike.
        decoded = to_sample_set((s for r in records for s in r.samples),
                                max_len=self.s.max_history, seed=self.s.seed + self.updates,
                                by_event_time=False)
        for reason, count in decoded.invalid.items():
            metrics.SAMPLES.labels("invalid").inc(count)
            log.warning("%d samples left out: %s", count, reason)
        samples = decoded.samples
        metrics.SAMPLES.labels("used").inc(len(samples))
        assert self.updater is not None
        update = self.updater.propose(samples)
        verdict = update.verdict
        rng = {**self.source, "samples": len(samples),
               "partitions": _ranges(records),
               "newest_event_ts_ms": int(samples.ts.max()) if len(samples) else None}
        parent = self.live_vid
        if verdict.promote and self.reg.pointer(self.s.family) != parent:
            verdict.promote, verdict.reason = False, "live_moved"
        version = None
        if verdict.promote:
            version = self.reg.publish(update.candidate, self.s.family, parent=parent,
                                       sample_range=rng, metrics=verdict.metrics(),
                                       extra={"verdict": "promote", "reason": verdict.reason,
                                              **update.stats})
            self.reg.promote(self.s.family, version, reason=f"guard: {verdict.reason}")
            self.updater.adopt(update, self.reg.load(version, device=self.s.device,
                                                     bank=self.updater.live.bank))
            self.live_vid = version
            metrics.PROMOTIONS.inc()
            metrics.REJECTED_IN_A_ROW.set(0)
        else:
            self.reg.record_rejection(self.s.family, reason=verdict.reason,
                                      metrics=verdict.metrics(),
                                      candidate_manifest={"parent": parent, "sample_range": rng,
                                                          "arch": self.updater.live.arch})
            self.updater.reject(update)
            metrics.REJECTIONS.labels(verdict.reason).inc()
            metrics.REJECTED_IN_A_ROW.inc()
        self.feed.commit(_ends(records))
        self._record_metrics(verdict.candidate, verdict.live, len(samples))
        self.last_update = self.clock()
        self.updates += 1
        seconds = time.perf_counter() - start
        metrics.UPDATE_SECONDS.observe(seconds)
        log.info("update %d: %s (%s) on %d samples in %.2f s", self.updates,
                 "promoted " + str(version) if version else "rejected", verdict.reason,
                 len(samples), seconds)
        return StepResult(verdict.promote, verdict.reason, version, len(samples), seconds)

    def _record_metrics(self, cand: dict[str, float], live: dict[str, float], n: int) -> None:
        metrics.UPDATE_SAMPLES.observe(n)
        metrics.LAST_UPDATE.set(time.time())
        for name, values in (("candidate", cand), ("live", live)):
            if "auc" in values:
                metrics.EVAL_AUC.labels(name).set(values["auc"])
                metrics.EVAL_LOGLOSS.labels(name).set(values["logloss"])
        self._set_freshness()

    def run(self, stop: threading.Event, max_updates: int | None = None) -> None:
        """Poll and update until ``stop`` is set (or after ``max_updates`` updates)."""
        while not stop.is_set() and (max_updates is None or self.updates < max_updates):
            self.poll(200)
            if self.due():
                self.step()
            elif self.live_vid is None or self.updates == 0:
                self._follow_live()

    def close(self) -> None:
        self.feed.close()


def _ranges(records: list[Record]) -> dict[str, list[int]]:
    """partition -> [first offset, end) of ``records`` (contiguous per partition)."""
    out: dict[str, list[int]] = {}
    for r in records:
        lo, hi = out.get(str(r.partition), [r.offset, r.offset + 1])
        out[str(r.partition)] = [min(lo, r.offset), max(hi, r.offset + 1)]
    return out


def _ends(records: list[Record]) -> dict[int, int]:
    return {int(p): end for p, (_, end) in _ranges(records).items()}


def run_here(s: TrainSettings, stop: threading.Event) -> int:
    """Run the trainer in this process until ``stop`` is set."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    metrics.start_metrics_server(s.metrics_port)
    trainer = IncrementalTrainer(s)
    print(f"training {s.family} from {s.kafka.topics.samples} at {s.kafka.bootstrap_servers} "
          f"(group {s.group_id}), registry {s.registry_root}", flush=True)
    try:
        trainer.run(stop)
    finally:
        trainer.close()
    return 0


def main() -> int:
    """``python -m train.incremental``: run the trainer in this process until SIGTERM."""
    from train.settings import train_settings

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return run_here(train_settings(), stop)


if __name__ == "__main__":
    raise SystemExit(main())
