"""MovieLens side files (``u.user``/``u.item``, RecBole ``.user``/``.item``) joined onto ratings.

Fixtures are tiny files written by each test, in both namings. All but the last test read
with ``formats.iter_file`` (pure pyarrow, no Ray); the last reads through ``read_log``.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from recdistill.data import formats
from recdistill.data.rejects import DataError, RejectTally

USER_COLS = ("user_age", "user_gender", "user_occupation", "user_zip")
ITEM_COLS = ("item_year", "item_genres", "item_genres_first")
SIDE_COLS = (*USER_COLS, *ITEM_COLS)
FLAGS = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
         "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
         "War", "Western")
RATINGS = ["196\t242\t3\t881250949",  # both sides known
           "186\t302\t4\t891717742",
           "22\t999\t5\t878887116",   # item 999 not in the item file
           "7\t242\t1\t1",            # user 7 not in the user file
           "5\t1\tgood\t2"]           # a bad rating: rejected as before, side files or not
# What the join gives for the first four ratings (the fifth is rejected).
EXPECTED = [
    ("49", "M", "writer", "55105", "1997", "Comedy", "Comedy"),
    ("39", "F", "executive", "00000", "1997", "Crime|Film-Noir|Thriller", "Crime"),
    ("25", "M", "writer", "T8H1N", None, None, None),
    (None, None, None, None, "1997", "Comedy", "Comedy"),
]


def item_line(item: str, title: bytes, date: str, genres: tuple[str, ...]) -> bytes:
    flags = "|".join("1" if g in genres else "0" for g in FLAGS)
    return f"{item}|".encode() + title + f"|{date}||http://us.imdb.com/x|{flags}".encode()


def write_ml100k(folder: Path, ratings: str = "u.data") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ratings).write_text("\n".join(RATINGS) + "\n")
    (folder / "u.user").write_text("196|49|M|writer|55105\n186|39|F|executive|00000\n22|25|M|writer|T8H1N\n")
    # ml-100k's u.item is latin-1 (here the title's \xe9); a movie with no date and no genre.
    (folder / "u.item").write_bytes(b"\n".join([
        item_line("242", b"Kolya (1996)", "24-Jan-1997", ("Comedy",)),
        item_line("302", b"L.A. Confidential (1997)", "01-Jan-1997", ("Thriller", "Crime", "Film-Noir")),
        item_line("1", b"Le Ch\xe2teau (1995)", "", ()),
    ]) + b"\n")
    return folder / ratings


def write_recbole(folder: Path, ratings: str = "ml-100k.inter") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    head = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    (folder / ratings).write_text("\n".join([head, *RATINGS]) + "\n")
    (folder / "ml-100k.user").write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        "196\t49\tM\twriter\t55105\n186\t39\tF\texecutive\t00000\n22\t25\tM\twriter\tT8H1N\n")
    # The key need not come first; titles are free text (not taken), here not even UTF-8.
    (folder / "ml-100k.item").write_bytes(
        b"movie_title:token_seq\titem_id:token\trelease_year:token\tclass:token_seq\n"
        b"Kolya\t242\t1997\tComedy\n"
        b"L.A. Confidential\t302\t1997\tThriller Crime  Film-Noir Crime\n"
        b"Le Ch\xe2teau\t1\t\t\n")
    return folder / ratings


def read(path: Path, block_size: int = formats.DEFAULT_BLOCK_SIZE, **kw) -> tuple[pa.Table, RejectTally]:
    tally = RejectTally()
    table = pa.concat_tables(formats.iter_file(str(path), "movielens", 0, tally, block_size=block_size, **kw))
    schema = formats.schema_for_file(str(path), "movielens")
    assert table.schema.equals(schema.arrow_schema(), check_metadata=True)
    return table, tally


def side_values(t: pa.Table) -> list[tuple]:
    cols = [t[c].to_pylist() for c in SIDE_COLS]
    return [tuple(c[r] for c in cols) for r in range(t.num_rows)]


@pytest.mark.parametrize("naming", ["ml-100k", "recbole"])
def test_side_features_join_both_namings(tmp_path, naming):
    p = write_ml100k(tmp_path) if naming == "ml-100k" else write_recbole(tmp_path)
    schema = formats.schema_for_file(str(p), "movielens")
    assert schema.categorical == ("user_id", "item_id", *SIDE_COLS)
    # 64-byte blocks: several blocks per file, each joined against tables loaded once.
    for block in (formats.DEFAULT_BLOCK_SIZE, 64):
        t, tally = read(p, block_size=block)
        assert t["user_id"].to_pylist() == ["196", "186", "22", "7"]
        assert side_values(t) == EXPECTED
        # Unknown users/items are missing values, not rejects; the bad rating still is one.
        assert tally.counts == {"non-numeric rating": 1} and tally.total == 5


def test_namings_agree_and_split_files_find_the_dataset_files(tmp_path):
    ml = formats.schema_for_file(str(write_ml100k(tmp_path / "a", "u1.base")), "movielens")
    rb = formats.schema_for_file(str(write_recbole(tmp_path / "b", "ml-100k.train.inter")), "movielens")
    assert ml == rb  # one log, either naming: the same columns, so splits of both can mix
    t, _ = read(tmp_path / "b" / "ml-100k.train.inter")
    assert side_values(t) == EXPECTED


def test_no_side_files_is_todays_schema(tmp_path):
    (tmp_path / "u.data").write_text("\n".join(RATINGS) + "\n")
    rb = write_recbole(tmp_path / "rb", "other.inter")  # .inter takes only <name>.user/.item
    (tmp_path / "rb" / "u.user").write_text("196|49|M|writer|55105\n")
    for p in (tmp_path / "u.data", rb):
        assert formats.schema_for_file(str(p), "movielens") == formats.schema_for("movielens")
        t, _ = read(p)
        assert t.column_names == ["row_id", "label", "user_id", "item_id", "ts"]


BAD_SIDE_FILES = [
    pytest.param("u.user", b"196|49|M|writer|55105\n186|39|F|executive\n",
                 r"u\.user line 2: expected 5 '\|'-separated fields, got 4", id="ml100k-field-count"),
    pytest.param("u.user", b"196|49|M|writer|55105\n196|39|F|executive|1\n",
                 r"u\.user line 2: user id '196' already on line 1", id="ml100k-duplicate-id"),
    pytest.param("u.user", b"|49|M|writer|55105\n", r"u\.user line 1: empty user id", id="ml100k-empty-id"),
    pytest.param("u.user", b"", r"u\.user: ml-100k user side file holds no user rows", id="ml100k-empty-file"),
    pytest.param("u.item", item_line("1", b"X", "1995", ()),
                 r"u\.item line 1: release date '1995' is not DD-Mon-YYYY", id="ml100k-bad-date"),
    pytest.param("u.item", item_line("1", b"X", "", ()).replace(b"|0|0", b"|2|0", 1),
                 r"u\.item line 1: genre flags must be 0 or 1 \(unknown='2'\)", id="ml100k-bad-flag"),
    pytest.param("ml.user", b"id:token\tage:token\n1\t2\n",
                 r"ml\.user line 1: RecBole user file needs exactly one key field user_id:token", id="recbole-no-key"),
    pytest.param("ml.user", b"user_id:token\tage\n1\t2\n",
                 r"ml\.user line 1: RecBole header field 2 is 'age', expected name:type", id="recbole-untyped-field"),
    pytest.param("ml.user", b"user_id:token\tage:token\n1\t2\n3\n",
                 r"ml\.user line 3: expected 2 '\\t'-separated fields, got 1", id="recbole-field-count"),
    pytest.param("ml.user", b"user_id:token\tage:token\n1\t\xff\n",
                 r"ml\.user line 2: bytes that are not utf-8", id="recbole-not-utf8"),
    pytest.param("ml.item", b"item_id:token\tid:token\n1\t2\n",
                 r"ml\.item line 1: fields map to columns that are taken \(item_id\)", id="recbole-column-clash"),
]


@pytest.mark.parametrize("name,content,message", BAD_SIDE_FILES)
def test_malformed_side_file_names_file_and_line(tmp_path, name, content, message):
    ratings = tmp_path / ("ml.inter" if name.startswith("ml.") else "u.data")
    ratings.write_text("1\t1\t4\t5\n")
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=message):
        # A RecBole header fails when the read is planned; the rest when the reader loads the file.
        formats.schema_for_file(str(ratings), "movielens")
        read(ratings)


def test_files_of_one_read_must_find_the_same_side_files(tmp_path):
    with_sides = write_ml100k(tmp_path / "ml")
    bare = tmp_path / "bare" / "u.data"
    bare.parent.mkdir()
    bare.write_text("1\t1\t4\t5\n")
    with pytest.raises(DataError, match=r"bare/u\.data: MovieLens side files \(no side files\) give other columns "
                                        r"than those of .*ml/u\.data \(.*ml/u\.user, .*ml/u\.item\)"):
        formats.schema_for_files([str(with_sides), str(bare)], "movielens")
    # A dataset directory as the path lists its side files as ratings: refused by name.
    with pytest.raises(DataError, match=r"ml/u\.item: a MovieLens side file .* is listed as a ratings file"):
        formats.schema_for_files(formats.expand_paths(str(tmp_path / "ml")), "movielens")
    rb = write_recbole(tmp_path / "rb")
    with pytest.raises(DataError, match=r"rb/ml-100k\.item: a MovieLens side file .* not the dataset directory"):
        formats.schema_for_files(formats.expand_paths(str(rb.parent)), "movielens")
    # A read task planned without side files refuses a file that has them.
    with pytest.raises(DataError, match=r"ml/u\.data: MovieLens side files here .* but the read was planned with "
                                        r"user_id, item_id:"):
        read(with_sides, schema=formats.schema_for("movielens"))
