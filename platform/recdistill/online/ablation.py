"""Ablations of the online pipeline, each a set of online runs over one shared window spool.

- tau:     the teacher update interval τ (None: a frozen teacher): AUC and its stability
           (std over windows, worst window-to-window drop) for the teacher and the students;
- drift:   streaming distillation vs a student distilled in the batch phase only (labels
           after), on the last windows (Rec-Distill Table 8), read from the config's τ run;
- replay:  adaptive replay vs none on the windows from the first one the detector fires on;
- memory:  peak worker RSS over a few vs many windows of the same size (small models).

``run_ablations`` writes <out>/summary.json, <out>/summary.md and <out>/tau.png; every run
keeps its own run directory (results.json, report.md, auc_over_windows.png) under <out>/runs/.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recdistill.config import ExperimentConfig, load_config
from recdistill.online.pipeline import run_online
from recdistill.smoke import smoke_test

ABLATIONS = ("tau", "drift", "replay", "memory")
# the models of the memory runs: small, so the RSS measured is the pipeline's, not the weights'
MEMORY_MODELS = ("teacher.embed_dim=8", "teacher.depth=1", "teacher.width=64", "students.0.embed_dim=4",
                 "students.0.width=16")


def tau_label(tau: int | None) -> str:
    return "inf" if tau is None else str(tau)


def parse_taus(text: str) -> list[int | None]:
    """``1,10,inf`` → [1, 10, None]; inf, null and none all mean a frozen teacher."""
    return [None if t in ("inf", "null", "none") else int(t) for t in text.split(",")]


def stability(xs: list[float]) -> dict[str, float]:
    """Mean, std and the worst window-to-window drop (0 when it never drops) of a series."""
    d = np.diff(xs) if len(xs) > 1 else np.zeros(1)
    return {"mean": float(np.mean(xs)), "std": float(np.std(xs)), "worst_drop": float(min(0.0, d.min()))}


def _stream_keys(s: dict[str, Any]) -> dict[str, Any]:
    return {k: s[k] for k in s if k.startswith(("stream_", "last_"))}


def summarise(r: dict[str, Any]) -> dict[str, Any]:
    """One online run's results.json reduced to the stability of every model's AUC and LogLoss."""
    ws = r["windows"]
    out: dict[str, Any] = {"teacher_auc": stability([w["teacher"]["auc"] for w in ws]),
                           "teacher_logloss": stability([w["teacher"]["logloss"] for w in ws]),
                           "teacher_steps": r["teacher"]["steps"], "students": []}
    for j, s in enumerate(r["students"]):
        out["students"].append({
            "name": s["name"], "auc": stability([w["students"][j]["auc"] for w in ws]),
            "logloss": stability([w["students"][j]["logloss"] for w in ws]), **_stream_keys(s)})
    return out


def drift_summary(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Every student's streaming-vs-batch-only figures (all windows and the last third)."""
    return [{"name": s["name"], **_stream_keys(s)} for s in r["students"]]


def replay_summary(adaptive: dict[str, Any], off: dict[str, Any]) -> dict[str, Any]:
    """Mean AUC per model on the windows from the first one the detector fired on, with
    adaptive replay and without; no means when it never fired."""
    fired = [s["window"] for s in adaptive["shift"] if s["fired"]]
    start = fired[0] if fired else None
    out: dict[str, Any] = {"first_fired": start, "fired": fired}
    if start is not None:
        for label, r in (("adaptive", adaptive), ("off", off)):
            after = [w for w in r["windows"] if w["window"] >= start]
            out[label] = {"teacher_auc": float(np.mean([w["teacher"]["auc"] for w in after])),
                          "students": {s["name"]: float(np.mean([w["students"][j]["auc"] for w in after]))
                                       for j, s in enumerate(r["students"])}}
    return out


def memory_summary(r: dict[str, Any], windows: int) -> dict[str, Any]:
    """Worker RSS (MB) at the first window and its peak, for the teacher and the students."""
    rss = [(w["rss_mb"]["teacher"], w["rss_mb"]["students"]) for w in r["windows"]]
    return {"windows": windows, "rows": sum(w["rows"] for w in r["windows"]),
            "teacher_rss_mb_first": rss[0][0], "teacher_rss_mb_max": max(x[0] for x in rss),
            "students_rss_mb_first": rss[0][1], "students_rss_mb_max": max(x[1] for x in rss),
            "seconds": r["seconds"]}


def run_ablations(config: str, overrides: Sequence[str], out: Path, *, only: Sequence[str] = ABLATIONS,
                  taus: Sequence[int | None] = (1, 5, 10, 50, None), memory_windows: Sequence[int] = (5, 50),
                  memory_rows_per_window: int = 10_000, smoke: bool = False,
                  overwrite: bool = False) -> dict[str, Any]:
    """Run the ablations in ``only`` on ``config`` (streaming on, ``overrides`` applied, each
    run under <out>/runs/<name>; ``smoke`` shrinks each); runs shared by two ablations run
    once. Writes the summary files and returns the summary. ConfigError before any run."""
    out.mkdir(parents=True, exist_ok=True)

    def cfg_for(name: str, *extra: str) -> ExperimentConfig:
        cfg = load_config(config, ["stream.enabled=true", *overrides, *extra, f"run.dir={out / 'runs' / name}",
                                   f"run.name={name}", *(["run.overwrite=true"] if overwrite else [])])
        return smoke_test(cfg) if smoke else cfg

    base = cfg_for("base")
    summary: dict[str, Any] = {"config": config, "smoke_test": smoke}
    runs: dict[str, dict[str, Any]] = {}

    def run(name: str, *extra: str) -> dict[str, Any]:
        if name not in runs:
            print(f"\n=== {name} ===", flush=True)
            runs[name] = run_online(cfg_for(name, *extra))
        return runs[name]

    if "tau" in only:
        summary["tau"] = {tau_label(t): summarise(run(f"tau{tau_label(t)}", "stream.teacher_update_interval="
                                                      f"{'null' if t is None else t}")) for t in taus}
        plot_tau({k: runs[f"tau{k}"] for k in summary["tau"]}, out / "tau.png")
    if "drift" in only or "replay" in only:
        r = run(f"tau{tau_label(base.stream.teacher_update_interval)}")
        if "drift" in only:
            summary["drift"] = drift_summary(r)
        if "replay" in only:
            summary["replay"] = replay_summary(r, run("replay-off", "stream.replay=off"))
    if "memory" in only:
        summary["memory"] = {str(n): memory_summary(run(
            f"memory{n}", f"stream.windows={n}", "stream.batch_windows=2", f"data.rows={n * memory_rows_per_window}",
            *MEMORY_MODELS), n) for n in memory_windows}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    (out / "summary.md").write_text(markdown(summary))
    return summary


def _fmt(x: float | None) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def markdown(s: dict[str, Any]) -> str:
    """The summary as summary.md: one section and table per ablation that ran."""
    lines = [f"# Online ablations ({s['config']}{', smoke test' if s['smoke_test'] else ''})", ""]
    if "tau" in s:
        lines += ["## Teacher update interval τ", "", "![AUC per window and τ](tau.png)", "",
                  "| τ | teacher steps | teacher AUC mean | std | worst drop | teacher LogLoss std | student | "
                  "AUC mean | std | worst drop | LogLoss std | η (stream) |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
        for tau, r in s["tau"].items():
            for st in r["students"]:
                lines.append(f"| {tau} | {r['teacher_steps']} | {_fmt(r['teacher_auc']['mean'])} | "
                             f"{_fmt(r['teacher_auc']['std'])} | {_fmt(r['teacher_auc']['worst_drop'])} | "
                             f"{_fmt(r['teacher_logloss']['std'])} | {st['name']} | {_fmt(st['auc']['mean'])} | "
                             f"{_fmt(st['auc']['std'])} | {_fmt(st['auc']['worst_drop'])} | "
                             f"{_fmt(st['logloss']['std'])} | {_fmt(st['stream_eta'])} |")
        lines.append("")
    if "drift" in s:
        lines += ["## Streaming distillation vs labels only after the batch phase", "",
                  "| student | windows | AUC raw | AUC streaming distill | AUC labels only | η distill | η labels only |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for st in s["drift"]:
            for label in ("stream", "last"):
                lines.append(f"| {st['name']} | {'all' if label == 'stream' else 'last third'} | "
                             f"{_fmt(st[f'{label}_auc_raw'])} | {_fmt(st[f'{label}_auc_distill'])} | "
                             f"{_fmt(st.get(f'{label}_auc_label_only'))} | {_fmt(st[f'{label}_eta'])} | "
                             f"{_fmt(st.get(f'{label}_eta_label_only'))} |")
        lines.append("")
    if "replay" in s:
        r = s["replay"]
        lines += ["## Replay after a detected shift", "", f"Detector fired on windows {r['fired']}.", ""]
        if r.get("first_fired") is not None:
            lines += [f"Mean AUC on windows ≥ {r['first_fired']}:", "", "| replay | teacher | " +
                      " | ".join(r["adaptive"]["students"]) + " |", "| --- | ---: |" + " ---: |" * len(r["adaptive"]["students"])]
            for label in ("adaptive", "off"):
                lines.append(f"| {label} | {_fmt(r[label]['teacher_auc'])} | " +
                             " | ".join(_fmt(v) for v in r[label]["students"].values()) + " |")
        lines.append("")
    if "memory" in s:
        lines += ["## Memory over windows (worker RSS, MB)", "",
                  "| windows | streamed rows | teacher first → max | students first → max | seconds |",
                  "| ---: | ---: | --- | --- | ---: |"]
        for m in s["memory"].values():
            lines.append(f"| {m['windows']} | {m['rows']:,} | {m['teacher_rss_mb_first']:.0f} → "
                         f"{m['teacher_rss_mb_max']:.0f} | {m['students_rss_mb_first']:.0f} → "
                         f"{m['students_rss_mb_max']:.0f} | {m['seconds']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def plot_tau(runs: dict[str, dict[str, Any]], path: Path) -> None:
    """AUC per window for every τ: the teacher's and the first student's, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8), sharex=True)
    for tau, r in runs.items():
        x = [w["window"] for w in r["windows"]]
        a1.plot(x, [w["teacher"]["auc"] for w in r["windows"]], "-o", ms=3, label=f"τ = {tau}")
        a2.plot(x, [w["students"][0]["auc"] for w in r["windows"]], "-o", ms=3, label=f"τ = {tau}")
    a1.set_title("teacher", fontsize=10)
    a2.set_title(f"student {next(iter(runs.values()))['students'][0]['name']} (streaming distill)", fontsize=10)
    for ax in (a1, a2):
        ax.set_xlabel("window")
        ax.set_ylabel("AUC (prequential)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
