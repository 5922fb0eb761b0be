"""Scale-out figure of the stream benchmark: several consumer processes in one group.

Run: ``recstream bench stream --processes 2 --json PATH`` (adds ``scale_out`` to the JSON).

The issue's ``pipeline_eps`` is one process on purpose; this answers the user's next
question, how far more processes of the same group go on the same machine. The workers join
the group with their partitions paused (a group forms in seconds on Tansu: without the gate
the first member would read everything before the second one joins), then all resume at
once; each worker first takes one record untimed (``warm_up``, as the single-process run
does), and the figure is the other events of the topic over the time from the first worker's
end of warm-up to the last commit (a worker that ends its warm-up later has that time in the
window but not its record: the figure leans low by one warm-up at most). Every worker's
output is checked against the offline recomputation like the single-process run.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
from typing import Any

from stream.consumer import StreamConsumer
from stream.kafka import resume
from stream.settings import StreamSettings

_GATE_STABLE_S = 1.0  # the assignment must stay unchanged this long before the start
_TIMEOUT_S = 180.0


def warm_up(consumer: StreamConsumer, stop: Any = None) -> int:
    """Process batches of one record until one was processed and every assigned partition
    is restored (the group's join, the assignment and restores, the first fetch), untimed by
    the benchmarks; return the records processed (0 if ``stop`` came first). kafka-python
    decodes a fetch lazily, so the rest is decoded in the timed part. (Restores run off the
    poll loop since 2026-12-05: a first record of a partition restored early no longer means
    that the others are.)"""
    limit = consumer.cfg.max_poll_records
    consumer.cfg.max_poll_records = 1
    try:
        got = 0
        while not (got and consumer.restored()) and not (stop is not None and stop.is_set()):
            got += consumer.poll_once(timeout_ms=50)
        return got
    finally:
        consumer.cfg.max_poll_records = limit


def _gate_poll(consumer: StreamConsumer) -> None:
    """Take part in the group without processing: pause whatever is assigned; a record a
    poll returns before its partition was paused is given back (seek)."""
    kc = consumer.consumer
    got = kc.poll(timeout_ms=100)
    for tp, recs in got.items():
        kc.seek(tp, recs[0].offset)
    kc.pause(*kc.assignment())


def _caught_up(consumer: StreamConsumer) -> bool:
    parts = consumer.assigned()
    return bool(parts) and all(consumer.offsets.lag(p) == 0 for p in parts)


def _worker(settings_json: str, name: str, report: Any, go: Any, stop: Any) -> None:
    settings = StreamSettings.model_validate_json(settings_json)
    consumer = StreamConsumer(settings, client_id=name)
    try:
        last: list[int] = []
        while not go.is_set():
            _gate_poll(consumer)
            if consumer.assigned() != last:
                last = consumer.assigned()
                report.put(("assigned", name, last, time.time()))
        for tp in consumer.consumer.assignment():  # dropping what kafka-python parked
            resume(consumer.consumer, tp)
        warm = warm_up(consumer, stop)
        first, end = time.time(), 0.0
        events = warm
        drained = False
        while not stop.is_set():
            got = consumer.poll_once(timeout_ms=50)
            if got:
                first = first or time.time() - consumer.last_batch_seconds
                events += got
                drained = False
            if first and _caught_up(consumer):  # timed to the last commit, no idle poll
                consumer.offsets.commit_sync()
                end = time.time()
                report.put(("done", name, [events, first, end, warm], end))
                first, events, warm = 0.0, 0, 0  # again only if more records come (rebalance)
            elif not got and not drained and not first and consumer.pending() == 0 \
                    and consumer.assigned():
                drained = True  # the idle flush closed every open impression
                report.put(("drained", name, [], time.time()))
    finally:
        consumer.close()


def _next_report(report: Any, procs: list[Any], deadline: float,
                 wait_s: float = float("inf")) -> Any:
    """The next worker report, or None after ``wait_s``; TimeoutError past ``deadline``,
    RuntimeError when a worker died."""
    give_up = time.monotonic() + wait_s
    while time.monotonic() < give_up:
        if time.monotonic() > deadline:
            raise TimeoutError("the scale-out workers did not finish in time")
        dead = [p.exitcode for p in procs if not p.is_alive()]
        if dead:
            raise RuntimeError(f"a scale-out worker exited (exit codes {dead})")
        try:
            return report.get(timeout=min(0.2, wait_s))
        except queue.Empty:
            continue
    return None


def scale_out(settings: StreamSettings, processes: int, total: int) -> dict[str, Any]:
    """Run ``processes`` workers of one new group over the events topic of ``settings``."""
    if not 1 <= processes <= settings.kafka.partitions:
        raise ValueError(f"--processes must be 1..{settings.kafka.partitions} (the partitions "
                         f"of the events topic), got {processes}")
    ctx = mp.get_context("spawn")
    report, go, stop = ctx.Queue(), ctx.Event(), ctx.Event()
    names = [f"scale-{i}" for i in range(processes)]
    procs = [ctx.Process(target=_worker, args=(settings.model_dump_json(), n, report, go, stop))
             for n in names]
    for proc in procs:
        proc.start()
    assigned: dict[str, list[int]] = {}
    done: dict[str, list[float]] = {}
    changed = time.time()
    deadline = time.monotonic() + _TIMEOUT_S
    try:
        while not go.is_set():
            got = _next_report(report, procs, deadline, wait_s=0.1)
            if got is not None:
                _, name, parts, changed = got
                assigned[name] = parts
            owned = sorted(p for parts in assigned.values() for p in parts)
            if (len(assigned) == processes and all(assigned.values())
                    and owned == list(range(settings.kafka.partitions))
                    and time.time() - changed > _GATE_STABLE_S):
                go.set()
        drained: set[str] = set()
        while (len(done) < processes or sum(int(d[0]) for d in done.values()) < total
               or len(drained) < processes):
            kind, name, payload, _ = _next_report(report, procs, deadline)
            if kind == "done":
                prev = done.get(name)
                done[name] = payload if prev is None else [
                    prev[0] + payload[0], prev[1], payload[2], prev[3] + payload[3]]
                drained.discard(name)
            elif kind == "drained":
                drained.add(name)
            else:
                assigned[name] = payload
    finally:
        stop.set()
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=10)
    first = min(d[1] for d in done.values())
    end = max(d[2] for d in done.values())
    timed = total - sum(int(d[3]) for d in done.values())
    return {"processes": processes, "pipeline_eps": round(timed / (end - first), 1),
            "events_by_process": {n: int(d[0]) for n, d in done.items()},
            "assignment": assigned}
