"""Kafka connection settings and client factories shared by producers and consumers.

Works unchanged against any Kafka cluster (``bootstrap_servers`` plus optional SASL/TLS)
and against the local Tansu broker started by ``recstream stack up``. Consumer-group
timings default to a few seconds: with kafka-python's defaults the first group
assignment takes over 20 s on Tansu, with these about 3 s.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import MemberState
from pydantic import BaseModel, Field
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed


class Topics(BaseModel):
    """Topic names used by recstream."""

    events: str = "events"
    dlq: str = "events.dlq"
    samples: str = "samples"
    predictions: str = "predictions"

    def all(self) -> list[str]:
        return [self.events, self.dlq, self.samples, self.predictions]


class KafkaConfig(BaseModel):
    """How to reach the cluster; nested in each part's settings (``*_KAFKA__...`` env vars)."""

    bootstrap_servers: str = "127.0.0.1:19092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    topics: Topics = Field(default_factory=Topics)
    partitions: int = Field(default=4, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    # Consumer-group timings (ms): short so that joins and rebalances take seconds.
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    max_poll_interval_ms: int = 6000
    fetch_max_wait_ms: int = 20
    max_poll_records: int = 10000
    # How long a client tries to reach a first broker before it gives up (kafka-python's
    # bootstrap_timeout_ms).
    bootstrap_timeout_ms: int = Field(default=30000, ge=100)

    def common(self) -> dict[str, Any]:
        """Connection options every kafka-python client takes."""
        opts: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
            "bootstrap_timeout_ms": self.bootstrap_timeout_ms,
        }
        optional = {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_plain_username,
            "sasl_plain_password": self.sasl_plain_password,
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
        }
        opts.update({k: v for k, v in optional.items() if v is not None})
        return opts


def make_producer(cfg: KafkaConfig, **overrides: Any) -> KafkaProducer:
    """A producer that waits for the leader's ack and retries transient errors."""
    opts: dict[str, Any] = {"acks": 1, "linger_ms": 5, "retries": 5, **cfg.common()}
    opts.update(overrides)
    return KafkaProducer(**opts)


def make_consumer(
    cfg: KafkaConfig, group_id: str | None, *topics: str, **overrides: Any
) -> KafkaConsumer:
    """A consumer with manual commits and the short group timings of ``cfg``."""
    opts: dict[str, Any] = {
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": cfg.session_timeout_ms,
        "heartbeat_interval_ms": cfg.heartbeat_interval_ms,
        "max_poll_interval_ms": cfg.max_poll_interval_ms,
        "fetch_max_wait_ms": cfg.fetch_max_wait_ms,
        "max_poll_records": cfg.max_poll_records,
        **cfg.common(),
    }
    opts.update(overrides)
    return KafkaConsumer(*topics, **opts)


def resume(consumer: KafkaConsumer, tp: TopicPartition) -> None:
    """Resume ``tp`` after dropping what kafka-python parked of it while it was paused.

    kafka-python 3.0.12 parks the records of a paused partition that were fetched but not
    yet returned, and gives them back after the resume only if no other partition's
    (drained) records are in line, which after a first poll is never: the parked partition
    is then never fetched again and its consumption stops for good (seen: a partition
    restored off the poll loop, lag 727, nothing returned for minutes). Dropped, they are
    fetched again from the position. Reads kafka-python's fetcher (``_fetcher``, pinned
    kafka-python 3.0), as :func:`may_have_lost_membership` reads its coordinator.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    parked = getattr(fetcher, "_paused_partition_records", {})
    records = parked.pop(tp, None)
    if records is not None:
        records.drain()
    getattr(fetcher, "_paused_completed_fetches", {}).pop(tp, None)
    consumer.resume(tp)


def may_have_lost_membership(consumer: KafkaConsumer, cfg: KafkaConfig,
                             poll_margin: float = 0.9, session_margin: float = 0.5) -> bool:
    """Whether the group may already have given this member's partitions to another.

    True when kafka-python's coordinator is not in a stable generation (its heartbeat thread
    left the group after ``max_poll_interval_ms`` without a poll, or it is rejoining), when
    more than ``poll_margin`` of ``max_poll_interval_ms`` has passed since the last poll (the
    group is about to drop it), or more than ``session_margin`` of ``session_timeout_ms``
    since the last heartbeat answer (heartbeats go every ``heartbeat_interval_ms``: a gap
    that long means the whole process stalled, swapping or a stopped VM, and the broker may
    have dropped it). The poll margin is high on purpose: a batch slower than half the
    interval is legitimate and must not be abandoned and replayed again and again. Reads
    kafka-python's coordinator (``_coordinator``, pinned kafka-python 3.0); a consumer
    without a group never loses membership.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or consumer.config.get("group_id") is None:
        return False
    if coordinator.state is not MemberState.STABLE or coordinator.need_rejoin():
        return True
    beat = coordinator.heartbeat
    now = time.monotonic()
    return (now - beat.last_poll > poll_margin * cfg.max_poll_interval_ms / 1000
            or now - max(beat.last_receive, beat.last_reset)
            > session_margin * cfg.session_timeout_ms / 1000)


@retry(
    retry=retry_if_exception_type(KafkaError),
    stop=stop_after_delay(30),
    wait=wait_fixed(0.5),
    reraise=True,
)
def ensure_topics(cfg: KafkaConfig) -> list[str]:
    """Create recstream's topics if missing; return the names that were created.

    Retries for up to 30 s while the broker is still starting.
    """
    admin = KafkaAdminClient(client_id="recstream-admin", **cfg.common())
    try:
        existing = set(admin.list_topics())
        wanted = [t for t in cfg.topics.all() if t not in existing]
        created: list[str] = []
        for name in wanted:
            topic = NewTopic(name, cfg.partitions, cfg.replication_factor)
            try:
                admin.create_topics([topic])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()
