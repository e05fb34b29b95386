"""Signal kinds: what a teacher can leave in the signal store, and what a block of each holds.

    kind        keyed by          key columns          value column        value type
    logit       row               row_id               teacher_logit       float32
    embedding   entity, time      entity_id, time      teacher_embedding   fixed_size_list<float32>[dim]
    code        entity, time      entity_id, time      teacher_code        fixed_size_list<int32>[levels] or int64

An entity-time value is read as of a time (the latest at or before it), so a row joined with
it sees only what existed by its own time; ``time`` is in the log's order (its ``ts``, or the
row id where it has none). A list's size (an embedding's dim, a code's levels) is the
teacher's to choose and is fixed within a block.

A channel names whose signals a block holds: the single teacher (``DEFAULT_CHANNEL``) or one
member of a committee, so several teachers' signals of one kind share a key and generation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from recdistill.data.schema import ROW_ID

ROW = "row"
ENTITY_TIME = "entity_time"
ENTITY_ID = "entity_id"
TIME = "time"
LOGIT = "teacher_logit"
DEFAULT_CHANNEL = "teacher"
_CHANNEL = re.compile(r"[a-z0-9][a-z0-9_-]*$")  # one path segment, never a store record's name

# Fields nullable as pyarrow makes them by default: the logit files written before kinds
# existed have this schema, and the default channel's files stay byte-equal to them.
_KEY_FIELDS = {ROW: (pa.field(ROW_ID, pa.int64()),),
               ENTITY_TIME: (pa.field(ENTITY_ID, pa.int64()), pa.field(TIME, pa.int64()))}


@dataclass(frozen=True)
class ValueType:
    """A value column's type: a scalar ``element``, or (``size_name`` set) a fixed-size list of
    it whose size each block fixes: an embedding's dim, a code's levels."""

    element: pa.DataType
    size_name: str | None = None

    def arrow(self, size: int | None) -> pa.DataType:
        return self.element if self.size_name is None else pa.list_(self.element, size)

    def matches(self, t: pa.DataType) -> bool:
        if self.size_name is None:
            return t == self.element
        return pa.types.is_fixed_size_list(t) and t.value_type == self.element and t.list_size > 0

    def __str__(self) -> str:
        return str(self.element) if self.size_name is None else f"fixed_size_list<{self.element}>[{self.size_name}]"


@dataclass(frozen=True)
class SignalKind:
    name: str
    keyed_by: str  # ROW or ENTITY_TIME
    column: str
    values: tuple[ValueType, ...]  # the value column's accepted types

    @property
    def key_fields(self) -> tuple[pa.Field, ...]:
        return _KEY_FIELDS[self.keyed_by]

    def expected(self) -> str:
        return " or ".join(str(v) for v in self.values)

    def schema(self, size: int | None = None) -> pa.Schema:
        """A block's schema: ``size`` for a list value (an embedding's dim), None for a scalar."""
        for v in self.values:
            if (v.size_name is None) == (size is None):
                return pa.schema([*self.key_fields, pa.field(self.column, v.arrow(size))])
        raise ValueError(f"signal kind {self.name!r}: {'no size' if size is None else f'size {size}'} given; "
                         f"its column {self.column!r} is {self.expected()}")

    def validate(self, table: pa.Table, where: str) -> pa.Table:
        """``table`` with this kind's columns in order; a ValueError naming ``where``, the kind,
        the column and what was expected when it is not a block of this kind."""
        keys = {f.name: f.type for f in self.key_fields}
        names = [*keys, self.column]
        head = f"{where}: a block of signal kind {self.name!r} (columns {', '.join(names)})"
        extra = [n for n in table.column_names if n not in names]
        if extra:
            raise ValueError(f"{head} has column(s) {extra} it does not hold")
        for name in names:
            if name not in table.column_names:
                raise ValueError(f"{head} lacks column {name!r}")
            got = table.schema.field(name).type
            if name in keys:
                ok, expected = got == keys[name], str(keys[name])
            else:
                ok, expected = any(v.matches(got) for v in self.values), self.expected()
            if not ok:
                raise ValueError(f"{head}: column {name!r} is {got}, expected {expected}")
            nulls = table.column(name).null_count
            if nulls:
                raise ValueError(f"{head}: column {name!r} has {nulls} null(s)")
        return table.select(names)

    def key_ranges(self, table: pa.Table) -> list[tuple[int, int]]:
        """(min, max) of each key column of a non-empty block."""
        return [(int(m["min"].as_py()), int(m["max"].as_py()))
                for m in (pc.min_max(table.column(f.name)) for f in self.key_fields)]


KINDS: dict[str, SignalKind] = {k.name: k for k in (
    SignalKind("logit", ROW, LOGIT, (ValueType(pa.float32()),)),
    SignalKind("embedding", ENTITY_TIME, "teacher_embedding", (ValueType(pa.float32(), "dim"),)),
    SignalKind("code", ENTITY_TIME, "teacher_code", (ValueType(pa.int32(), "levels"), ValueType(pa.int64()))),
)}
LOGIT_KIND = KINDS["logit"]


def signal_kind(name: str) -> SignalKind:
    if name not in KINDS:
        raise ValueError(f"signal kind {name!r}: not a kind the store holds ({', '.join(KINDS)})")
    return KINDS[name]


def check_channel(channel: str) -> str:
    if not _CHANNEL.match(channel):
        raise ValueError(f"signal channel {channel!r}: expected lower-case letters, digits, '_' or '-', "
                         f"starting with a letter or digit (a teacher's name, e.g. {DEFAULT_CHANNEL!r})")
    return channel


def check_kinds(names: Sequence[str]) -> list[str]:
    """Kind names as a teacher declares them: known, each once."""
    for n in names:
        signal_kind(n)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"signal kinds {list(names)}: expected one or more, each once")
    return list(names)


def supplied(info: dict[str, Any]) -> list[str]:
    """The kinds a committed teacher supplies; a record from before kinds were declared
    held logits only."""
    return list(info.get("supplies", [LOGIT_KIND.name]))


def check_reads(teacher: str, supplies: Sequence[str], reads: Sequence[str]) -> None:
    missing = [r for r in reads if signal_kind(r).name not in supplies]
    if missing:
        raise ValueError(f"teacher {teacher} supplies signal kind(s) {list(supplies)}; its reader asks for "
                         f"{missing} as well: train a teacher that supplies them, or read only {list(supplies)}")
