"""The A/B assignment: sticky per user, proportional to the weights, never a zero-weight arm,
users of unchanged arms stay when another arm's weight changes, and fixed test vectors that
another service can reproduce."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from serve.routing import choose_variant, unit

USERS = range(1, 20_001)


@given(st.integers(1, 2**63 - 1), st.text(max_size=20), st.text(min_size=1, max_size=20))
def test_unit_is_stable_and_in_range(user: int, salt: str, variant: str) -> None:
    assert 0.0 < unit(salt, user, variant) < 1.0
    assert unit(salt, user, variant) == unit(salt, user, variant)


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


@pytest.mark.parametrize("weights", [[0.9, 0.1], [0.5, 0.5], [0.2, 0.3, 0.5]])
def test_split_follows_the_weights(weights: list[float]) -> None:
    names = [f"v{i}" for i in range(len(weights))]
    counts = Counter(choose_variant(u, names, weights) for u in USERS)
    for name, w in zip(names, weights, strict=True):
        assert abs(counts[name] / len(USERS) - w) < 0.015, counts


def test_a_weight_change_moves_only_users_into_or_out_of_that_arm() -> None:
    names = ["a", "b", "c"]
    before = {u: choose_variant(u, names, [0.4, 0.4, 0.2]) for u in USERS}
    grown = {u: choose_variant(u, names, [0.4, 0.4, 0.5]) for u in USERS}  # c grows
    assert all(grown[u] == before[u] or grown[u] == "c" for u in USERS)
    assert all(before[u] != "c" or grown[u] == "c" for u in USERS)
    shrunk = {u: choose_variant(u, names, [0.4, 0.4, 0.05]) for u in USERS}  # c shrinks
    assert all(shrunk[u] == before[u] for u in USERS if before[u] != "c")
    added = {u: choose_variant(u, [*names, "d"], [0.4, 0.4, 0.2, 0.3]) for u in USERS}
    assert all(added[u] == before[u] or added[u] == "d" for u in USERS)
    moved = sum(grown[u] != before[u] for u in USERS) / len(USERS)
    assert 0.13 < moved < 0.20  # c's share went from 0.2 to 0.5/1.3 = 0.385: ~0.18 moved


def test_a_new_salt_reshuffles() -> None:
    a = [choose_variant(u, ["a", "b"], [1, 1], salt="exp-1") for u in USERS]
    b = [choose_variant(u, ["a", "b"], [1, 1], salt="exp-2") for u in USERS]
    assert 0.4 < sum(x != y for x, y in zip(a, b, strict=True)) / len(USERS) < 0.6


# Fixed vectors: (salt, user, names, weights) -> variant. Another service's implementation of
# the documented rule (serve/routing.py) must give the same answers.
VECTORS = [
    ("recstream-ab", 1, ["a", "b"], [0.5, 0.5], "a"),
    ("recstream-ab", 2, ["a", "b"], [0.5, 0.5], "b"),
    ("recstream-ab", 42, ["control", "treatment"], [0.9, 0.1], "control"),
    ("exp-7", 123456789, ["a", "b", "c"], [1, 1, 1], "b"),
    ("exp-7", 2**62, ["a", "b", "c"], [1, 0, 1], "c"),
]


@pytest.mark.parametrize(("salt", "user", "names", "weights", "want"), VECTORS)
def test_vectors(salt: str, user: int, names: list[str], weights: list[float],
                 want: str) -> None:
    assert choose_variant(user, names, weights, salt=salt) == want


def test_bad_weights_are_refused() -> None:
    with pytest.raises(ValueError):
        choose_variant(1, ["a"], [0.0])
    with pytest.raises(ValueError):
        choose_variant(1, ["a", "b"], [1.0])
    with pytest.raises(ValueError):
        choose_variant(1, ["a", "b"], [1.0, -1.0])
