"""A/B assignment: a sticky, weighted choice of variant per user (weighted rendezvous hashing).

Each (experiment salt, user, variant) gets a number ``u`` in (0, 1) from BLAKE2b; the user
goes to the variant with the highest score ``weight / -ln(u)``. Then:

* a user keeps their variant for as long as the weights and the salt stay;
* variant ``v`` gets a share ``w_v / sum(w)`` of the users (exactly, in expectation);
* when only the weight of one variant ``b`` changes, only users moving into ``b`` (it grew)
  or out of ``b`` (it shrank) change arm: a user of another arm whose score for ``b`` stays
  below their own arm's keeps their arm. Adding a variant moves only users into it;
  removing one moves only its users. A new salt reshuffles everyone (a new experiment).

Another service computes the same arm with: ``u = (int.from_bytes(blake2b(f"{salt}:{user}:
{variant}".encode(), digest_size=8).digest(), "big") + 0.5) / 2**64``, score
``weight / -ln(u)`` (0 for weight 0), the variant with the highest score (ties: the first
in the configured order). Test vectors: tests/serve/test_routing.py.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

DEFAULT_SALT = "recstream-ab"


def unit(salt: str, user_id: int, variant: str) -> float:
    """A stable number in (0, 1) for (``salt``, ``user_id``, ``variant``)."""
    digest = hashlib.blake2b(f"{salt}:{user_id}:{variant}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2**64


def choose_variant(user_id: int, names: Sequence[str], weights: Sequence[float],
                   salt: str = DEFAULT_SALT) -> str:
    """The variant of ``user_id`` under ``weights`` (need not sum to 1; zero = no traffic)."""
    if len(names) != len(weights) or not names:
        raise ValueError("names and weights must be non-empty and of equal length")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError("weights must be >= 0 with a positive sum")
    best, best_score = names[0], -1.0
    for name, weight in zip(names, weights, strict=True):
        if weight <= 0:
            continue
        score = weight / -math.log(unit(salt, user_id, name))
        if score > best_score:
            best, best_score = name, score
    return best
