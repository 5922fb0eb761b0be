"""load_movielens: both file formats, the protocol's columns and order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.data.movielens import COLUMNS, load_movielens

U_ITEM = ("{id}|Movie {id}|01-Jan-1995||http://x|" + "|".join(["{f}"] * 19) + "\n")


def write_ml100k(path: Path) -> None:
    path.mkdir()
    rows = [(1, 10, 5, 300), (2, 20, 3, 100), (1, 20, 4, 100), (2, 10, 1, 200)]
    (path / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    flags10 = ["0"] * 19
    flags10[5] = flags10[8] = "1"  # Comedy first, then Drama
    lines = U_ITEM.replace("|".join(["{f}"] * 19), "|".join(flags10)).format(id=10)
    lines += U_ITEM.replace("|".join(["{f}"] * 19), "|".join(["0"] * 19)).format(id=20)
    (path / "u.item").write_bytes(lines.encode("latin-1"))


def write_csv(path: Path) -> None:
    path.mkdir()
    (path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,10,5.0,300\n2,20,3.0,100\n1,20,4.0,100\n2,10,1.0,200\n")
    (path / "movies.csv").write_text(
        'movieId,title,genres\n10,"Movie, The (1995)",Comedy|Drama\n20,X,(no genres listed)\n')


def test_both_formats_give_the_same_frame(tmp_path: Path) -> None:
    write_ml100k(tmp_path / "a")
    write_csv(tmp_path / "b")
    a, b = load_movielens(tmp_path / "a"), load_movielens(tmp_path / "b")
    assert list(a.columns) == list(COLUMNS) and a.equals(b)
    assert a["ts"].tolist() == [100, 100, 200, 300]
    assert a["user_id"].tolist() == [2, 1, 2, 1]  # ties keep file order
    assert a["label"].tolist() == [0, 1, 0, 1]
    assert a.set_index("item_id")["category_id"].to_dict() == {10: 6, 20: 0}


def test_missing_folder_names_path_and_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"u\.data.*ratings\.csv") as err:
        load_movielens(tmp_path / "nowhere")
    assert "nowhere" in str(err.value)


def test_ml100k_follows_the_protocol(ml100k_dir: Path) -> None:
    frame = load_movielens(ml100k_dir)
    assert len(frame) == 100_000 and list(frame.columns) == list(COLUMNS)
    assert all(frame[c].dtype == np.int64 for c in COLUMNS)
    assert frame["ts"].is_monotonic_increasing
    assert (frame["label"] == (frame["rating"] >= 4)).all()
    assert frame["category_id"].between(0, 19).all() and frame["item_id"].min() > 0
