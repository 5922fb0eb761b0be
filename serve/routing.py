"""A/B traffic split: a sticky, weighted choice of model variant per user.

A user always lands on the same variant while the weights stay the same (hash of the
user id, not a random draw), so an A/B test compares users, not requests.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate


def bucket(user_id: int, salt: str = "recstream-ab") -> float:
    """A stable number in [0, 1) for ``user_id``."""
    digest = hashlib.blake2b(f"{salt}:{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def choose_variant(user_id: int, names: Sequence[str], weights: Sequence[float],
                   salt: str = "recstream-ab") -> str:
    """The variant of ``user_id`` under ``weights`` (need not sum to 1; zero = no traffic)."""
    if len(names) != len(weights) or not names:
        raise ValueError("names and weights must be non-empty and of equal length")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("weights must have a positive sum")
    edges = list(accumulate(w / total for w in weights))
    idx = bisect_right(edges, bucket(user_id, salt))
    idx = min(idx, len(names) - 1)
    while weights[idx] <= 0:  # float rounding at an edge: step back to a live variant
        idx -= 1
    return names[idx]
