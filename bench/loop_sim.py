"""The simulated clients of the live loop: users who ask ``/rank``, see the top k, click by the
world's true probabilities, and send impressions and clicks back to Kafka with the response's
``request_id``, ``variant`` and ``model_version``, as a real client would.

Run: ``Clients(world, base_url, kafka_cfg, ...).run(seconds)`` (``bench/loop.py`` does).
Each request is kept as a :class:`Served` row: the arm, the version, the true probabilities of
what was shown, of the oracle's top k (ranking by the true probability) and of a random k.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import requests

from bench.world import World
from stream.events import Event, EventType
from stream.kafka import KafkaConfig, make_producer


@dataclass
class Served:
    """One answered (or failed) request."""

    t_s: float  # seconds since the start
    user: int
    variant: str | None
    model_version: str | None
    shown_p: float  # mean true probability of the shown items
    oracle_p: float  # ... of the oracle's top k
    random_p: float  # ... of the candidates (a random k, in expectation)
    clicks: int
    shown: int
    ok: bool


class Clients:
    """``n_clients`` threads of simulated users (see the module docstring)."""

    def __init__(self, world: World, base: str, kafka: KafkaConfig, *, k: int = 5,
                 n_clients: int = 4, seed: int = 0) -> None:
        self.world, self.base, self.kafka, self.k = world, base, kafka, k
        self.n_clients, self.seed = n_clients, seed
        self.lock = threading.Lock()  # the world's click memory is shared
        self.served: list[Served] = []
        self.failed_sends: list[BaseException] = []
        self.producer = make_producer(kafka)
        self.impressions = 0
        self.start = 0.0
        self.wall_start = 0.0

    def _one(self, http: requests.Session, rng: np.random.Generator, n: int) -> None:
        t = time.monotonic() - self.start
        user = int(rng.integers(1, self.world.cfg.n_users + 1))
        with self.lock:
            cands = self.world.candidates(user, t)
            p_all = self.world.p_click(user, cands, t)
        request_id = f"loop-{self.seed}-{n}"
        try:
            r = http.post(f"{self.base}/rank", timeout=30, json={
                "user_id": user, "candidates": cands, "k": self.k, "request_id": request_id})
            ok = r.status_code == 200
        except requests.RequestException:
            ok = False
        oracle = float(np.sort(p_all)[-self.k:].mean())
        if not ok:
            self.served.append(Served(t, user, None, None, np.nan, oracle, float(p_all.mean()),
                                      0, 0, False))
            return
        body = r.json()
        shown = [it["item_id"] for it in body["items"]]
        p = p_all[[cands.index(i) for i in shown]]
        clicked = rng.random(len(p)) < p
        common = {"user_id": user, "request_id": request_id, "variant": body["variant"],
                  "model_version": body["model_version"]}
        stamp = datetime.now(UTC)
        events = []
        for item, c in zip(shown, clicked, strict=True):
            cat = int(self.world.category[item])
            events.append(Event(event_id=f"{request_id}-{item}-imp", item_id=item,
                                category_id=cat, event_type=EventType.IMPRESSION, ts=stamp,
                                **common))
            if c:
                events.append(Event(event_id=f"{request_id}-{item}-clk", item_id=item,
                                    category_id=cat, event_type=EventType.CLICK, ts=stamp,
                                    **common))
                with self.lock:
                    self.world.record_click(user, item)
        for ev in events:
            self.producer.send(self.kafka.topics.events, key=ev.key(),
                               value=ev.to_bytes()).add_errback(self.failed_sends.append)
        with self.lock:
            self.impressions += len(shown)
        self.served.append(Served(t, user, body["variant"], body["model_version"],
                                  float(p.mean()), oracle, float(p_all.mean()),
                                  int(clicked.sum()), len(shown), True))

    def _client(self, c: int, until: float) -> None:
        rng = np.random.default_rng([self.seed, c])
        with requests.Session() as http:
            n = 0
            while time.monotonic() < until:
                self._one(http, rng, c * 10_000_000 + n)
                n += 1

    def run(self, seconds: float) -> None:
        """Send requests from every client for ``seconds``; then flush the events."""
        self.start = time.monotonic()
        self.wall_start = time.time()
        until = self.start + seconds
        threads = [threading.Thread(target=self._client, args=(c, until), daemon=True)
                   for c in range(self.n_clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        self.producer.flush()
        self.producer.close()
