"""build_samples: histories, negatives and the time split, against a brute-force reading."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from models.data.samples import build_samples, make_batch, time_split


def frames() -> st.SearchStrategy[pd.DataFrame]:
    row = st.tuples(st.integers(1, 4), st.integers(1, 30), st.integers(0, 1))
    return st.lists(row, min_size=1, max_size=60).map(lambda rows: pd.DataFrame(
        {"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
         "category_id": [r[1] % 5 + 1 for r in rows], "ts": np.arange(len(rows)),
         "label": [r[2] for r in rows]}))


@settings(max_examples=40, deadline=None)
@given(frames(), st.integers(1, 6))
def test_history_is_earlier_clicks_most_recent_oldest_first(frame: pd.DataFrame,
                                                            max_len: int) -> None:
    s = build_samples(frame, max_len=max_len, seed=1)
    for j, row in frame.iterrows():
        earlier = frame.iloc[:j]
        mine = earlier[earlier.user_id == row.user_id]
        clicks = mine[mine.label == 1].item_id.to_numpy()[-max_len:]
        n = int(s.hist_len[j])
        assert n == len(clicks)
        assert s.hist_item[j, :n].tolist() == clicks.tolist()
        assert (s.hist_item[j, n:] == 0).all() and (s.neg_item[j, n:] == 0).all()
        assert s.hist_cat[j, :n].tolist() == (clicks % 5 + 1).tolist()
        non = set(mine[mine.label == 0].item_id)
        anyone = set(earlier[earlier.label == 0].item_id)  # never a later event's item
        negs = set(s.neg_item[j, :n].tolist())
        if non:
            assert negs <= non
        elif anyone:
            assert negs <= anyone
        elif n:
            assert negs == {0}  # no earlier non-click anywhere: padding


def test_time_split_and_batches() -> None:
    frame = pd.DataFrame({"user_id": [1, 1, 2, 1, 2], "item_id": [3, 4, 5, 6, 7],
                          "category_id": [1, 1, 2, 2, 1], "ts": range(5),
                          "label": [1, 0, 1, 1, 0]})
    train, test = time_split(build_samples(frame, max_len=3), 0.8)
    assert len(train) == 4 and len(test) == 1 and test.item_id.tolist() == [7]
    batch = make_batch(train.tensors(), slice(0, 4), negatives=True)
    assert batch["hist_item_ids"].shape == (4, 1)  # trimmed to the longest history
    assert batch["hist_mask"].tolist() == [[False], [True], [False], [True]]
    assert set(batch) >= {"item_id", "cat_id", "neg_item_ids", "neg_cat_ids", "label"}
