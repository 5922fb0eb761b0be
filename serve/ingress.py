"""The HTTP ingress: ``POST /rank``, ``POST /score``, ``GET /variants``, ``GET /healthz``.

``Ranker`` picks the user's A/B variant (:mod:`serve.routing`, the experiment in
``user_config``: changed at runtime by a redeploy of the config or ``recstream ab set``,
without a restart), asks ``FeatureReader`` for the ``ranker_v1`` features, has the variant's
``Scorer`` score the candidates, answers with the versions that scored them, and logs the
answer to the ``predictions`` topic (:mod:`serve.predlog`). An optional shadow variant scores
a copy of the request after the answer is sent; its predictions are logged (``shadow: true``)
and never returned.

No ``from __future__ import annotations`` here: FastAPI inside ``serve.ingress`` needs the
real annotation objects to see that ``RankRequest`` is the request body.
"""

import asyncio
import logging
import time
import uuid
from typing import Any

from fastapi import Request
from ray import serve
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter, Gauge, Histogram

from serve.experiment import KEY as EXPERIMENT
from serve.experiment import ExperimentStore
from serve.http import bad_request, make_api
from serve.routing import DEFAULT_SALT, choose_variant
from serve.schemas import RankRequest, RankResponse, ScoredItem, ScoreResponse

log = logging.getLogger(__name__)
_MS: list[float] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
_LIMITS: dict[str, Any] = {"max_body": 1 << 20, "digests": ()}  # this replica's, set in init
api = make_api(lambda: (_LIMITS["max_body"], _LIMITS["digests"]))
MAX_SHADOW_IN_FLIGHT = 64


@serve.deployment
@serve.ingress(api)
class Ranker:
    """HTTP ingress (see the module docstring); ``limits`` from the app config."""

    def __init__(self, reader: DeploymentHandle, scorers: dict[str, DeploymentHandle],
                 limits: dict[str, Any], kafka: dict[str, Any] | None,
                 watcher: DeploymentHandle | None = None,
                 experiment_path: str | None = None) -> None:
        self.reader, self.scorers = reader, scorers
        self.max_candidates = int(limits["max_candidates"])
        self.timeout_s = float(limits["request_timeout_s"])
        _LIMITS.update(max_body=int(limits["max_body_bytes"]),
                       digests=tuple(limits.get("api_key_digests") or ()))
        self.names = list(scorers)
        self.weights = [1.0] * len(self.names)
        self.salt, self.shadow = DEFAULT_SALT, None
        self.shadows_in_flight = 0
        self._metrics()
        self.predictions = None
        if kafka is not None:
            from serve.predlog import PredictionLog
            from stream.kafka import KafkaConfig

            self.predictions = PredictionLog(
                KafkaConfig.model_validate(kafka),
                on_sent=lambda n: self.logged.inc(n, tags={"outcome": "sent"}),
                on_dropped=lambda n: self.logged.inc(n, tags={"outcome": "dropped"}))
        self.store = ExperimentStore(experiment_path) if experiment_path else None
        self.configured: dict[str, Any] | None = None  # the config's, from user_config
        if watcher is not None and self.store is not None:
            self.follow = asyncio.get_running_loop().create_task(self._follow(watcher))

    async def _follow(self, watcher: DeploymentHandle) -> None:
        """Apply each change of the experiment file (``recstream ab set``)."""
        known: str | None = "unread"
        while True:
            try:
                now = (await watcher.changed.remote({EXPERIMENT: known}))[EXPERIMENT]
                if now == known:
                    continue
                known = now
                assert self.store is not None
                override = await asyncio.to_thread(self.store.read)
                if override is not None:
                    self._apply({**(self.configured or {}), **override})
                elif self.configured is not None:
                    self._apply(self.configured)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # a bad override is logged; the last good one stays
                log.error("experiment change not applied: %r", err)
                await asyncio.sleep(1.0)

    def _metrics(self) -> None:
        self.requests = Counter("recstream_rank_requests", description="Requests by variant "
                                "and status", tag_keys=("variant", "status", "path"))  # type: ignore[arg-type]
        self.latency = Histogram("recstream_rank_latency_ms", description="Answered request "
                                 "latency", boundaries=_MS, tag_keys=("variant",))
        self.feature_ms = Histogram("recstream_rank_feature_ms", description="Feature fetch "
                                    "latency", boundaries=_MS, tag_keys=("variant",))
        self.model_ms = Histogram("recstream_rank_model_ms", description="Scoring latency "
                                  "(queue, batch, model)", boundaries=_MS, tag_keys=("variant",))
        self.candidates = Histogram("recstream_rank_candidates", description="Candidates a "
                                    "request", boundaries=[1.0, 10, 50, 100, 200, 500, 1000],
                                    tag_keys=("variant",))
        self.logged = Counter("recstream_rank_predictions_logged", description="Prediction "
                              "records sent to Kafka or dropped", tag_keys=("outcome",))
        self.weight = Gauge("recstream_rank_variant_weight", description="The experiment's "
                            "weight of each variant", tag_keys=("variant",))

    def reconfigure(self, experiment: dict[str, Any]) -> None:
        """The config's experiment (``user_config``); an ``ab set`` override wins over it."""
        self.configured = experiment
        override = self.store.read() if self.store is not None else None
        self._apply({**experiment, **(override or {})})

    def _apply(self, experiment: dict[str, Any]) -> None:
        """The experiment: ``weights`` (name -> weight), ``salt``, ``shadow`` (or None)."""
        weights = {str(k): float(v) for k, v in experiment["weights"].items()}
        unknown = set(weights) - set(self.scorers)
        shadow = experiment.get("shadow")
        if unknown or (shadow is not None and shadow not in self.scorers):
            raise ValueError(f"unknown variants {sorted(unknown) or [shadow]}; "
                             f"deployed: {self.names}")
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError("weights must be >= 0 with a positive sum")
        self.weights = [weights.get(n, 0.0) for n in self.names]
        self.salt, self.shadow = str(experiment.get("salt") or DEFAULT_SALT), shadow
        for name, w in zip(self.names, self.weights, strict=True):
            self.weight.set(w, tags={"variant": name})
        log.info("experiment now: salt %s, weights %s, shadow %s", self.salt,
                 dict(zip(self.names, self.weights, strict=True)), self.shadow)

    @api.get("/healthz")
    def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/variants")
    def variants(self) -> dict[str, Any]:
        return {"salt": self.salt, "shadow": self.shadow,
                "weights": dict(zip(self.names, self.weights, strict=True))}

    async def _score(self, req: RankRequest, path: str
                     ) -> tuple[str, list[int], list[float], str, str | None, int]:
        """(variant, items, scores in item order, model version, bank version, history)."""
        start = time.perf_counter()
        if len(req.candidates) > self.max_candidates:
            self.requests.inc(tags={"variant": "none", "status": "422", "path": path})
            raise bad_request(422, f"{len(req.candidates)} candidates; at most "
                                   f"{self.max_candidates}")
        if req.variant is not None and req.variant not in self.scorers:
            self.requests.inc(tags={"variant": "unknown", "status": "400", "path": path})
            raise bad_request(400, f"unknown variant {req.variant!r}; known: {self.names}")
        variant = req.variant or choose_variant(req.user_id, self.names, self.weights,
                                                self.salt)
        items = list(dict.fromkeys(req.candidates))  # drop duplicates, keep order
        try:
            fetched = await asyncio.wait_for(self.reader.fetch.remote(req.user_id, items),
                                             self.timeout_s)
            if fetched is None:
                self.requests.inc(tags={"variant": variant, "status": "503", "path": path})
                raise bad_request(503, "the feature store cannot be read now; retry shortly",
                                  **{"Retry-After": "1"})
            fetched_at = time.perf_counter()
            hist_items, hist_cats, cats = fetched
            scores, version, bank = await asyncio.wait_for(
                self.scorers[variant].score.remote(hist_items, hist_cats, items, cats),
                max(self.timeout_s - (fetched_at - start), 0.001))
        except TimeoutError:
            self.requests.inc(tags={"variant": variant, "status": "504", "path": path})
            raise bad_request(504, f"not answered within {self.timeout_s} s") from None
        done = time.perf_counter()
        tags = {"variant": variant}
        self.requests.inc(tags={"variant": variant, "status": "200", "path": path})
        self.latency.observe((done - start) * 1000, tags=tags)
        self.feature_ms.observe((fetched_at - start) * 1000, tags=tags)
        self.model_ms.observe((done - fetched_at) * 1000, tags=tags)
        self.candidates.observe(len(items), tags=tags)
        if self.shadow is not None and self.shadow != variant:
            self._shadow(req, hist_items, hist_cats, items, cats)
        return variant, items, scores, version, bank, len(hist_items)

    def _log(self, request_id: str, req: RankRequest, variant: str, version: str,
             bank: str | None, ranked: list[tuple[int, float]], shadow: bool = False) -> None:
        if self.predictions is not None:
            self.predictions.append({
                "request_id": request_id, "user_id": req.user_id, "variant": variant,
                "model_version": version, "bank_version": bank, "shadow": shadow,
                "ts_ms": int(time.time() * 1000),
                "items": [{"item_id": i, "score": s, "position": n}
                          for n, (i, s) in enumerate(ranked)]})

    def _shadow(self, req: RankRequest, *features: list[int]) -> None:
        """Score a copy with the shadow variant after answering; log it, return nothing."""
        if self.shadows_in_flight >= MAX_SHADOW_IN_FLIGHT:
            self.logged.inc(tags={"outcome": "shadow_skipped"})
            return
        self.shadows_in_flight += 1
        request_id = req.request_id or ""
        shadow = str(self.shadow)

        async def run() -> None:
            try:
                scores, version, bank = await self.scorers[shadow].score.remote(*features)
                ranked = sorted(zip(features[2], scores, strict=True), key=lambda p: -p[1])
                self._log(request_id, req, shadow, version, bank, ranked, shadow=True)
            except Exception as err:  # a shadow never fails the answer
                log.warning("shadow %s failed: %r", shadow, err)
            finally:
                self.shadows_in_flight -= 1

        asyncio.get_running_loop().create_task(run())

    @api.post("/rank")
    async def rank(self, req: RankRequest, request: Request) -> RankResponse:
        if req.request_id is None:
            req.request_id = uuid.uuid4().hex
        variant, items, scores, version, bank, history = await self._score(req, "rank")
        ranked = sorted(zip(items, scores, strict=True), key=lambda p: p[1], reverse=True)
        if req.k is not None:
            ranked = ranked[: req.k]
        self._log(req.request_id, req, variant, version, bank, ranked)
        return RankResponse(
            user_id=req.user_id, request_id=req.request_id, variant=variant,
            model_version=version, bank_version=bank, history_length=history,
            items=[ScoredItem(item_id=i, score=float(s)) for i, s in ranked])

    @api.post("/score")
    async def score(self, req: RankRequest) -> ScoreResponse:
        """Scores in the order of the candidates (duplicates dropped), unranked."""
        if req.request_id is None:
            req.request_id = uuid.uuid4().hex
        variant, items, scores, version, bank, history = await self._score(req, "score")
        self._log(req.request_id, req, variant, version, bank, list(zip(items, scores,
                                                                         strict=True)))
        return ScoreResponse(user_id=req.user_id, request_id=req.request_id, variant=variant,
                             model_version=version, bank_version=bank,
                             history_length=history, item_ids=items,
                             scores=[float(s) for s in scores])

    def __del__(self) -> None:
        if self.predictions is not None:
            self.predictions.close()
