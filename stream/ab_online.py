"""How well each variant ranked what it showed: the served scores (the ``predictions`` topic)
joined to the clicks (the samples), for ``recstream ab report --online``.

Run: ``online_auc(read_predictions(cfg), samples)`` with ``samples`` from
:func:`stream.ab.read_topic`.

Serve logs every answer (docs/events.md, "predictions"); a client that sends the answer's
``request_id`` back with its impressions and clicks makes each sample joinable to the score
it was shown with, on (request_id, user_id, item_id). Per variant (and per model version
within it), the AUC of those scores against the clicks. Each variant is measured on its own
shown items, so two variants' figures are not a like-for-like comparison of the models (each
chose what it is judged on); a variant's AUC over time says whether its model keeps up with
the world.
Shadow answers are left out (never shown, never clicked).
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from sklearn.metrics import roc_auc_score

from stream.kafka import KafkaConfig, make_consumer
from stream.topicread import iter_topic

PREDICTION_COLUMNS = ["request_id", "user_id", "variant", "model_version", "item_id", "score"]
KEY = ["request_id", "user_id", "item_id"]  # one shown item of one answer


def read_predictions(cfg: KafkaConfig) -> pd.DataFrame:
    """The ``predictions`` topic as one row per returned item (:data:`PREDICTION_COLUMNS`),
    read to the true end of each partition with a group-less consumer. Shadow answers are left
    out; an answer logged twice (the producer is at least once) counts once; a key
    (request_id, user_id, item_id) answered twice with different versions or scores (a client
    that reused a request id) is ambiguous and left out (``attrs["ambiguous"]``: how many)."""
    rows: list[tuple[str, int, str, str, int, float]] = []
    reader = make_consumer(cfg, None)
    try:
        for rec in iter_topic(reader, cfg.topics.predictions):
            if not rec.value:
                continue
            answer = json.loads(rec.value)
            if answer.get("shadow"):
                continue
            rows += [(answer["request_id"], int(answer["user_id"]), answer["variant"],
                      answer["model_version"], int(it["item_id"]), float(it["score"]))
                     for it in answer["items"]]
    finally:
        reader.close()
    return unambiguous(pd.DataFrame(rows, columns=PREDICTION_COLUMNS))


def unambiguous(predictions: pd.DataFrame) -> pd.DataFrame:
    """``predictions`` with exact repeats dropped and the keys answered differently twice
    left out (counted in ``attrs["ambiguous"]``)."""
    frame = predictions.drop_duplicates()
    twice = frame.duplicated(KEY, keep=False)
    out = frame[~twice].reset_index(drop=True)
    out.attrs["ambiguous"] = int(frame[twice].drop_duplicates(KEY).shape[0])
    return out


def join_scores(predictions: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """The samples that carry a ``request_id`` with the score their item was served with, on
    (request_id, user_id, item_id): columns of both, ``label`` from the samples, ``variant``
    and ``model_version`` from the prediction (what scored it)."""
    labels = samples.dropna(subset=["request_id"])[[*KEY, "label"]]
    labels = labels.drop_duplicates(KEY).astype({"item_id": "int64", "user_id": "int64"})
    return predictions.merge(labels, on=KEY)


def _auc(rows: pd.DataFrame) -> dict[str, Any]:
    y = rows["label"].to_numpy()
    both = 0 < y.sum() < len(y)  # one class only: no AUC
    return {"auc": float(roc_auc_score(y, rows["score"].to_numpy())) if both else None,
            "impressions": len(rows), "clicks": int(y.sum())}


def auc_by_variant(joined: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per variant of a :func:`join_scores` frame: ``auc``, ``impressions``, ``clicks``."""
    return {str(v): _auc(rows) for v, rows in joined.groupby("variant")}


def online_auc(predictions: pd.DataFrame, samples: pd.DataFrame) -> dict[str, Any]:
    """``{"variants": {name: {auc, impressions, clicks}}, "model_versions": [{variant,
    model_version, auc, impressions, clicks}], "joined": n, "unjoined_samples": m,
    "ambiguous": k}`` (see the module docstring)."""
    joined = join_scores(predictions, samples)
    with_id = len(samples.dropna(subset=["request_id"]).drop_duplicates(KEY))
    return {
        "variants": auc_by_variant(joined),
        "model_versions": [{"variant": str(v), "model_version": str(m), **_auc(rows)}
                           for (v, m), rows in joined.groupby(["variant", "model_version"])],
        "joined": len(joined), "unjoined_samples": with_id - len(joined),
        "ambiguous": int(predictions.attrs.get("ambiguous", 0)),
    }
