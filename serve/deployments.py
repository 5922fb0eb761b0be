"""Ray Serve deployments, one per stage: feature reading, scoring, and the HTTP ingress.

``Ranker`` (ingress, FastAPI) picks the user's A/B variant, asks ``FeatureReader`` for the
``ranker_v1`` features from Feast, and sends them to that variant's ``Scorer``
(:mod:`serve.scorer`), which batches requests (limits in ``user_config``), runs the DIN/DIEN
model on GPU or CPU and follows its registry pointer.

No ``from __future__ import annotations`` here: FastAPI inside ``serve.ingress`` needs the
real annotation objects to see that ``RankRequest`` is the request body.
"""

import logging
import time
import uuid
from typing import Any

from fastapi import FastAPI, HTTPException
from ray import serve
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter, Histogram

from features.store import FeastConfig, FeatureAccess, StoreUnavailable
from serve.routing import choose_variant
from serve.schemas import RankRequest, RankResponse, ScoredItem

log = logging.getLogger(__name__)
api = FastAPI(title="recstream", description="DIN/DIEN ranking over streaming features")


@serve.deployment
class FeatureReader:
    """Reads the ``ranker_v1`` FeatureService for one request from the online store."""

    def __init__(self, feast: dict[str, Any]) -> None:
        self.features = FeatureAccess.open(FeastConfig.model_validate(feast))

    def fetch(self, user_id: int, item_ids: list[int]
              ) -> tuple[list[int], list[int], list[int]] | None:
        """History items, history categories, candidate categories; None when the online
        store cannot be read now (down, locked, timed out: the ingress answers 503)."""
        try:
            return self.features.ranker_features(user_id, item_ids)
        except StoreUnavailable as err:  # a missing table or file is raised: a 500
            log.warning("feature store unavailable: %r", err)
            return None


@serve.deployment
@serve.ingress(api)
class Ranker:
    """HTTP ingress: ``POST /rank``, ``GET /variants``, ``GET /healthz``."""

    def __init__(self, reader: DeploymentHandle, scorers: dict[str, DeploymentHandle],
                 weights: dict[str, float]) -> None:
        self.reader = reader
        self.scorers = scorers
        self.names = list(weights)
        self.weights = [weights[n] for n in self.names]
        self.requests = Counter("recstream_rank_requests", description="POST /rank calls",
                                tag_keys=("variant", "status"))  # type: ignore[arg-type]
        self.latency = Histogram("recstream_rank_latency_ms", description="POST /rank latency",
                                 boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
                                 tag_keys=("variant",))
        self.candidates = Histogram("recstream_rank_candidates", description="Candidates/request",
                                    boundaries=[1, 10, 50, 100, 200, 500, 1000],
                                    tag_keys=("variant",))

    @api.get("/healthz")
    def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/variants")
    def variants(self) -> dict[str, float]:
        return dict(zip(self.names, self.weights, strict=True))

    @api.post("/rank")
    async def rank(self, req: RankRequest) -> RankResponse:
        start = time.perf_counter()
        if req.variant is not None and req.variant not in self.scorers:
            self.requests.inc(tags={"variant": "unknown", "status": "400"})
            raise HTTPException(400, f"unknown variant {req.variant!r}; known: {self.names}")
        variant = req.variant or choose_variant(req.user_id, self.names, self.weights)
        items = list(dict.fromkeys(req.candidates))  # drop duplicates, keep order
        fetched = await self.reader.fetch.remote(req.user_id, items)
        if fetched is None:
            self.requests.inc(tags={"variant": variant, "status": "503"})
            raise HTTPException(503, "the feature store cannot be read now; retry shortly",
                                headers={"Retry-After": "1"})
        hist_items, hist_cats, cats = fetched
        scores, version, bank = await self.scorers[variant].score.remote(
            hist_items, hist_cats, items, cats)
        ranked = sorted(zip(items, scores, strict=True), key=lambda p: p[1], reverse=True)
        if req.k is not None:
            ranked = ranked[: req.k]
        self.requests.inc(tags={"variant": variant, "status": "200"})
        self.latency.observe((time.perf_counter() - start) * 1000, tags={"variant": variant})
        self.candidates.observe(len(items), tags={"variant": variant})
        return RankResponse(
            user_id=req.user_id,
            request_id=req.request_id or uuid.uuid4().hex,
            variant=variant,
            model_version=version,
            bank_version=bank,
            history_length=len(hist_items),
            items=[ScoredItem(item_id=i, score=float(s)) for i, s in ranked],
        )
