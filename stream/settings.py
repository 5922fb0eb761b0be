"""Settings of the stream part (producer and consumer service), from ``STREAM_*`` env vars.

Nested fields use ``__``: ``STREAM_KAFKA__BOOTSTRAP_SERVERS=broker:9092``,
``STREAM_FEAST__ONLINE_STORE=redis``. Created once per process by :func:`stream_settings`
and passed down from there.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from features.store import FeastConfig
from stream.events import MAX_FUTURE_SKEW_S
from stream.kafka import KafkaConfig


class StreamSettings(BaseSettings):
    """Everything the producer and the consumer service need."""

    model_config = SettingsConfigDict(env_prefix="STREAM_", env_nested_delimiter="__")

    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    feast: FeastConfig = Field(default_factory=FeastConfig)
    group_id: str = "recstream-stream"
    max_history: int = Field(default=50, ge=1, le=1000)
    # Impressions wait this long for their click before they become negative samples.
    attribution_window_s: float = Field(default=30.0, gt=0)
    # Events stamped further in the future than this are rejected to the DLQ; at most the
    # contract's own limit (stream.events.MAX_FUTURE_SKEW: 5 minutes), which is the default.
    max_future_skew_s: float = Field(default=MAX_FUTURE_SKEW_S, ge=0, le=MAX_FUTURE_SKEW_S)
    metrics_port: int = 9101
    # Users whose sequences a consumer process keeps in memory (~5.8 KB each at 50 clicks).
    # Past it, the users cached longest ago are dropped (down to 90%) after a batch is
    # written; the next event of such a user reads its row from Feast again.
    max_cached_users: int = Field(default=200_000, ge=1)
    # Retention of the join-state changelog topic, set when the service creates it. A
    # partition idle for longer loses its last record and starts afresh (no open impression
    # survives that long); the topic grows at about the samples topic's rate meanwhile.
    changelog_retention_days: float = Field(default=30.0, gt=0)


@lru_cache(maxsize=1)
def stream_settings() -> StreamSettings:
    """The process-wide settings, read from the environment once."""
    return StreamSettings()
