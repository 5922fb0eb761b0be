"""Prometheus metrics of the incremental trainer; every name is documented in docs/metrics.md.

Metrics live in the process-wide default registry; :func:`start_metrics_server` serves them
on ``TRAIN_METRICS_PORT``. Label values are small, closed sets (reason, model).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_SAMPLES = (100, 500, 1000, 5000, 10_000, 50_000, 100_000)

FRESHNESS = Gauge(
    "recstream_train_model_freshness_seconds",
    "Wall clock minus the event time of the newest sample in the live version",
)
UPDATE_SECONDS = Histogram(
    "recstream_train_update_seconds",
    "Duration of one incremental update (fine-tune, guard, publish or reject)",
    buckets=_SECONDS,
)
UPDATE_SAMPLES = Histogram(
    "recstream_train_update_samples",
    "New samples that fed one incremental update",
    buckets=_SAMPLES,
)
PROMOTIONS = Counter(
    "recstream_train_promotions_total",
    "Versions the trainer promoted to its family's live pointer",
)
REJECTIONS = Counter(
    "recstream_train_rejections_total",
    "Candidates the guard rejected, by reason",
    ["reason"],
)
REJECTED_IN_A_ROW = Gauge(
    "recstream_train_rejections_in_a_row",
    "Updates rejected since the last promotion",
)
EVAL_AUC = Gauge(
    "recstream_train_eval_auc",
    "AUC on the newest held-out slice at the last update, by model (live, candidate)",
    ["model"],
)
EVAL_LOGLOSS = Gauge(
    "recstream_train_eval_logloss",
    "Logloss on the newest held-out slice at the last update, by model (live, candidate)",
    ["model"],
)
SAMPLES = Counter(
    "recstream_train_samples_total",
    "Samples read from the samples topic, by outcome (used, invalid)",
    ["outcome"],
)
LAST_UPDATE = Gauge(
    "recstream_train_last_update_timestamp_seconds",
    "When the last update ended (promoted or rejected)",
)

for _reason in ("auc", "logloss", "calibration", "anchor_auc", "anchor_logloss",
                "anchor_calibration", "nan", "collapsed", "label_shift", "live_moved"):
    REJECTIONS.labels(_reason)
for _outcome in ("used", "invalid"):
    SAMPLES.labels(_outcome)


def start_metrics_server(port: int) -> None:
    """Serve /metrics on ``port`` (0: none)."""
    if port:
        start_http_server(port)
