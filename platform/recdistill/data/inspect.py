"""``recdistill data inspect``: one distributed pass that summarises a click log."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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

            a, b = (datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M") for t in self.ts_range)
            out.append(f"time            {a} → {b} UTC")
        for k, v in self.extras.items():
            out.append(f"{k:15s} {v:.4f}")
        out.append(f"{'field':16s} {'kind':12s} {'distinct':>10s} {'missing':>8s}")
        for name, kind, distinct, missing in self.fields:
            d = f"{distinct:,}" if distinct is not None else "-"
            out.append(f"{name:16s} {kind:12s} {d:>10s} {missing:>7.1%}")
        out.append(f"rejected rows   {self.rejects.rejected:,} of {self.rejects.rejected + self.rows:,}")
        out += ["  " + line for line in self.rejects.summary_lines()] if self.rejects.rejected else []
        return out


def summarise(ds: Any, schema: LogSchema) -> tuple[int, int, list[tuple[str, str, int | None, float]],
                                                     tuple[int, int] | None, dict[str, float]]:
    """Rows, positives, per-field distinct count and missing share, in one aggregation."""
    from ray.data.aggregate import Count, CountDistinct, Max, Mean, Min, MissingValuePercentage, Sum

    aggs: list[Any] = [Count(alias_name="rows"), Sum(LABEL, alias_name="positives")]
    kinds = [(n, "dense") for n in schema.dense] + [(n, "categorical") for n in schema.categorical]
    for name, kind in kinds:
        aggs.append(MissingValuePercentage(name, alias_name=f"missing:{name}"))
        if kind == "categorical":
            aggs.append(CountDistinct(name, alias_name=f"distinct:{name}"))
    if schema.has_ts:
        aggs += [Min(TS, alias_name="ts_min"), Max(TS, alias_name="ts_max")]
    extras = [c for c in ("p_true", "sample_rate") if c in schema.extras]
    aggs += [Mean(c, alias_name=f"mean {c}") for c in extras]
    res = ds.aggregate(*aggs)
    rows = int(res["rows"] or 0)
    fields = []
    for name, kind in kinds:
        distinct = res.get(f"distinct:{name}")
        missing = res[f"missing:{name}"]
        fields.append((name, kind, int(distinct) if distinct is not None else None,
                       float(missing or 0.0) / 100.0))
    ts = (int(res["ts_min"]), int(res["ts_max"])) if schema.has_ts and rows else None
    return rows, int(res["positives"] or 0), fields, ts, {f"mean {c}": float(res[f"mean {c}"]) for c in extras}


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
