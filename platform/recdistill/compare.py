"""``recdistill compare RUN_OR_SWEEP...``: runs side by side, with intervals.

Each run contributes one entry per student, each sweep one entry per trial. An entry's
figures come from every seed it ran (a run with ``run.seeds`` has them under
``seeds/``; a run of one seed is its own). When every entry ran the same seeds on the
same test rows, the entries are paired: seed k of one run and seed k of another share
their teacher (the teacher key includes the seed) and each test-row resample, so their
difference is taken seed by seed and row resample by row resample, as within a run
(``intervals.draws``). Otherwise each entry is drawn on its own and the differences are
marked unpaired (wider, as they should be).

``--by KEY`` reads a factorial sweep one factor at a time: each trial is compared with the
trial that has the same values of every other swept key and KEY at its first level (the
level of the first trial), so the difference is that factor's effect with the rest held
fixed, paired seed by seed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from recdistill.intervals import Figures, draws, finding, interval, ratio
from recdistill.report.render import interval_text, verdict_text

METRICS = {
    "eta": "η = (AUC distilled − AUC raw) / (AUC teacher − AUC raw)",
    "auc_distill": "test AUC of the distilled student",
    "auc_raw": "test AUC of the raw student",
    "gain": "AUC distilled − AUC raw",
    "teacher_auc": "test AUC of the teacher",
}


class CompareError(ValueError):
    """A directory that is not a run or sweep, or runs that cannot be compared."""


@dataclass
class Entry:
    label: str
    seeds: list[int]
    per_seed: list[dict[str, Any]]  # {"teacher", "raw", "distill": AUC; "*_boot": deviations or None}
    test_rows: int | None
    student: str | None = None  # a run's student (its reference is the first run's same student)
    config: dict[str, Any] | None = None  # a sweep trial's swept values (``--by`` matches on them)


def _student_figures(results: dict[str, Any], j: int) -> dict[str, Any]:
    s, t = results["students"][j], results["teacher"]
    return {"teacher": t["auc"], "raw": s["auc_raw"], "distill": s["auc_distill"],
            "teacher_boot": t.get("auc_boot"), "raw_boot": s.get("auc_boot_raw"),
            "distill_boot": s.get("auc_boot_distill")}


def _run_seeds(directory: Path, results: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """(seed, results) of every seed a run ran."""
    if "per_seed" in results:
        out = []
        for p in results["per_seed"]:
            path = directory / p["dir"] / "results.json"
            if not path.exists():
                raise CompareError(f"{path}: seed {p['seed']} of the run in {directory} has no results.json")
            out.append((int(p["seed"]), json.loads(path.read_text())))
        return out
    seed = 0
    cfg = directory / "config.yaml"
    if cfg.exists():
        import yaml

        seed = int(((yaml.safe_load(cfg.read_text()) or {}).get("run") or {}).get("seed", 0))
    return [(seed, results)]


def _test_rows(results: dict[str, Any]) -> int | None:
    t = results["teacher"]
    return t.get("test_rows") or (results.get("data") or {}).get("test_rows")


def load_entries(path: Path) -> list[Entry]:
    """The entries of one run or sweep directory."""
    f = path / "results.json"
    if not f.exists():
        raise CompareError(f"{f}: no results.json here; expected a run or sweep directory")
    results = json.loads(f.read_text())
    if "trials" in results:
        entries = []
        for t in results["trials"]:
            run_dir = Path(t["dir"])
            run_dir = run_dir if run_dir.is_absolute() or run_dir.exists() else path / run_dir
            sub = json.loads((run_dir / "results.json").read_text())
            values = ", ".join(f"{k}={v}" for k, v in (t.get("config") or {}).items())
            j = int(t.get("student_index", 0))
            seeds = _run_seeds(run_dir, sub)
            entries.append(Entry(f"{path.name}#{t['trial']} ({values})" if values else f"{path.name}#{t['trial']}",
                                 [s for s, _ in seeds], [_student_figures(r, j) for _, r in seeds],
                                 _test_rows(sub), config=dict(t.get("config") or {})))
        return entries
    if "students" not in results or "teacher" not in results:
        raise CompareError(f"{f}: not a 1→N run or sweep (online and transfer runs are compared in their own reports)")
    seeds = _run_seeds(path, results)
    return [Entry(f"{path.name}:{s['name']}", [k for k, _ in seeds], [_student_figures(r, j) for _, r in seeds],
                  _test_rows(results), s["name"]) for j, s in enumerate(results["students"])]


def _stat(metric: str, e: str) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    if metric == "eta":
        return ratio(f"{e}/distill", f"{e}/raw", f"{e}/teacher", f"{e}/raw")
    if metric == "gain":
        return lambda d: d[f"{e}/distill"] - d[f"{e}/raw"]
    name = {"auc_distill": "distill", "auc_raw": "raw", "teacher_auc": "teacher"}[metric]
    return lambda d: d[f"{e}/{name}"]


def _figures(entries: list[tuple[str, Entry]]) -> Figures:
    values: dict[str, list[float]] = {}
    boots: dict[str, list[Any]] = {}
    for key, e in entries:
        for m in ("teacher", "raw", "distill"):
            values[f"{key}/{m}"] = [s[m] for s in e.per_seed]
            boots[f"{key}/{m}"] = [s[f"{m}_boot"] for s in e.per_seed]
    return Figures.of(values, boots)


def _references(entries: list[Entry], by: str | None) -> list[int | None]:
    """Each entry's reference (None: it is one): with ``by``, the trial equal to it in every
    other swept key with ``by`` at its first level; else the first entry of the same
    student, else the first entry."""
    if by is None:
        refs: list[int | None] = []
        for j, e in enumerate(entries):
            ref = next((i for i, x in enumerate(entries) if e.student is not None and x.student == e.student), 0)
            refs.append(None if ref == j else ref)
        return refs
    configs = [e.config or {} for e in entries]
    missing = [e.label for e, c in zip(entries, configs) if by not in c]
    if missing:
        keys = sorted({k for c in configs for k in c})
        raise CompareError(f"--by {by}: not a swept key of {', '.join(missing[:3])}"
                           + (f" (swept keys: {', '.join(keys)})" if keys else " (only sweep trials have swept keys)"))
    first = configs[0][by]
    rests = [{k: v for k, v in c.items() if k != by} for c in configs]
    at_first = [i for i, c in enumerate(configs) if c[by] == first]
    refs = []
    for j, e in enumerate(entries):
        if configs[j][by] == first:
            refs.append(None)
            continue
        ref = next((i for i in at_first if rests[i] == rests[j]), None)
        if ref is None:
            raise CompareError(f"--by {by}: {e.label} has no trial with {by}={first} and the same other values")
        refs.append(ref)
    return refs


def compare(paths: list[Path], metric: str = "eta", by: str | None = None) -> dict[str, Any]:
    """Every entry's ``metric`` with its interval, and each entry against its reference: with
    ``by``, the sweep trial that differs from it only in that key, at the key's first level;
    else the first entry of the same student (runs of one config family), else the first."""
    if metric not in METRICS:
        raise CompareError(f"--metric {metric}: expected one of {', '.join(METRICS)}")
    entries = [e for p in paths for e in load_entries(p)]
    if len(entries) < 1:
        raise CompareError("nothing to compare")
    references = _references(entries, by)
    keyed = [(f"e{i}", e) for i, e in enumerate(entries)]
    paired = len({tuple(e.seeds) for e in entries}) == 1 and len({e.test_rows for e in entries}) == 1
    if paired:
        f = _figures(keyed)
        d = draws(f)
        figs = {k: (f, d) for k, _ in keyed}
    else:  # drawn independently: another seed stream per entry
        figs = {}
        for i, (k, e) in enumerate(keyed):
            f = _figures([(k, e)])
            figs[k] = (f, draws(f, seed=i))
    rows = []
    for k, e in keyed:
        f, d = figs[k]
        rows.append({"entry": e.label, "seeds": e.seeds, **interval(_stat(metric, k), f, d)})
    diffs = []
    for (k, e), ref in zip(keyed, references):
        if ref is None:
            continue
        k0, e0 = keyed[ref]
        if paired:
            f, d = figs[k]
        else:
            f = _figures([keyed[ref], (k, e)])
            d = {**figs[k0][1], **figs[k][1]}
        a, b = _stat(metric, k), _stat(metric, k0)
        got = interval(lambda x: a(x) - b(x), f, d)
        diffs.append({"entry": e.label, "against": e0.label, **got,
                      "finding": finding(got)})
    return {"metric": metric, "meaning": METRICS[metric], "paired": paired, "entries": rows, "differences": diffs,
            "by": by, "sources": [str(p) for p in paths]}


def markdown(c: dict[str, Any]) -> str:
    lines = [f"# Comparison: {c['metric']}", "", f"{c['meaning']}; 95% intervals over seeds and test rows "
             + ("(paired: the same seeds and test rows in every entry)." if c["paired"] else
                "(unpaired: the entries ran different seeds or test rows, so each is drawn on its own)."), "",
             f"| entry | seeds | {c['metric']} | interval | against | difference | interval | verdict |",
             "| --- | --- | ---: | --- | --- | ---: | --- | --- |"]
    diffs = {d["entry"]: d for d in c["differences"]}
    for r in c["entries"]:
        d = diffs.get(r["entry"])
        tail = (f"{d['against']} | {d['mean']:+.4f} | {interval_text(d)} | {verdict_text(d)} |" if d
                else "(reference) | | | |")
        lines.append(f"| {r['entry']} | {', '.join(map(str, r['seeds']))} | {r['mean']:.4f} | {interval_text(r)} | {tail}")
    how = (f"the trial with the same other swept values and {c['by']} at its first level" if c["by"] else
           "the first entry of the same student, else the first entry")
    lines += ["", f"Each entry is compared with its reference: {how}. A difference is a finding only when its "
                  "interval excludes 0.", "", "![comparison](compare.png)", ""]
    return "\n".join(lines)


def plot(c: dict[str, Any], path: Path) -> None:
    from recdistill.report.render import pyplot, save_figure

    plt = pyplot()
    rows = c["entries"]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.4))
    for i, r in enumerate(rows):
        lo, hi = r["ci"]
        if math.isfinite(lo) and math.isfinite(hi):
            ax.errorbar([r["mean"]], [i], xerr=[[r["mean"] - lo], [hi - r["mean"]]], fmt="o", color="tab:blue",
                        capsize=3)
        else:
            ax.plot([r["mean"]], [i], "o", color="tab:blue")
    ax.set_yticks(range(len(rows)), [r["entry"] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"{c['metric']} (95% interval)")
    ax.grid(alpha=0.3, axis="x")
    save_figure(fig, path)


def write_comparison(c: dict[str, Any], out: Path) -> list[Path]:
    from recdistill.report.render import write_html

    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(c, indent=2, default=float))
    plot(c, out / "compare.png")
    (out / "report.md").write_text(markdown(c))
    return [out / "compare.json", out / "report.md", write_html(out, f"comparison of {c['metric']}"),
            out / "compare.png"]
