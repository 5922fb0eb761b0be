"""MovieLens loading for the benchmark protocol: one events frame, both file formats.

``load_movielens(path)`` reads ``u.data`` + ``u.item`` (ml-100k) or ``ratings.csv`` +
``movies.csv`` (ml-latest / ml-20m / ml-25m ...) and returns the events frame
``user_id, item_id, category_id, rating, ts, label``: sorted by ``ts`` with ties kept in file
order, ``label = rating >= 4``, ``category_id`` = 1 + index of the movie's first listed genre
in ``GENRES`` (0 when it has none). All columns are int64, except ``rating`` which is float64
for datasets with half-star ratings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
          "Romance", "Sci-Fi", "Thriller", "War", "Western", "IMAX")
_ALIASES = {"Children": "Children's"}
COLUMNS = ("user_id", "item_id", "category_id", "rating", "ts", "label")


def genre_category(name: str) -> int:
    """Category id of a genre name: 1 + its index in GENRES (new names go after them)."""
    name = _ALIASES.get(name.strip(), name.strip())
    if not name or name == "(no genres listed)":
        return 0
    if name in GENRES:
        return 1 + GENRES.index(name)
    return 1 + len(GENRES) + (sum(ord(c) for c in name) % 1000)


def _ml100k(path: Path) -> pd.DataFrame:
    ratings = pd.read_csv(path / "u.data", sep="\t", header=None,
                          names=["user_id", "item_id", "rating", "ts"], dtype=np.int64)
    items = pd.read_csv(path / "u.item", sep="|", header=None, encoding="latin-1")
    flags = items.iloc[:, 5:5 + 19].to_numpy(dtype=np.int64)  # (n_items, 19)
    first = np.where(flags.any(axis=1), flags.argmax(axis=1) + 1, 0)
    cats = pd.Series(first.astype(np.int64), index=items.iloc[:, 0].astype(np.int64))
    ratings["category_id"] = ratings["item_id"].map(cats).fillna(0).astype(np.int64)
    return ratings


def _ml_csv(path: Path) -> pd.DataFrame:
    ratings = pd.read_csv(path / "ratings.csv")
    ratings = ratings.rename(columns={"userId": "user_id", "movieId": "item_id",
                                      "timestamp": "ts"})
    movies = pd.read_csv(path / "movies.csv")
    first = movies["genres"].fillna("").astype(str).str.split("|").str[0]
    cats = pd.Series([genre_category(g) for g in first], index=movies["movieId"].astype(np.int64))
    ratings["category_id"] = ratings["item_id"].map(cats).fillna(0).astype(np.int64)
    rating = ratings["rating"].astype(np.float64)
    ratings["rating"] = rating.astype(np.int64) if (rating % 1 == 0).all() else rating
    for col in ("user_id", "item_id", "ts"):
        ratings[col] = ratings[col].astype(np.int64)
    return ratings


def load_movielens(path: str | Path) -> pd.DataFrame:
    """The events frame of the MovieLens folder ``path`` (either format), in time order.

    Run: ``load_movielens("../shared/data/ml-100k")``. Raises FileNotFoundError naming the
    folder and the files expected when neither format is there.
    """
    path = Path(path)
    if (path / "u.data").is_file() and (path / "u.item").is_file():
        frame = _ml100k(path)
    elif (path / "ratings.csv").is_file() and (path / "movies.csv").is_file():
        frame = _ml_csv(path)
    else:
        raise FileNotFoundError(
            f"no MovieLens data in {path}: expected u.data + u.item (ml-100k) "
            "or ratings.csv + movies.csv (ml-latest, ml-20m, ...)")
    frame["label"] = (frame["rating"] >= 4).astype(np.int64)
    frame = frame.sort_values("ts", kind="mergesort").reset_index(drop=True)
    return frame[list(COLUMNS)]
