"""Prometheus metrics of the consumer service; every name is documented in docs/metrics.md.

Metrics live in the process-wide default registry, so one ``/metrics`` port
(:func:`start_metrics_server`) exposes all consumers of a process. Label values are small,
closed sets (event type, outcome, reason, partition, label).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_FRESHNESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0,
                      10.0, 30.0)
_BATCH_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2000, 5000)

EVENTS = Counter(
    "recstream_stream_events_total",
    "Messages consumed from the events topic, by event type and outcome",
    ["event_type", "outcome"],
)
DLQ = Counter(
    "recstream_stream_dlq_total",
    "Messages sent to the dead-letter topic, by reason",
    ["reason"],
)
LAG = Gauge(
    "recstream_stream_consumer_lag",
    "Messages between this consumer's position and the end of the partition",
    ["partition"],
)
BATCH_SIZE = Histogram(
    "recstream_stream_batch_size",
    "Messages per processed micro-batch",
    buckets=_BATCH_BUCKETS,
)
FEAST_WRITE = Histogram(
    "recstream_stream_feast_write_seconds",
    "Duration of one micro-batch's Feast online write (sequences and items)",
    buckets=_LATENCY_BUCKETS,
)
BATCH_SECONDS = Histogram(
    "recstream_stream_batch_seconds",
    "Duration of one micro-batch from poll return to offset commit",
    buckets=_LATENCY_BUCKETS,
)
PHASE_SECONDS = Counter(
    "recstream_stream_phase_seconds_total",
    "Time spent in each phase of the micro-batches that had records",
    ["phase"],
)
FRESHNESS = Histogram(
    "recstream_stream_feature_freshness_seconds",
    "Event time of a click to the moment its new sequence is readable online",
    buckets=_FRESHNESS_BUCKETS,
)
SAMPLES = Counter(
    "recstream_stream_samples_total",
    "Labelled training samples emitted, by label",
    ["label"],
)
PENDING = Gauge(
    "recstream_stream_pending_impressions",
    "Impressions waiting in the attribution window for their click",
    ["partition"],
)
REPLAYED = Counter(
    "recstream_stream_replayed_total",
    "Events skipped or samples suppressed because a previous run already applied them",
    ["what"],
)
RESTORES = Counter(
    "recstream_stream_partition_restores_total",
    "Partitions whose state was rebuilt after an assignment (start, restart, rebalance)",
)
ABANDONED = Counter(
    "recstream_stream_batches_abandoned_total",
    "Micro-batches dropped before a write because the group may have moved the partitions on",
    ["stage"],
)
STORE_FAILURES = Counter(
    "recstream_stream_store_failures_total",
    "Micro-batches whose Feast online read, or write after its retries, failed (op): "
    "rewound and retried",
    ["op"],
)
for _op in ("read", "write"):  # exported at 0 from the start: a first failure is an increase
    STORE_FAILURES.labels(_op)

WRITES_REFUSED = Counter(
    "recstream_stream_sequence_writes_refused_total",
    "User sequence rows the online store refused: it held a later Kafka position of the same "
    "partition (a stalled member's or a late write; Redis only). The user is read again",
)

CACHED_USERS = Gauge(
    "recstream_stream_cached_users",
    "User sequences held in this process's cache (bounded by max_cached_users)",
)
CACHE_EVICTIONS = Counter(
    "recstream_stream_cache_evictions_total",
    "User sequences dropped from the cache to keep it within max_cached_users",
)
OFFLINE_SAMPLES = Counter(
    "recstream_stream_offline_samples_total",
    "Samples written to the offline store's parquet (a re-export after a crash counts again)",
)
OFFLINE_ERRORS = Counter(
    "recstream_stream_offline_export_errors_total",
    "Parquet exports that failed; the next one starts again from the last commit",
)
OFFLINE_LAST = Gauge(
    "recstream_stream_offline_last_export_timestamp_seconds",
    "Unix time at which the last parquet export completed (with or without new samples)",
)


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> None:
    """Serve ``/metrics`` on ``port`` in a daemon thread (no-op for port 0)."""
    if port:
        start_http_server(port, addr=addr)

VARIANT_EVENTS = Counter(
    "recstream_stream_variant_events_total",
    "Valid impressions and clicks that carry an A/B variant, by variant and event type "
    "(at most MAX_VARIANTS names a process; more are counted as 'other')",
    ["variant", "event_type"],
)
MAX_VARIANTS = 20  # the variant is the client's word: its label values must stay few
_variants: set[str] = set()


def count_variant(variant: str, event_type: str, count: int) -> None:
    """Count ``count`` events of ``variant`` (the first MAX_VARIANTS names, then 'other')."""
    if variant not in _variants:
        if len(_variants) >= MAX_VARIANTS:
            variant = "other"
        else:
            _variants.add(variant)
    VARIANT_EVENTS.labels(variant, event_type).inc(count)

