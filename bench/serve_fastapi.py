"""A plain FastAPI app with the same model and Feast store as recstream: the serving
benchmark's system (2), what a user might write instead of Ray Serve.

``POST /rank`` takes recstream's body (``serve.schemas.RankRequest``), reads the
``ranker_v1`` features with ``FeatureAccess.ranker_features``, scores with
``models.inference.score_candidates`` and answers recstream's ``RankResponse``. The handler
is a plain ``def``: FastAPI runs it on its thread pool, so concurrent requests score in
parallel threads. No batching, no registry following: the model is the pointer's version at
start.

Run (:mod:`bench.serve_http` starts it this way)::

    BENCH_FEAST_DIR=DIR BENCH_FEAST_PROJECT=NAME BENCH_REGISTRY=ROOT BENCH_FAMILY=din \\
        uvicorn bench.serve_fastapi:app --port 8001 --workers 1
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from fastapi import FastAPI

from features.store import FeastConfig, FeatureAccess
from models.inference import score_candidates
from models.registry import Registry
from serve.schemas import RankRequest, RankResponse, ScoredItem

MAX_HISTORY = int(os.environ.get("BENCH_MAX_HISTORY", "50"))
_features = FeatureAccess.open(FeastConfig(data_dir=Path(os.environ["BENCH_FEAST_DIR"]),
                                           project=os.environ["BENCH_FEAST_PROJECT"]))
_registry = Registry(os.environ["BENCH_REGISTRY"])
_version = _registry.pointer(os.environ["BENCH_FAMILY"])
if _version is None:
    raise RuntimeError(f"no {os.environ['BENCH_FAMILY']}/live in {_registry}")
_model = _registry.load(_version)
_model.eval()
_bank = _model.bank.version
app = FastAPI()


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/rank")
def rank(req: RankRequest) -> RankResponse:
    items = list(dict.fromkeys(req.candidates))
    hist_items, hist_cats, cats = _features.ranker_features(req.user_id, items)
    scores = score_candidates(_model, hist_items, hist_cats, items, cats, max_len=MAX_HISTORY)
    ranked = sorted(zip(items, scores.tolist(), strict=True), key=lambda p: p[1], reverse=True)
    return RankResponse(user_id=req.user_id, request_id=req.request_id or uuid.uuid4().hex,
                        variant="fastapi", model_version=_version, bank_version=_bank,
                        history_length=len(hist_items),
                        items=[ScoredItem(item_id=i, score=s) for i, s in ranked[:req.k]])
