"""The stream's labelled samples as a ``SampleSet`` the models train on.

Run: ``to_sample_set(decode_batch(record.value), max_len=50)`` for records of the samples
topic, or ``to_sample_set(read_samples(dir).to_dict("records"))`` for the offline parquet.

Each sample carries its own point-in-time history (the clicks before its event, oldest
first, as the consumer wrote them); the most recent ``max_len`` are kept. DIEN's auxiliary
loss wants a negative per history position: it is drawn, as ``models.data.samples`` does,
from the non-clicked items of samples earlier in the set. A sample that breaks the contract
(label not 0/1, an id < 0, histories of unequal lengths, a missing field) is counted by
reason and left out, never trained on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.data.samples import SampleSet

FIELDS = ("user_id", "item_id", "category_id", "label", "event_ts_ms", "hist_item_ids",
          "hist_cat_ids")


@dataclass
class Decoded:
    """The valid samples in event-time order and the count of those left out, by reason."""

    samples: SampleSet
    invalid: Counter[str] = field(default_factory=Counter)


def _problem(s: Mapping[str, Any]) -> str | None:
    """Why a sample dict cannot be trained on, or None."""
    if any(k not in s for k in FIELDS):
        return "missing_field"
    try:
        label, ids = int(s["label"]), (int(s["user_id"]), int(s["item_id"]),
                                       int(s["category_id"]))
        hist = [int(v) for v in s["hist_item_ids"]], [int(v) for v in s["hist_cat_ids"]]
    except (TypeError, ValueError, OverflowError):
        return "not_integer"
    if label not in (0, 1):
        return "bad_label"
    if min(ids) < 0 or any(v < 0 for v in hist[0]) or any(v < 0 for v in hist[1]):
        return "negative_id"
    if len(hist[0]) != len(hist[1]):
        return "history_mismatch"
    return None


def to_sample_set(samples: Iterable[Mapping[str, Any]], max_len: int = 50, seed: int = 0,
                  by_event_time: bool = True) -> Decoded:
    """The valid ``samples`` (dicts as the stream writes them) as a SampleSet by event time,
    or, ``by_event_time=False``, in the order given (the order the stream emitted them)."""
    rows: list[Mapping[str, Any]] = []
    invalid: Counter[str] = Counter()
    for s in samples:
        problem = _problem(s)
        if problem is None:
            rows.append(s)
        else:
            invalid[problem] += 1
    if by_event_time:
        rows.sort(key=lambda s: int(s["event_ts_ms"]))
    n = len(rows)
    hist_item = np.zeros((n, max_len), np.int64)  # (N, T)
    hist_cat = np.zeros((n, max_len), np.int64)  # (N, T)
    hist_len = np.zeros(n, np.int64)
    for i, s in enumerate(rows):
        items, cats = list(s["hist_item_ids"])[-max_len:], list(s["hist_cat_ids"])[-max_len:]
        hist_item[i, :len(items)], hist_cat[i, :len(cats)] = items, cats
        hist_len[i] = len(items)

    def column(name: str) -> np.ndarray:
        return np.fromiter((int(s[name]) for s in rows), np.int64, n)

    item, cat, label = column("item_id"), column("category_id"), column("label")
    neg_item, neg_cat = _negatives(item, cat, label, hist_len, max_len, seed)
    return Decoded(SampleSet(
        user_id=column("user_id"), item_id=item, cat_id=cat, label=label,
        ts=column("event_ts_ms"), hist_item=hist_item, hist_cat=hist_cat, hist_len=hist_len,
        neg_item=neg_item, neg_cat=neg_cat), invalid)


def _negatives(item: np.ndarray, cat: np.ndarray, label: np.ndarray, hist_len: np.ndarray,
               max_len: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, T) negatives for DIEN's auxiliary loss: a non-clicked item of an earlier sample
    (padding where there is none yet, or past the history)."""
    n = len(item)
    nonclick = label == 0
    pool_item, pool_cat = item[nonclick], cat[nonclick]
    earlier = np.cumsum(nonclick) - nonclick  # non-clicks before each row
    draw = np.random.default_rng(seed).random((n, max_len))
    pick = np.minimum((draw * earlier[:, None]).astype(np.int64), max(len(pool_item) - 1, 0))
    mask = (np.arange(max_len)[None, :] < hist_len[:, None]) & (earlier[:, None] > 0)
    if not len(pool_item):
        return np.zeros((n, max_len), np.int64), np.zeros((n, max_len), np.int64)
    return np.where(mask, pool_item[pick], 0), np.where(mask, pool_cat[pick], 0)


def concat(sets: list[SampleSet]) -> SampleSet:
    """One SampleSet of ``sets`` in the given order (histories padded to the widest)."""
    width = max((s.max_len for s in sets), default=1)

    def pad(a: np.ndarray) -> np.ndarray:
        return np.pad(a, ((0, 0), (0, width - a.shape[1])))

    cols = {}
    for name in SampleSet.__dataclass_fields__:
        parts = [getattr(s, name) for s in sets]
        cols[name] = np.concatenate([pad(p) if p.ndim == 2 else p for p in parts]) if parts \
            else np.zeros((0, width) if name.startswith(("hist_item", "hist_cat", "neg"))
                          else 0, np.int64)
    return SampleSet(**cols)
