"""Bookkeeping for rows a reader refuses, and the error every reader raises.

Readers never drop a row silently: each refused row is counted under a short reason key
("wrong field count", "label not in {0,1}", ...) and the first few are kept as examples
with their file, physical line number and text, so that a failed read says exactly where
to look. The tally is a plain dataclass that crosses process boundaries as a dict
(``to_dict`` / ``from_dict``), which is how Ray read tasks report to the driver.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

MAX_EXAMPLES = 5
MAX_TEXT = 200

# (file, line, reason with detail, text of the line truncated to MAX_TEXT characters)
Example = tuple[str, int, str, str]


class DataError(ValueError):
    """Input data that cannot be read as asked; the message names the file and what was expected."""


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


@dataclass
class RejectTally:
    """Rows seen and rows refused, per reason, with up to ``MAX_EXAMPLES`` examples per reason."""

    total: int = 0  # data rows seen: accepted + rejected (headers and blank lines excluded)
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[Example]] = field(default_factory=dict)
    blank_lines: int = 0  # empty lines: not data, so not rejects, but still reported
    files: list[str] = field(default_factory=list)
    # Parquet: file -> (smallest, largest) row_id in it, for the check that no id is in two files.
    id_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)

    # ------------------------------------------------------------------ recording

    def seen(self, n: int) -> None:
        self.total += int(n)

    def add_file(self, path: str) -> None:
        if path not in self.files:
            self.files.append(path)

    def add(self, reason: str, file: str, line: int, text: str, detail: str | None = None) -> None:
        """Count one rejected row under ``reason``; ``detail`` (e.g. the column) goes into the example."""
        self.add_many(reason, file, [line], [text], [detail] if detail is not None else None, count=1)

    def add_many(self, reason: str, file: str, lines: Sequence[int], texts: Sequence[str],
                 details: Sequence[str | None] | None = None, count: int | None = None) -> None:
        """Count ``count`` rejects (default ``len(lines)``); ``lines``/``texts`` may hold only the first few.

        Vectorised readers pass just the rows they want as examples, so that a file full of
        bad rows does not cost a Python loop over all of them.
        """
        n = len(lines) if count is None else int(count)
        if n <= 0:
            return
        self.counts[reason] = self.counts.get(reason, 0) + n
        kept = self.examples.setdefault(reason, [])
        for i in range(min(len(lines), MAX_EXAMPLES - len(kept))):
            detail = details[i] if details is not None and details[i] is not None else reason
            kept.append((file, int(lines[i]), detail, _clip(texts[i])))

    def blank(self, n: int = 1) -> None:
        self.blank_lines += int(n)

    def merge(self, other: "RejectTally") -> "RejectTally":
        """Fold ``other`` into this tally (in place) and return self."""
        self.total += other.total
        self.blank_lines += other.blank_lines
        for f in other.files:
            self.add_file(f)
        self.id_ranges.update(other.id_ranges)
        for reason, n in other.counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + n
        for reason in set(self.examples) | set(other.examples):
            # Examples from several files: keep the earliest positions so that the
            # report does not depend on the order in which read tasks finished.
            both = self.examples.get(reason, []) + list(other.examples.get(reason, []))
            self.examples[reason] = sorted(both, key=lambda e: (e[0], e[1]))[:MAX_EXAMPLES]
        return self

    # ---------------------------------------------------------------- reporting

    @property
    def rejected(self) -> int:
        return sum(self.counts.values())

    @property
    def rate(self) -> float:
        return self.rejected / self.total if self.total else 0.0

    def summary_lines(self) -> list[str]:
        where = ", ".join(self.files) if self.files else "input"
        out = [f"{where}: {self.total:,} rows read, {self.rejected:,} rejected ({self.rate:.4%})"
               + (f", {self.blank_lines:,} blank lines skipped" if self.blank_lines else "")]
        for reason, n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])):
            out.append(f"  {reason}: {n:,}")
            for file, line, detail, text in self.examples.get(reason, []):
                out.append(f"    {file} line {line}: {detail}: {text!r}")
        return out

    def to_dict(self) -> dict:
        return {"total": self.total, "counts": dict(self.counts),
                "examples": {k: [list(e) for e in v] for k, v in self.examples.items()},
                "blank_lines": self.blank_lines, "files": list(self.files),
                "id_ranges": {k: list(v) for k, v in self.id_ranges.items()},
                "rejected": self.rejected, "rate": self.rate}

    @classmethod
    def from_dict(cls, d: dict) -> "RejectTally":
        return cls(total=int(d["total"]), counts={k: int(v) for k, v in d["counts"].items()},
                   examples={k: [(str(e[0]), int(e[1]), str(e[2]), str(e[3])) for e in v]
                             for k, v in d.get("examples", {}).items()},
                   blank_lines=int(d.get("blank_lines", 0)), files=list(d.get("files", [])),
                   id_ranges={k: (int(v[0]), int(v[1])) for k, v in d.get("id_ranges", {}).items()})

    def check_budget(self, budget: float, where: str) -> None:
        """Raise DataError when more than ``budget`` (a fraction) of the rows were rejected."""
        if not self.total or self.rate <= budget:
            return
        lines = [f"{where}: {self.rejected:,} of {self.total:,} rows rejected ({self.rate:.4%}), "
                 f"more than the error budget of {budget:g} ({budget:.4%}; data.error_budget)"]
        lines += self.summary_lines()
        raise DataError("\n".join(lines))


def missing_file_error(path: str) -> DataError:
    return DataError(f"{path} does not exist")


def empty_file_error(path: str, fmt: str) -> DataError:
    return DataError(f"{path} is empty, expected {fmt} rows")
