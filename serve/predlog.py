"""The prediction log: every answered request written to the ``predictions`` topic, off the
response path.

Run: ``log = PredictionLog(kafka_cfg, on_sent=..., on_dropped=...)``; per answer
``log.append(record)`` (O(1), never blocks); ``log.close()`` sends what is buffered.

``append`` puts the record in a bounded buffer (``max_buffer``); a thread of its own sends
the buffer to Kafka as JSON, keyed by the user id (so one user's predictions stay in order on
one partition). A full buffer drops the record and counts it (``on_dropped``): the answer is
never held up by Kafka, and a replica starts and answers while Kafka is unreachable (the
thread connects, and retries every ``RETRY_S``, meanwhile the buffer fills). Records that
Kafka refuses after the producer's retries are counted as dropped too. The record's schema
is in docs/events.md ("Predictions").
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

from stream.kafka import KafkaConfig, make_producer

log = logging.getLogger(__name__)
RETRY_S = 5.0


class PredictionLog:
    """A bounded buffer of prediction records and the thread that sends them."""

    def __init__(self, cfg: KafkaConfig, *, max_buffer: int = 10_000,
                 on_sent: Callable[[int], None] = lambda n: None,
                 on_dropped: Callable[[int], None] = lambda n: None) -> None:
        self.topic = cfg.topics.predictions
        self.buffer: deque[dict[str, Any]] = deque()
        self.max_buffer = max_buffer
        self.on_sent, self.on_dropped = on_sent, on_dropped
        self.wake = threading.Event()
        self.closing = False
        self.cfg = cfg
        self.producer: Any = None
        self.thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self.thread.start()

    def append(self, record: dict[str, Any]) -> bool:
        """Queue ``record`` for sending; False (counted) when the buffer is full."""
        if len(self.buffer) >= self.max_buffer:
            self.on_dropped(1)
            return False
        self.buffer.append(record)
        self.wake.set()
        return True

    def _send(self, record: dict[str, Any]) -> None:
        future = self.producer.send(self.topic, key=str(record["user_id"]).encode(),
                                    value=orjson.dumps(record))
        future.add_callback(lambda _: self.on_sent(1))
        future.add_errback(self._failed)

    def _failed(self, err: Exception) -> None:
        self.on_dropped(1)
        log.warning("a prediction record was not written: %r", err)

    def _connect(self) -> bool:
        try:
            self.producer = make_producer(self.cfg, linger_ms=20, acks=1)
            return True
        except Exception as err:  # no broker yet: records wait in the bounded buffer
            log.warning("predictions: Kafka not reachable (%r); retrying in %s s", err,
                        RETRY_S)
            return False

    def _run(self) -> None:
        while self.producer is None and not self.closing:
            if not self._connect():
                self.wake.wait(timeout=RETRY_S)
        while self.producer is not None:
            self.wake.wait(timeout=0.5)
            self.wake.clear()
            while self.buffer:
                try:
                    self._send(self.buffer.popleft())
                except Exception as err:  # the producer's own buffer full, a closed client
                    self._failed(err)
            if self.closing and not self.buffer:
                return

    def close(self, timeout_s: float = 10.0) -> None:
        """Send what is buffered (up to ``timeout_s``), then close the producer."""
        self.closing = True
        self.wake.set()
        self.thread.join(timeout=timeout_s)
        if self.producer is not None:
            self.producer.flush(timeout=timeout_s)
            self.producer.close(timeout=timeout_s)
        if self.buffer:
            self.on_dropped(len(self.buffer))
