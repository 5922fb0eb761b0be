"""The feature stage: the ``ranker_v1`` FeatureService of one request from Feast's online store."""

import logging
import time
from typing import Any

from ray import serve
from ray.serve.metrics import Histogram

from features.store import FeastConfig, FeatureAccess, StoreUnavailable

log = logging.getLogger(__name__)


@serve.deployment
class FeatureReader:
    """Reads the ``ranker_v1`` FeatureService for one request from the online store."""

    def __init__(self, feast: dict[str, Any]) -> None:
        self.features = FeatureAccess.open(FeastConfig.model_validate(feast))
        self.staleness = Histogram(
            "recstream_serve_feature_staleness_seconds",
            description="Age of the newest event in the sequence a request was scored with "
                        "(now minus its event time; users with no clicks are not counted)",
            boundaries=[1, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400])

    def fetch(self, user_id: int, item_ids: list[int]
              ) -> tuple[list[int], list[int], list[int]] | None:
        """History items, history categories, candidate categories; None when the online
        store cannot be read now (down, locked, timed out: the ingress answers 503)."""
        try:
            got = self.features.ranker_inputs(user_id, item_ids)
        except StoreUnavailable as err:  # a missing table or file is raised: a 500
            log.warning("feature store unavailable: %r", err)
            return None
        if got.last_event_ms is not None:
            self.staleness.observe(max(time.time() - got.last_event_ms / 1000, 0.0))
        return got.hist_item_ids, got.hist_cat_ids, got.cand_cat_ids
