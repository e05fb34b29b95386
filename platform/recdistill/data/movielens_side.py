"""MovieLens side files: user and item features joined onto every rating as categorical fields.

Found beside each ratings file, by one of two namings (``find_side_files``):

* RecBole atomic files: ``<name>.inter`` (optionally compressed: ``.inter.gz``...) takes
  ``<name>.user`` and ``<name>.item`` from its directory. A split file such as
  ``ml-1m.train.inter`` takes ``ml-1m.user`` when there is no ``ml-1m.train.user``: dotted
  suffixes are dropped one at a time, longest name first. The first line is the header
  (``user_id:token age:token ...``), fields are tab-separated, UTF-8, and must include the
  key (``user_id:token`` / ``item_id:token``).
* ml-100k: any other ratings file (``u.data``, ``u1.base``, ``ua.test``...) takes ``u.user``
  and ``u.item`` from its directory. No header; ``|``-separated latin-1 (ml-100k's own
  encoding): ``user id|age|gender|occupation|zip code`` and
  ``movie id|title|release date|video release date|IMDb URL|19 genre flags``.

Columns, both namings giving the same names for MovieLens-100k: user features are
``user_<name>`` (``user_age``, ``user_gender``, ``user_occupation``, ``user_zip``), item
features ``item_<name>`` (``item_year``, ``item_genres``, ``item_genres_first``). RecBole
names go through ``ALIASES`` (``zip_code`` -> ``zip``, ``release_year`` -> ``year``,
``class``/``genre`` -> ``genres``). Free text (a name holding ``title``, ``url``, ``name``...)
and RecBole ``float``/``float_seq`` fields are not taken: text is not a category, and a
number would need the dense path's checks.

A multi-valued field (RecBole ``token_seq``; ml-100k's genre flags) gives two categorical
fields: ``<field>`` is the sorted set of values joined by ``|`` (``Action|Comedy``): exact,
one id per combination, but rare combinations get few rows; ``<field>_first`` is the first
of that sorted set, a coarse id every movie of that genre shares. Both fit the existing
categorical path (vocabulary, hashing, one embedding per field); a list column would need
the vocabulary fit to count list values, which it does not.

Join: a rating whose user or item the side file lacks gets nulls (the layout's missing
value) in that side's fields; that is not a bad row, so nothing is counted as a reject.
Keys match as exact strings. A malformed side file (bad header, wrong field count, empty
or repeated key, a genre flag not 0/1, a release date not ``DD-Mon-YYYY``, bytes that do
not decode) is a ``DataError`` naming the file and line: the side file's rows are features
of many ratings, so one bad line cannot be dropped quietly.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from recdistill.data.formats.text import COMPRESSED_SUFFIXES
from recdistill.data.rejects import DataError

USER, ITEM = "user", "item"
RECBOLE, ML100K = "recbole", "ml-100k"
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western")
ML100K_USER_FIELDS = ("user id", "age", "gender", "occupation", "zip code")  # u.user, in order
ML100K_ITEM_FIELDS = 5 + len(ML100K_GENRES)
ALIASES = {"zip_code": "zip", "release_year": "year", "class": "genres", "genre": "genres"}
FREE_TEXT = ("title", "name", "url", "desc", "text", "comment", "review")
RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")
RESERVED = ("row_id", "label", "ts", "user_id", "item_id")
_DATE = re.compile(r"^[0-9]{1,2}-[A-Za-z]{3}-([0-9]{4})$")
_HEAD_BYTES = 1 << 16  # the RecBole header line must fit in here


@dataclass(frozen=True)
class SideFile:
    """One side file of a ratings file: where it is and the columns it adds, in schema order."""

    path: str
    side: str  # USER or ITEM
    naming: str  # RECBOLE or ML100K
    columns: tuple[str, ...]
    # RecBole: (field index, "token" | "seq") per taken field, in column order
    plan: tuple[tuple[int, str], ...] = ()
    width: int = 0  # fields per line
    key: int = 0  # field index of the id


def find_side_files(ratings_path: str) -> tuple[SideFile, ...]:
    """The user side file then the item side file of ``ratings_path``, those that exist."""
    folder, base = os.path.split(os.path.abspath(ratings_path))
    for suffix in COMPRESSED_SUFFIXES:
        base = base.removesuffix(suffix)
    out = []
    for side in (USER, ITEM):
        if base.endswith(".inter"):
            stem = base[: -len(".inter")]
            stems = [stem]
            while "." in stem:
                stem = stem.rsplit(".", 1)[0]
                stems.append(stem)
            found = next((os.path.join(folder, f"{s}.{side}") for s in stems
                          if s and os.path.isfile(os.path.join(folder, f"{s}.{side}"))), None)
            if found:
                out.append(_recbole_side(found, side))
        elif os.path.isfile(os.path.join(folder, f"u.{side}")):
            out.append(_ml100k_side(os.path.join(folder, f"u.{side}"), side))
    return tuple(out)


def side_columns(sides: tuple[SideFile, ...]) -> tuple[str, ...]:
    return tuple(c for s in sides for c in s.columns)


def describe(sides: tuple[SideFile, ...]) -> str:
    return ", ".join(s.path for s in sides) if sides else "no side files"


def _column_names(side: str, name: str, multi: bool) -> tuple[str, ...]:
    name = ALIASES.get(name, name).removeprefix(f"{side}_")
    col = f"{side}_{name}"
    return (col, f"{col}_first") if multi else (col,)


def _ml100k_side(path: str, side: str) -> SideFile:
    if side == USER:
        cols = tuple(c for n in ("age", "gender", "occupation", "zip") for c in _column_names(side, n, False))
        return SideFile(path, side, ML100K, cols, width=len(ML100K_USER_FIELDS))
    return SideFile(path, side, ML100K, (*_column_names(side, "year", False), *_column_names(side, "genres", True)),
                    width=ML100K_ITEM_FIELDS)


def _recbole_side(path: str, side: str) -> SideFile:
    with open(path, "rb") as f:
        head = f.read(_HEAD_BYTES)
    lines = head.splitlines()
    if not lines or (len(lines) == 1 and len(head) == _HEAD_BYTES):
        raise DataError(f"{path} line 1: RecBole side file has no header line "
                        f"(expected tab-separated name:type fields, e.g. {side}_id:token)")
    text = _decode(lines[0].removeprefix(b"\xef\xbb\xbf"), "utf-8", path, 1)
    fields = text.split("\t")
    names: list[str] = []
    plan: list[tuple[int, str]] = []
    columns: list[str] = []
    for i, f in enumerate(fields):
        name, _, typ = f.partition(":")
        if typ not in RECBOLE_TYPES:
            raise DataError(f"{path} line 1: RecBole header field {i + 1} is {f!r}, expected name:type "
                            f"with type one of {', '.join(RECBOLE_TYPES)}")
        names.append(name)
        if name == f"{side}_id" or typ.startswith("float") or any(w in name.lower() for w in FREE_TEXT):
            continue
        plan.append((i, "seq" if typ == "token_seq" else "token"))
        columns += _column_names(side, name, typ == "token_seq")
    if names.count(f"{side}_id") != 1 or fields[names.index(f"{side}_id")] != f"{side}_id:token":
        raise DataError(f"{path} line 1: RecBole {side} file needs exactly one key field {side}_id:token "
                        f"(found {text!r})")
    clash = sorted({c for c in columns if columns.count(c) > 1 or c in RESERVED})
    if clash:
        raise DataError(f"{path} line 1: fields map to columns that are taken ({', '.join(clash)}); "
                        f"rename them in the header")
    return SideFile(path, side, RECBOLE, tuple(columns), tuple(plan), len(fields), names.index(f"{side}_id"))


def _decode(raw: bytes, encoding: str, path: str, line: int) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise DataError(f"{path} line {line}: bytes that are not {encoding} ({e.reason} at byte {e.start}): "
                        f"{raw[:200]!r}") from e


class SideTable:
    """A side file loaded once: its keys (unique) and one column per feature, row-aligned."""

    def __init__(self, spec: SideFile) -> None:
        self.spec = spec
        rows: list[tuple[str | None, ...]] = []
        keys: list[str] = []
        first_line: dict[str, int] = {}
        with open(spec.path, "rb") as f:
            data = f.read()
        sep = b"\t" if spec.naming == RECBOLE else b"|"
        for n, raw in enumerate(data.splitlines(), start=1):
            if n == 1 and spec.naming == RECBOLE:
                continue  # the header, checked by find_side_files
            if not raw.strip():
                continue  # a blank line holds no entity
            parts = raw.split(sep)
            if len(parts) != spec.width:
                raise DataError(f"{spec.path} line {n}: expected {spec.width} {sep.decode()!r}-separated fields, "
                                f"got {len(parts)}: {raw[:200]!r}")
            key = self._text(parts[spec.key], n)
            if key is None:
                raise DataError(f"{spec.path} line {n}: empty {spec.side} id: {raw[:200]!r}")
            if key in first_line:
                raise DataError(f"{spec.path} line {n}: {spec.side} id {key!r} already on line {first_line[key]}; "
                                f"each {spec.side} must have one row")
            first_line[key] = n
            keys.append(key)
            rows.append(self._values(parts, n))
        if not rows:
            raise DataError(f"{spec.path}: {spec.naming} {spec.side} side file holds no {spec.side} rows; "
                            f"remove it or restore its contents")
        self.keys = pa.array(keys, type=pa.string())
        self.columns = [pa.array(list(c), type=pa.string()) for c in zip(*rows)]

    def _text(self, raw: bytes, line: int) -> str | None:
        if self.spec.naming == ML100K:
            text = raw.decode("latin-1")
        else:
            text = _decode(raw, "utf-8", self.spec.path, line)
        return text or None

    def _values(self, parts: list[bytes], line: int) -> tuple[str | None, ...]:
        if self.spec.naming == RECBOLE:
            out: list[str | None] = []
            for i, kind in self.spec.plan:
                text = self._text(parts[i], line)
                out += _multi(text.split() if text else []) if kind == "seq" else [text]
            return tuple(out)
        if self.spec.side == USER:
            return tuple(self._text(p, line) for p in parts[1:])
        date = self._text(parts[2], line)
        m = _DATE.match(date) if date else None
        if date and not m:
            raise DataError(f"{self.spec.path} line {line}: release date {date!r} is not DD-Mon-YYYY")
        flags = [self._text(p, line) for p in parts[5:]]
        bad = [f"{g}={v!r}" for g, v in zip(ML100K_GENRES, flags) if v not in ("0", "1")]
        if bad:
            raise DataError(f"{self.spec.path} line {line}: genre flags must be 0 or 1 ({', '.join(bad[:3])})")
        return (m.group(1) if m else None, *_multi([g for g, v in zip(ML100K_GENRES, flags) if v == "1"]))

    def join(self, keys: pa.Array) -> list[pa.Array]:
        """This side's columns for each key; null where the key is missing or unknown."""
        # Arrow's hash lookup: 10x faster than pandas' get_indexer, which first copies the
        # strings into Python objects; rebuilding the set per block is cheap next to that.
        pos = pc.index_in(keys, value_set=self.keys)  # null where unknown or missing
        return [col.take(pos) for col in self.columns]


def _multi(values: list[str]) -> list[str | None]:
    """A multi-valued field as (sorted combination, its first value); None twice when empty."""
    uniq = sorted(set(values))
    return ["|".join(uniq), uniq[0]] if uniq else [None, None]


def load_side_tables(sides: tuple[SideFile, ...]) -> list[tuple[str, SideTable]]:
    """(ratings column to join on, table) per side file."""
    return [(f"{s.side}_id", SideTable(s)) for s in sides]
