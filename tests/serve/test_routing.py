"""The A/B split: sticky per user, proportional to the weights, never a zero-weight arm."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from serve.routing import bucket, choose_variant


@given(st.integers(1, 2**63 - 1))
def test_bucket_is_stable_and_in_range(user: int) -> None:
    assert 0.0 <= bucket(user) < 1.0
    assert bucket(user) == bucket(user)


@given(
    user=st.integers(1, 2**63 - 1),
    weights=st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=5).filter(
        lambda w: sum(w) > 0),
)
def test_zero_weight_variants_get_no_user(user: int, weights: list[float]) -> None:
    names = [f"v{i}" for i in range(len(weights))]
    chosen = choose_variant(user, names, weights)
    assert weights[names.index(chosen)] > 0
    assert choose_variant(user, names, weights) == chosen


def test_split_follows_the_weights() -> None:
    counts = Counter(choose_variant(u, ["a", "b"], [0.9, 0.1]) for u in range(1, 20_001))
    assert 0.88 < counts["a"] / 20_000 < 0.92


def test_bad_weights_are_refused() -> None:
    with pytest.raises(ValueError):
        choose_variant(1, ["a"], [0.0])
    with pytest.raises(ValueError):
        choose_variant(1, ["a", "b"], [1.0])
