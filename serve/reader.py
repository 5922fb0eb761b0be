"""The feature stage: the ``ranker_v1`` FeatureService of one request from Feast's online store."""

import logging
from typing import Any

from ray import serve

from features.store import FeastConfig, FeatureAccess, StoreUnavailable

log = logging.getLogger(__name__)


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
