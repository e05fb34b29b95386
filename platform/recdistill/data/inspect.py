"""``recdistill data inspect``: one distributed pass that summarises a click log."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recdistill.data.distinct import estimate, registers
from recdistill.data.rejects import RejectTally
from recdistill.data.schema import LABEL, TS, LogSchema


@dataclass
class LogReport:
    path: str
    fmt: str
    rows: int
    positives: int
    fields: list[tuple[str, str, int | None, float]]  # name, kind, distinct, missing share
    rejects: RejectTally
    ts_range: tuple[int, int] | None = None
    extras: dict[str, float] = field(default_factory=dict)

    @property
    def ctr(self) -> float:
        return self.positives / self.rows if self.rows else float("nan")

    def lines(self) -> list[str]:
        out = [f"log             {self.path}  (format {self.fmt})",
               f"rows            {self.rows:,}   positives {self.positives:,}   CTR {self.ctr:.4f}"]
        if self.ts_range:
            from datetime import datetime, timezone

            def when(t: int) -> str:
                try:
                    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M")
                except (OverflowError, OSError, ValueError):  # valid int64 seconds past year 9999
                    return f"{t} s"

            a, b = (when(t) for t in self.ts_range)
            out.append(f"time            {a} → {b} UTC")
        for k, v in self.extras.items():
            out.append(f"{k:15s} {v:.4f}")
        out.append(f"{'field':16s} {'kind':12s} {'distinct≈':>10s} {'missing':>8s}")
        for name, kind, distinct, missing in self.fields:
            d = f"{distinct:,}" if distinct is not None else "-"
            out.append(f"{name:16s} {kind:12s} {d:>10s} {missing:>7.1%}")
        out.append(f"rejected rows   {self.rejects.rejected:,} of {self.rejects.rejected + self.rows:,}")
        out += ["  " + line for line in self.rejects.summary_lines()] if self.rejects.rejected else []
        return out


def _partial_stats(batch: pa.Table, schema: LogSchema, extras: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"rows": batch.num_rows,
                           "positives": int(pc.sum(batch.column(LABEL)).as_py() or 0),
                           "missing": {}, "hll": {}, "sums": {}}
    for name in (*schema.dense, *schema.categorical):
        col = batch.column(name)
        nulls = col.null_count
        if pa.types.is_floating(col.type):
            nulls += int(pc.sum(pc.is_nan(col)).as_py() or 0)
        out["missing"][name] = nulls
    for name in schema.categorical:
        out["hll"][name] = registers(batch.column(name))
    if schema.has_ts and batch.num_rows:
        ts = batch.column(TS)
        out["ts"] = (pc.min(ts).as_py(), pc.max(ts).as_py())
    for name in extras:
        out["sums"][name] = float(pc.sum(batch.column(name)).as_py() or 0.0)
    return out


def _combine_stats(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = {"rows": a["rows"] + b["rows"], "positives": a["positives"] + b["positives"],
           "missing": {k: a["missing"][k] + b["missing"][k] for k in a["missing"]},
           "sums": {k: a["sums"][k] + b["sums"][k] for k in a["sums"]}, "hll": {}}
    for k in a["hll"]:
        out["hll"][k] = np.maximum(a["hll"][k], b["hll"][k])
    spans = [x["ts"] for x in (a, b) if "ts" in x]
    if spans:
        out["ts"] = (min(s[0] for s in spans), max(s[1] for s in spans))
    return out


def summarise(ds: Any, schema: LogSchema) -> tuple[int, int, list[tuple[str, str, int | None, float]],
                                                     tuple[int, int] | None, dict[str, float]]:
    """Rows, positives, per-field distinct count (HyperLogLog) and missing share: one pass."""
    from recdistill.data.reduce import reduce_blocks

    extras = tuple(c for c in ("p_true", "sample_rate") if c in schema.extras)
    st = reduce_blocks(ds, _partial_stats, _combine_stats, {"schema": schema, "extras": extras})
    if st is None or st["rows"] == 0:
        return 0, 0, [], None, {}
    rows = st["rows"]
    fields: list[tuple[str, str, int | None, float]] = []
    for name in schema.dense:
        fields.append((name, "dense", None, st["missing"][name] / rows))
    for name in schema.categorical:
        distinct = int(round(estimate(st["hll"][name])))
        fields.append((name, "categorical", distinct, st["missing"][name] / rows))
    means = {f"mean {k}": v / rows for k, v in st["sums"].items()}
    return rows, st["positives"], fields, st.get("ts"), means


def inspect_log(path: str, fmt: str, *, header: str = "auto", error_budget: float = 0.001) -> LogReport:
    """Read ``path`` with the platform reader and summarise it; fails past the error budget."""
    from recdistill.data.datasource import new_ledger, read_log, read_rejects
    from recdistill.ray_env import ensure_ray

    ensure_ray()
    ledger = new_ledger()
    ds, schema = read_log(path, fmt, header=header, error_budget=error_budget, ledger=ledger)
    rows, positives, fields, ts, extras = summarise(ds, schema)
    rejects = read_rejects(ledger)
    report = LogReport(path, fmt, rows, positives, fields, rejects, ts, extras)
    rejects.check_budget(error_budget, path)
    return report
