"""A sweep's report: report.md and report.html with PNG plots, and its W&B runs.

Plots, each drawn only when the sweep varied what it needs: η vs α, AUC vs τ, η vs
student parameters (with the Pareto front of serving cost vs quality), and AUC over
streaming windows per trial (the learning curves of online trials).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from recdistill.config import ExperimentConfig
from recdistill.report.committee import COMMITTEE_METRICS
from recdistill.report.render import pyplot, save_figure, write_html


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not math.isnan(x)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both cost (lower) and quality (higher)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


WITHIN = 0.001  # "the smallest student within 0.001 AUC of the best": what users ask a shape sweep


def cost_axis(trials: list[dict[str, Any]]) -> tuple[str, str]:
    """The serving cost a sweep's front is drawn on: the measured CPU latency when every
    scored trial has one (``run.serving``), else the parameter count."""
    scored = [t for t in trials if _finite(t.get("auc"))]
    if scored and all(_finite(t.get("latency_ms_b512")) for t in scored):
        return "latency_ms_b512", "measured latency, ms per batch of 512 (p50, CPU, 1 thread)"
    return "params", "student parameters (serving cost; latency not measured)"


def smallest_within(trials: list[dict[str, Any]], within: float = WITHIN) -> dict[str, Any] | None:
    """The cheapest trial (by ``cost_axis``) whose distilled AUC is within ``within`` of the best."""
    key, _ = cost_axis(trials)
    scored = [t for t in trials if _finite(t.get("auc")) and _finite(t.get(key))]
    if not scored:
        return None
    best = max(t["auc"] for t in scored)
    return min((t for t in scored if t["auc"] >= best - within), key=lambda t: (t[key], -t["auc"]))


def _varied(trials: list[dict[str, Any]], path: str) -> bool:
    return len({json.dumps(t["config"].get(path)) for t in trials if path in t["config"]}) > 1


def _params_axis(ax: Any, values: list[float], label: str) -> None:
    """Parameter counts in k/M: a log axis only over a wide range (students that differ
    only in their dense layers share millions of embedding rows, and a log axis over
    22.956M–22.971M printed its minor ticks on top of each other)."""
    from matplotlib.ticker import EngFormatter, MaxNLocator, NullFormatter

    wide = min(values) > 0 and max(values) / min(values) > 10
    if wide:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.xaxis.set_major_formatter(EngFormatter(places=0 if wide else 3, sep=""))
    ax.set_xlabel(label + (" (log scale)" if wide else ""))


def make_plots(out: Path, summary: dict[str, Any]) -> list[tuple[str, Path]]:
    plt = pyplot()
    trials = summary["trials"]
    plots: list[tuple[str, Path]] = []

    if _varied(trials, "students.0.alpha"):
        fig, ax = plt.subplots(figsize=(6, 4))
        widths = sorted({t["config"].get("students.0.width") for t in trials}, key=lambda w: (w is None, w))
        for w in widths:
            sel = sorted([t for t in trials if t["config"].get("students.0.width") == w and _finite(t.get("eta"))],
                         key=lambda t: t["config"]["students.0.alpha"])
            ax.plot([t["config"]["students.0.alpha"] for t in sel], [t["eta"] for t in sel], "-o", ms=4,
                    label=f"width {w}" if w is not None else "trials")
        ax.set_xscale("log")
        ax.set_xlabel("α (distillation weight, log scale)")
        ax.set_ylabel("η (transferability)")
        ax.axhline(0, color="k", lw=0.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title("η vs α")
        plots.append(("η vs α", save_figure(fig, out / "eta_vs_alpha.png")))

    if _varied(trials, "stream.teacher_update_interval"):
        fig, ax = plt.subplots(figsize=(6, 4))
        sel = sorted(trials, key=lambda t: math.inf if t["config"]["stream.teacher_update_interval"] is None
                     else t["config"]["stream.teacher_update_interval"])
        labels = ["∞" if t["config"]["stream.teacher_update_interval"] is None
                  else str(t["config"]["stream.teacher_update_interval"]) for t in sel]
        ax.plot(labels, [t.get("stream_auc", t["auc"]) for t in sel], "-o", label="student (streaming mean)")
        ax.plot(labels, [t["teacher_auc"] for t in sel], "-s", color="k", label="teacher (first window)")
        ax.set_xlabel("τ (teacher update interval)")
        ax.set_ylabel("AUC")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title("AUC vs τ")
        plots.append(("AUC vs τ", save_figure(fig, out / "auc_vs_tau.png")))

    cost_key, cost_label = cost_axis(trials)
    ok = [t for t in trials if _finite(t.get(cost_key)) and _finite(t.get("auc"))]
    if ok:
        pts = [(t[cost_key], t["auc"]) for t in ok]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
        a1.scatter([t.get("params") for t in ok], [t["eta"] if _finite(t.get("eta")) else float("nan") for t in ok],
                   s=18)
        _params_axis(a1, [t["params"] for t in ok if _finite(t.get("params"))] or [1.0], "student parameters")
        a1.set_ylabel("η")
        a1.grid(alpha=0.3)
        a1.set_title("η vs student size")
        a2.scatter([p[0] for p in pts], [p[1] for p in pts], s=18, color="tab:gray", label="trials")
        front = pareto_front(pts)
        a2.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "-o", color="tab:red", ms=5,
                label="Pareto front")
        pick = smallest_within(trials)
        if pick is not None:
            a2.scatter([pick[cost_key]], [pick["auc"]], s=120, facecolors="none", edgecolors="tab:blue",
                       label=f"smallest within {WITHIN} AUC of the best (trial {pick['trial']})")
        if cost_key == "params":
            _params_axis(a2, [p[0] for p in pts], cost_label)
        else:
            a2.set_xlabel(cost_label)
        a2.set_ylabel("AUC (distilled)")
        a2.grid(alpha=0.3)
        a2.legend(fontsize=8)
        a2.set_title("serving cost vs quality")
        fig.tight_layout()
        plots.append(("η vs student parameters; AUC vs serving cost", save_figure(fig, out / "eta_vs_params.png")))

    # per trial (x, AUC): streaming windows of online trials, held-out AUC over steps of
    # transfer trials (their first variant); batch trials report once and have no curve
    curves: dict[str, list[tuple[int, list[float], list[float]]]] = {"window": [], "training step": [], "epoch": []}
    for t in trials:
        epochs = _epoch_curve(Path(t["dir"]), t.get("student_index", 0))
        if epochs:  # what the run's students reported live, stopped trials included
            curves["epoch"].append((t["trial"], *epochs))
        p = Path(t["dir"]) / "results.json"
        if not p.exists():
            continue
        r = json.loads(p.read_text())
        if r.get("windows"):
            ws = r["windows"]
            curves["window"].append((t["trial"], [w["window"] for w in ws], [w["students"][0]["auc"] for w in ws]))
        elif r.get("kind") == "transfer" and r.get("variants"):
            c = next(iter(r["variants"].values()))["curve"]
            curves["training step"].append((t["trial"], [q["step"] for q in c], [q["auc"] for q in c]))
    for xlabel, series in curves.items():
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for i, xs, ys in series:
            ax.plot(xs, ys, "-o", ms=3, label=f"trial {i}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel({"window": "AUC (prequential)", "epoch": "validation AUC (distilled)"}.get(xlabel, "held-out AUC"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_title(f"learning curves: student AUC per {xlabel}")
        name = "learning_curves.png" if xlabel != "epoch" else "valid_auc_by_epoch.png"
        plots.append((f"learning curves per {xlabel}", save_figure(fig, out / name)))
    return plots


def _epoch_curve(run_dir: Path, j: int) -> tuple[list[int], list[float]] | None:
    """(epochs, validation AUC) of the ``j``-th student's distilled model, from the rows its
    run logged live (``metrics.jsonl``); None without them."""
    p = run_dir / "metrics.jsonl"
    if not p.exists():
        return None
    rows = [json.loads(x) for x in p.read_text().splitlines() if x.strip()]
    config = next((r["config"] for r in rows if r.get("kind") == "config"), {})
    names = [s["name"] for s in config.get("students", [])]
    if j >= len(names):
        return None
    key = f"student/{names[j]}/distill/valid_auc"
    pts = [(r["student/epoch"], r[key]) for r in rows if r.get("kind") == "metrics" and key in r]
    return ([e for e, _ in pts], [a for _, a in pts]) if pts else None


def _columns(summary: dict[str, Any]) -> list[str]:
    paths = sorted({p for t in summary["trials"] for p in t["config"]})
    stopped = ["stopped_epoch", "valid_auc"] if any(t.get("stopped_early") for t in summary["trials"]) else []
    latency = ["latency_ms_b1", "latency_ms_b512"] if any(_finite(t.get("latency_ms_b512"))
                                                         for t in summary["trials"]) else []
    models = ["models"] if any(t.get("models") for t in summary["trials"]) else []
    committee = [k for k in COMMITTEE_METRICS if any(k in t for t in summary["trials"])]
    # an online sweep's knobs (τ, replay) act in the stream only: its means are what differ
    stream = [k for k in ("stream_auc", "stream_eta") if any(_finite(t.get(k)) for t in summary["trials"])]
    return ["trial", *paths, "auc", "auc_raw", "eta", *stream, *committee, *stopped, "params", *latency, "teacher_key",
            "teacher_steps", *models]


def _rows(summary: dict[str, Any]) -> list[list[Any]]:
    cols = _columns(summary)
    rows = []
    for t in summary["trials"]:
        rows.append([t["config"].get(c) if c in t["config"] else t.get(c) for c in cols])
    return rows


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, int) and abs(v) >= 10_000:
        return f"{v:,}"
    return str(v)


def markdown(summary: dict[str, Any], plots: list[tuple[str, Path]]) -> str:
    cols = _columns(summary)
    lines = [f"# Sweep {summary['space']}", "", summary.get("hypothesis", ""), "",
             f"Trials: {len(summary['trials'])}; teachers trained {summary['teachers_trained']}, reused "
             f"{summary['teachers_reused']}; {summary['seconds']:.0f} s wall, {summary['trial_seconds_sum']:.0f} s "
             f"summed over the trials' own runs.", ""]
    early = summary.get("stopped_early") or {}
    if early.get("trials"):
        lines += [f"Stopped early by {summary['scheduler']}: {early['trials']} trial(s) after {early['epochs_run']} "
                  f"epoch(s) in all, {early['epochs_saved']} epoch(s) saved; their rows show the epoch they "
                  f"stopped in and their last validation AUC, and have no test scores.", ""]
    elif summary.get("scheduler", "fifo") != "fifo":
        lines += [f"Scheduler {summary['scheduler']}: no trial was stopped early.", ""]
    trials = summary["trials"]
    streamed = [t for t in trials if _finite(t.get("stream_auc"))]
    if streamed:
        top = max(streamed, key=lambda t: t["stream_auc"])
        lines += [f"Best streaming AUC (mean over the streamed windows): trial {top['trial']} "
                  f"({', '.join(f'{k}={v}' for k, v in top['config'].items())}), AUC {top['stream_auc']:.4f}, "
                  f"η {top.get('stream_eta', float('nan')):.2f}. The auc / auc_raw / eta columns are the batch "
                  f"phase's, scored on the first streamed window before anyone learns from it.", ""]
    # the cheapest student within reach of the best: only a question when the students' sizes differ
    pick = smallest_within(trials) if len({t.get("params") for t in trials if _finite(t.get("auc"))}) > 1 else None
    if pick is not None:
        key, label = cost_axis(summary["trials"])
        best = max(t["auc"] for t in summary["trials"] if _finite(t.get("auc")))
        lines += [f"Smallest student within {WITHIN} AUC of the best ({best:.4f}): trial {pick['trial']} "
                  f"({', '.join(f'{k}={v}' for k, v in pick['config'].items())}), AUC {pick['auc']:.4f}, "
                  f"{pick.get('params', 0):,} parameters"
                  + (f", {pick['latency_ms_b512']:.3f} ms per 512 rows" if _finite(pick.get("latency_ms_b512")) else "")
                  + f" (cost axis: {label}).", ""]
    for title, p in plots:
        lines += [f"![{title}]({p.name})", ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in _rows(summary)]
    return "\n".join(lines) + "\n"


def write_sweep_report(out: Path, summary: dict[str, Any], cfg: ExperimentConfig | None,
                       log: Callable[[str], None] = print) -> None:
    plots = make_plots(out, summary)
    (out / "report.md").write_text(markdown(summary, plots))
    write_html(out, f"sweep {summary['space']}")
    if cfg is not None:
        log_to_trackers(out, summary, cfg, plots)
    log(f"[report] {out / 'report.md'}, {out / 'report.html'} ({len(plots)} plots)")


def log_to_trackers(out: Path, summary: dict[str, Any], cfg: ExperimentConfig, plots: list[tuple[str, Path]]) -> None:
    """The sweep's summary run, in the group its trials' runs logged to live (each run of the
    sweep tracked itself: per-epoch history, its results and report as artifacts): the
    table of all trials and the plots."""
    from recdistill.tracking import make_trackers

    group = summary.get("tracking_group") or f"{cfg.run.name}-{summary['space']}"
    tr = make_trackers(cfg.tracking, out / "tracking" / "summary", "summary", {"space": summary["space"]},
                       group=group, job_type="summary", stdout=False)
    tr.table("trials", _columns(summary), _rows(summary))
    for title, p in plots:
        tr.image(title, p)
    tr.summary({"teachers_trained": summary["teachers_trained"], "teachers_reused": summary["teachers_reused"],
                "trials": len(summary["trials"])})
    tr.finish()
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=str))
