"""Samples into the Feast offline store as parquet, for full refreshes and point-in-time joins.

Run: started by :func:`stream.service.run_service` as a background thread; or in code
``SampleExporter(settings).export_once()``; read with ``read_samples(dir)``.

The exporter is its own consumer group (``{group_id}-offline``) on the samples topic. Each
export reads what is there (at most ``max_samples`` samples or ``max_seconds`` of reading, so
that it ends under steady traffic), writes one parquet file per samples partition, named by
its offset range (``part-{partition}-{first}-{last}.parquet``) under
``{feast.data_dir}/offline/samples``, and commits after the file is written: at least once. A
crash between write and commit re-exports an overlapping range; :func:`read_samples` keeps one
row per ``sample_id``, so readers see each sample exactly once. An export that fails (a full
disk, a broker error) is logged and counted (``recstream_stream_offline_export_errors_total``)
and rewinds to the last commit, so the next one, an interval later, writes its samples again;
``recstream_stream_offline_last_export_timestamp_seconds`` tells when one last completed (the
``RecstreamOfflineExportStalled`` alert watches it). ``event_timestamp`` (the sample's event
time) is the column a Feast point-in-time join uses.

The same export writes the batch sources of the feature views (:mod:`features.definitions`),
parts of the same names: ``offline/user_behavior`` (per sample: user, event time, the history
the sample carries) and ``offline/items`` (item and category, at each change of it). So
``FeatureStore.get_historical_features`` with ``ranker_v1`` at a sample's event time returns
that sample's history and category. Re-exported ranges repeat identical rows, which a
point-in-time join does not mind.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pandas as pd
from kafka import KafkaConsumer

from features import definitions
from stream import metrics
from stream.kafka import make_consumer
from stream.samples import decode_batch
from stream.settings import StreamSettings

log = logging.getLogger(__name__)
POLL_RECORDS = 200  # samples records a poll (<= 250 samples each): the bound's overshoot
EXPORT_POLL_INTERVAL_MS = 300_000


def samples_dir(settings: StreamSettings) -> Path:
    return settings.feast.data_dir / "offline" / "samples"


def user_rows(samples: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``user_behavior_source``: each sample's user and history at its event time."""
    return samples[["user_id", "event_timestamp", "hist_item_ids", "hist_cat_ids",
                    "hist_ts_ms"]]


def item_rows(samples: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``item_source``: an item's category from its first sample on, and again from
    each sample whose category differs from the item's sample before it."""
    ordered = samples.sort_values("event_timestamp", kind="stable")
    changed = ordered["category_id"] != ordered.groupby("item_id")["category_id"].shift()
    return ordered.loc[changed, ["item_id", "category_id", "event_timestamp"]]


def _write_part(path: Path, frame: pd.DataFrame) -> None:
    """Write ``frame`` to ``path`` atomically (a reader never sees a half-written part)."""
    tmp = path.with_name(f".{path.stem}.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.rename(path)


class SampleExporter:
    """Copies the samples topic into parquet files (see module docstring)."""

    def __init__(self, settings: StreamSettings) -> None:
        self.settings = settings
        self.out = samples_dir(settings)
        self.out.mkdir(parents=True, exist_ok=True)
        data_dir = settings.feast.data_dir
        self.feature_parts = {data_dir / definitions.user_behavior_source.path: user_rows,
                              data_dir / definitions.item_source.path: item_rows}
        for directory in self.feature_parts:
            directory.mkdir(parents=True, exist_ok=True)
        # Writing a large export's parquet can take longer than the stream's short poll
        # interval; the group must not drop the exporter meanwhile (its commit would fail).
        self.consumer: KafkaConsumer = make_consumer(
            settings.kafka, f"{settings.group_id}-offline", settings.kafka.topics.samples,
            client_id="recstream-offline", max_poll_interval_ms=EXPORT_POLL_INTERVAL_MS)
        self._rewind_pending = False

    def export_once(self, timeout_ms: int = 1000, max_samples: int = 200_000,
                    max_seconds: float = 30.0) -> int:
        """Export what is there now (until a poll comes back empty, ``max_samples`` samples
        or ``max_seconds`` of reading); return the samples written."""
        rows: dict[int, list[dict]] = {}
        ranges: dict[int, tuple[int, int]] = {}
        joining = time.monotonic() + 15  # the first call waits for the group assignment
        deadline = time.monotonic() + max_seconds
        count = 0
        while count < max_samples and time.monotonic() < deadline:
            polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=POLL_RECORDS)
            if not polled and not self.consumer.assignment() and time.monotonic() < joining:
                continue
            if not polled:
                break
            for tp, recs in polled.items():
                got = rows.setdefault(tp.partition, [])
                for rec in recs:
                    samples = decode_batch(rec.value or b"{}")
                    got.extend(samples)
                    count += len(samples)
                first = ranges.get(tp.partition, (recs[0].offset, 0))[0]
                ranges[tp.partition] = (first, recs[-1].offset)
            timeout_ms = 100
        written = 0
        for part, samples in rows.items():
            if samples:
                first, last = ranges[part]
                name = f"part-{part}-{first:012d}-{last:012d}.parquet"
                frame = pd.DataFrame(samples)
                frame["event_timestamp"] = pd.to_datetime(frame["event_ts_ms"], unit="ms",
                                                          utc=True)
                _write_part(self.out / name, frame)
                for directory, rows_of in self.feature_parts.items():
                    _write_part(directory / name, rows_of(frame))
                written += len(samples)
        if ranges:
            self.consumer.commit()
        metrics.OFFLINE_SAMPLES.inc(written)
        metrics.OFFLINE_LAST.set(time.time())
        return written

    def export_or_rewind(self, timeout_ms: int = 1000) -> int:
        """:meth:`export_once`; if it fails, log and count the failure, and start the next
        call with a rewind to the last commit, so that it reads the same samples again
        (nothing skipped; a rewind that fails, as the coordinator may, is tried again)."""
        try:
            if self._rewind_pending:
                self._rewind()
                self._rewind_pending = False
            return self.export_once(timeout_ms=timeout_ms)
        except Exception:
            log.exception("parquet export failed; the next one starts again from the last "
                          "commit (the samples stay on the topic)")
            metrics.OFFLINE_ERRORS.inc()
            self._rewind_pending = True
            return 0

    def _rewind(self) -> None:
        for tp in self.consumer.assignment():
            committed = self.consumer.committed(tp)
            if committed is None:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, committed)

    def run(self, stop: threading.Event, every_s: float = 5.0) -> None:
        """Export every ``every_s`` seconds until ``stop`` is set, then once more; a failed
        export is retried at the next interval (see :meth:`export_or_rewind`)."""
        while not stop.wait(every_s):
            self.export_or_rewind()
        self.export_or_rewind(timeout_ms=200)

    def close(self) -> None:
        self.consumer.close(autocommit=False)


def read_samples(directory: Path) -> pd.DataFrame:
    """All exported samples, one row per ``sample_id``, in event-time order."""
    parts = sorted(directory.glob("part-*.parquet"))
    if not parts:
        return pd.DataFrame()
    frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    frame = frame.drop_duplicates("sample_id", keep="first")
    return frame.sort_values(["event_ts_ms", "sample_id"], kind="stable").reset_index(drop=True)
