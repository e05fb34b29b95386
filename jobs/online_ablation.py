"""Ablations of the online pipeline, each a set of online runs over one shared window spool.

    python jobs/online_ablation.py                       # all four, on jobs/configs/online_demo.yaml
    python jobs/online_ablation.py --only tau --taus 1,10,inf
    python jobs/online_ablation.py --smoke-test          # the same, shrunk to minutes

- tau:     the teacher update interval τ over {1, 5, 10, 50, ∞}: AUC and its stability
           (std over windows, worst window-to-window drop) for the teacher and the students;
- drift:   streaming distillation vs a student distilled in the batch phase only (labels
           after), on the last windows (Rec-Distill Table 8), read from the config's τ run;
- replay:  adaptive replay vs none on the windows from the first one the detector fires on;
- memory:  peak worker RSS over 5 vs 50 windows of the same size (small models).

Writes <out>/summary.json, <out>/summary.md and <out>/tau.png; every run keeps its own
run directory (results.json, report.md, auc_over_windows.png) under <out>/runs/.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from recdistill.config import ConfigError, load_config, smoke_test
from recdistill.online.pipeline import run_online

ABLATIONS = ("tau", "drift", "replay", "memory")


def _tau_label(tau: int | None) -> str:
    return "inf" if tau is None else str(tau)


def _stability(xs: list[float]) -> dict[str, float]:
    d = np.diff(xs) if len(xs) > 1 else np.zeros(1)
    return {"mean": float(np.mean(xs)), "std": float(np.std(xs)), "worst_drop": float(min(0.0, d.min()))}


def summarise(r: dict[str, Any]) -> dict[str, Any]:
    ws = r["windows"]
    out: dict[str, Any] = {"teacher_auc": _stability([w["teacher"]["auc"] for w in ws]),
                           "teacher_logloss": _stability([w["teacher"]["logloss"] for w in ws]),
                           "teacher_steps": r["teacher"]["steps"], "students": []}
    for j, s in enumerate(r["students"]):
        out["students"].append({
            "name": s["name"], "auc": _stability([w["students"][j]["auc"] for w in ws]),
            "logloss": _stability([w["students"][j]["logloss"] for w in ws]),
            **{k: s[k] for k in s if k.startswith(("stream_", "last_"))}})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="jobs/configs/online_demo.yaml")
    p.add_argument("--only", action="append", choices=ABLATIONS, help="run only these ablations (repeatable)")
    p.add_argument("--taus", default="1,5,10,50,inf", help="τ values (inf = frozen teacher)")
    p.add_argument("--memory-windows", default="5,50", help="window counts for the memory check")
    p.add_argument("--memory-rows-per-window", type=int, default=10_000)
    p.add_argument("--out", default="runs/online_ablation")
    p.add_argument("--smoke-test", action="store_true")
    p.add_argument("--overwrite", action="store_true", help="runs under <out>/runs/ that exist already are "
                                                             "deleted and run again (without it they are refused)")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    todo = a.only or list(ABLATIONS)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    def cfg_for(name: str, *extra: str) -> Any:
        cfg = load_config(a.config, ["stream.enabled=true", *a.overrides, *extra, f"run.dir={out / 'runs' / name}",
                                     f"run.name={name}", *(["run.overwrite=true"] if a.overwrite else [])])
        return smoke_test(cfg) if a.smoke_test else cfg

    try:
        base = cfg_for("base")
    except ConfigError as e:
        print(f"online_ablation.py: config error: {e}", file=sys.stderr)
        return 2
    summary: dict[str, Any] = {"config": a.config, "smoke_test": a.smoke_test}
    runs: dict[str, dict[str, Any]] = {}

    def run(name: str, *extra: str) -> dict[str, Any]:
        if name not in runs:
            print(f"\n=== {name} ===", flush=True)
            runs[name] = run_online(cfg_for(name, *extra))
        return runs[name]

    default_tau = _tau_label(base.stream.teacher_update_interval)
    taus = [None if t in ("inf", "null", "none") else int(t) for t in a.taus.split(",")]
    if "tau" in todo:
        summary["tau"] = {}
        for tau in taus:
            r = run(f"tau{_tau_label(tau)}", f"stream.teacher_update_interval={'null' if tau is None else tau}")
            summary["tau"][_tau_label(tau)] = summarise(r)
        _plot_tau({k: runs[f"tau{k}"] for k in summary["tau"]}, out / "tau.png")
    if "drift" in todo or "replay" in todo:
        r = run(f"tau{default_tau}")
        if "drift" in todo:
            summary["drift"] = [{"name": s["name"], **{k: s[k] for k in s if k.startswith(("stream_", "last_"))}}
                                for s in r["students"]]
        if "replay" in todo:
            off = run("replay-off", "stream.replay=off")
            fired = [s["window"] for s in r["shift"] if s["fired"]]
            start = fired[0] if fired else None
            summary["replay"] = {"first_fired": start, "fired": fired}
            if start is not None:
                for label, rr in (("adaptive", r), ("off", off)):
                    after = [w for w in rr["windows"] if w["window"] >= start]
                    summary["replay"][label] = {
                        "teacher_auc": float(np.mean([w["teacher"]["auc"] for w in after])),
                        "students": {s["name"]: float(np.mean([w["students"][j]["auc"] for w in after]))
                                     for j, s in enumerate(rr["students"])}}
    if "memory" in todo:
        summary["memory"] = {}
        for n in [int(x) for x in a.memory_windows.split(",")]:
            r = run(f"memory{n}", f"stream.windows={n}", "stream.batch_windows=2",
                    f"data.rows={n * a.memory_rows_per_window}", "teacher.embed_dim=8", "teacher.depth=1",
                    "teacher.width=64", "students.0.embed_dim=4", "students.0.width=16")
            rss = [(w["window"], w["rss_mb"]["teacher"], w["rss_mb"]["students"]) for w in r["windows"]]
            summary["memory"][str(n)] = {"windows": n, "rows": sum(w["rows"] for w in r["windows"]),
                                         "teacher_rss_mb_first": rss[0][1], "teacher_rss_mb_max": max(x[1] for x in rss),
                                         "students_rss_mb_first": rss[0][2],
                                         "students_rss_mb_max": max(x[2] for x in rss), "seconds": r["seconds"]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    (out / "summary.md").write_text(_markdown(summary))
    print(_markdown(summary))
    return 0


def _fmt(x: float) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def _markdown(s: dict[str, Any]) -> str:
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


def _plot_tau(runs: dict[str, dict[str, Any]], path: Path) -> None:
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


if __name__ == "__main__":
    sys.exit(main())
