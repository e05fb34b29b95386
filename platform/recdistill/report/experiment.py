"""The batch experiment's outputs: results.json, the printed η table, report.md/html and
its plots (raw → distilled per student against the teacher and the oracle; validation AUC
per model over its training)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from recdistill.config import ExperimentConfig
from recdistill.report.render import interval_text, pyplot, restart_lines, save_figure, verdict_text, write_run_outputs
from recdistill.report.committee import committee_lines
from recdistill.results import KINDS, StudentResult

GAINS_PNG, CURVES_PNG = "raw_to_distilled.png", "learning_curves.png"


def write_results(cfg: ExperimentConfig, results: dict[str, Any], log: Callable[[str], None]) -> list[Path]:
    out = cfg.run.out_dir
    written = write_run_outputs(out, cfg.run.name, results, report_markdown(cfg, results), plots_for(results))
    log("\n".join(result_table(results)))
    log(f"[run] wrote {', '.join(str(p) for p in written)} ({results['seconds']:.0f} s)")
    return written


def plots_for(results: dict[str, Any]) -> dict[str, Callable[[dict[str, Any], Path], None]]:
    """The plots a run's results can draw: the gains always; the curves when any model was
    validated (a valid split with rows)."""
    plots: dict[str, Callable[[dict[str, Any], Path], None]] = {GAINS_PNG: plot_raw_to_distilled}
    if _curves(results):
        plots[CURVES_PNG] = plot_learning_curves
    return plots


def _curves(results: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]], str, str]]:
    """(label, validation curve, line style, colour) of every model that has one: a
    student's raw (dashed) and distilled (solid) curves share its colour."""
    out = [("teacher", results["teacher"].get("valid_curve") or [], "-o", "k")]
    for i, s in enumerate(results["students"]):
        out += [(f"{s['name']} {kind}", s.get(f"valid_curve_{kind}") or [], "--o" if kind == "raw" else "-o",
                 f"C{i % 10}") for kind in KINDS]
    return [c for c in out if c[1]]


def plot_raw_to_distilled(results: dict[str, Any], path: Path) -> None:
    """Each student's test AUC raw → distilled, beside the teacher's and the oracle's."""
    plt = pyplot()
    students = [StudentResult.from_dict(s) for s in results["students"]]
    fig, ax = plt.subplots(figsize=(max(4.5, 1.6 * len(students) + 2), 3.6))
    x = range(len(students))
    for i, s in enumerate(students):
        ax.annotate("", xy=(i + 0.1, s.distill.scored.auc), xytext=(i - 0.1, s.raw.scored.auc),
                    arrowprops={"arrowstyle": "->", "color": "tab:blue", "lw": 2})
        eta = f"η {s.eta:.2f}" if math.isfinite(s.eta) else "η n/a"
        ci = ((results.get("summary") or {}).get("eta", {}).get(s.name) or {}).get("ci")
        if ci and all(map(math.isfinite, ci)):
            eta += f"\n[{ci[0]:.2f}, {ci[1]:.2f}]"
        ax.text(i + 0.18, (s.raw.scored.auc + s.distill.scored.auc) / 2, eta, fontsize=8, va="center")
    models = (results.get("summary") or {}).get("models", {})
    for kind, colour, dx in (("raw", "tab:gray", -0.1), ("distill", "tab:blue", 0.1)):
        xs = [i + dx for i in x]  # side by side, the arrow between them
        ys = [s.training(kind).scored.auc for s in students]
        cis = [models.get(f"{s.name}/{kind}", {}).get("auc", {}).get("ci") for s in students]
        if all(c and all(map(math.isfinite, c)) for c in cis):
            err = [[y - c[0] for y, c in zip(ys, cis)], [c[1] - y for y, c in zip(ys, cis)]]
            ax.errorbar(xs, ys, yerr=err, fmt="o", color=colour, capsize=3,
                        label=f"{'distilled' if kind == 'distill' else 'raw'} (95% interval)")
        else:
            ax.plot(xs, ys, "o", color=colour, label="distilled" if kind == "distill" else "raw")
    ax.axhline(results["teacher"]["auc"], color="k", lw=1, label="teacher")
    if "oracle" in results:
        ax.axhline(results["oracle"]["auc"], color="tab:green", lw=1, ls=":", label="oracle (p_true)")
    ax.set_xticks(list(x), [s.name for s in students], fontsize=8)
    ax.set_xlim(-0.5, len(students) - 0.3)
    ax.set_ylabel("test AUC")
    ax.set_title("raw → distilled per student", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="best")
    save_figure(fig, path)


def plot_learning_curves(results: dict[str, Any], path: Path) -> None:
    """Validation AUC of every model at each of its validations, by epoch."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for label, curve, style, colour in _curves(results):
        # several validations in one epoch (eval_every) sit at fractions of it
        per_epoch: dict[int, int] = {}
        for c in curve:
            per_epoch[c["epoch"]] = per_epoch.get(c["epoch"], 0) + 1
        seen: dict[int, int] = {}
        xs = []
        for c in curve:
            seen[c["epoch"]] = seen.get(c["epoch"], 0) + 1
            xs.append(c["epoch"] - 1 + seen[c["epoch"]] / per_epoch[c["epoch"]])
        ax.plot(xs, [c["auc"] for c in curve], style, ms=3, color=colour, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation AUC")
    ax.set_title("validation AUC per model", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    save_figure(fig, path)


def result_table(r: dict[str, Any]) -> list[str]:
    head = f"{'model':18s} {'params':>10s} {'AUC':>7s} {'LogLoss':>8s} {'calib':>7s}   {'AUC raw→distill':>17s} {'η':>6s}"
    t = r["teacher"]
    rows = [head, f"{'teacher (' + t['arch'] + ')':18s} {t['params']:>10,} {t['auc']:>7.4f} {t['logloss']:>8.4f} "
                  f"{t['calibration']:>+7.3f}"]
    for s in map(StudentResult.from_dict, r["students"]):
        d = s.distill.scored
        rows.append(f"{s.name:18s} {s.params:>10,} {d.auc:>7.4f} {d.logloss:>8.4f} "
                    f"{d.calibration:>+7.3f}   {s.raw.scored.auc:.4f}→{d.auc:.4f} {s.eta:>6.2f}")
    if "oracle" in r:
        rows.append(f"{'oracle (p_true)':18s} {'':>10s} {r['oracle']['auc']:>7.4f}")
    return rows


def report_markdown(cfg: ExperimentConfig, r: dict[str, Any]) -> str:
    t = r["teacher"]
    students = [StudentResult.from_dict(s) for s in r["students"]]
    # GAUC only where it was computed (a log with a user field, an engine that groups by it)
    gauc = "gauc" in t or any(s.distill.scored.gauc is not None for s in students)

    def g(value: float | None) -> str:
        return f" {value:.4f} |" if gauc and value is not None else (" |" if gauc else "")

    lines = [f"# {cfg.run.name}", "", f"Log: {cfg.data.source}, {cfg.data.rows:,} rows" if cfg.data.source == "synthetic"
             else f"Log: {cfg.data.source} {cfg.data.path}", "",
             "| model | params | training rows | AUC |" + (" GAUC (user) |" if gauc else "") +
             " LogLoss | calibration | AUC raw | AUC distilled | η | stopped in epoch (best) |",
             "| --- | ---: | ---: | ---: |" + (" ---: |" if gauc else "") + " ---: | ---: | ---: | ---: | ---: | --- |"]
    lines.append(f"| teacher ({t['arch']}) | {t['params']:,} | {t.get('rows', 0):,} | {t['auc']:.4f} |"
                 f"{g(t.get('gauc'))} {t['logloss']:.4f} | {t['calibration']:+.3f} | | | | {_epochs(t)} |")
    for s in students:
        d = s.distill.scored
        unl = f" + {s.unlabelled_rows:,} unlabelled" if s.unlabelled_rows else ""
        lines.append(f"| {s.name} ({s.arch}, {s.towers}) | {s.params:,} | {s.rows:,} {s.rows_from}{unl} | {d.auc:.4f} |"
                     f"{g(d.gauc)} {d.logloss:.4f} | {d.calibration:+.3f} | {s.raw.scored.auc:.4f} | {d.auc:.4f} | "
                     f"{s.eta:.2f} | raw {_epochs(s.raw.early)}, distilled {_epochs(s.distill.early)} |")
    if "oracle" in r:
        lines += ["", f"Oracle AUC (true click probability): {r['oracle']['auc']:.4f}"]
    lines += leakage_lines(t)
    stale = r.get("platform", {}).get("representations") or r.get("representations")
    if stale:
        u, i = stale["user"], stale["item"]
        lines += ["", f"Teacher representations (as of strictly before each row's time) on the students' window: "
                      f"user {u['found']:.1%} of rows (mean age {u['mean_age']:,.0f}), item {i['found']:.1%} "
                      f"(mean age {i['mean_age']:,.0f}), history items {stale['history']['found']:.1%}. Age is in "
                      f"the log's time (seconds of ts, or rows); it enters each student as log1p(age)."]
    if isinstance(t.get("cold"), dict) and "auc" in t["cold"]:
        c = t["cold"]
        lines += ["", f"Cold users: {c['rows']:,} test rows of users with at most {c['threshold']} row(s) in the "
                      f"students' window; every model is also scored there (`<model>@cold` in the intervals below)"
                      + ("." if c.get("is_signals_teacher") else "; the teacher there is its final weights, not the "
                         "recording pass the signals came from, so no η is given on them.")]
    sem = t.get("semantic_ids")
    if isinstance(sem, dict) and sem.get("quality"):
        lines += ["", f"Semantic IDs (TokenMinds): {sem['levels']} levels × {sem['codes']} codes, residual k-means "
                      f"fitted on {sem['fitted_on']:,} representation values stamped by the end of the teacher's "
                      f"history.", "", "| level | relative reconstruction error | codes used | perplexity |",
                  "| ---: | ---: | ---: | ---: |"]
        lines += [f"| {q['level']} | {q['relative_error']:.3f} | {q['codes_used']:.0%} | {q['perplexity']:.1f} |"
                  for q in sem["quality"]]
    if any(s.unlabelled_rows for s in students):
        lines += ["", "Unlabelled: rows of the students' window outside a student's labelled sample that its "
                      "distilled model also trained on, with the teacher's soft label only (its task loss masked); "
                      "the raw model never saw them. η still compares the two on the same labelled rows."]
    lines += ["", "η = (AUC distilled − AUC raw) / (AUC teacher − AUC raw), same student, same rows. The teacher "
              "is the one whose signals the students got: as its first (recording) pass over the log left it. "
              "Best = the epoch of the best validation AUC; with patience a model ends with those weights."]
    if "final" in t:
        f = t["final"]
        lines += ["", f"The teacher trained on after that pass (to epoch {f['epochs']}): AUC {f['auc']:.4f}, "
                      f"LogLoss {f['logloss']:.4f}; not η's teacher."]
    lines += committee_lines(r)
    lines += interval_lines(r.get("summary"))
    lines += restart_lines(r.get("platform", {}).get("failures"))
    lines += ["", f"![raw → distilled per student]({GAINS_PNG})"]
    if _curves(r):
        lines += ["", f"![validation AUC per model]({CURVES_PNG})"]
    lines += _derived_lines(r.get("data", {}).get("derived") or {})
    lines += model_lines(r)
    return "\n".join(lines + [""])


def model_lines(r: dict[str, Any]) -> list[str]:
    """The run's model artifacts and, where measured, each student's serving cost."""
    models = r.get("models") or {}
    lines: list[str] = []
    if models.get("written"):
        lines += ["", "## Models", "", "Self-contained artifacts (weights, preprocessing, sampling, provenance; "
                  "`recdistill score DIR LOG`, `recdistill export DIR`):", ""]
        lines += [f"- `{name}`: `{rel}/`" for name, rel in models["written"].items()]
    lines += [f"- `{name}`: no artifact ({why})" for name, why in (models.get("missing") or {}).items()]
    served = [(s["name"], s["serving"]) for s in r.get("students", []) if s.get("serving")]
    if served:
        lines += ["", "### Serving cost (measured)", "",
                  "| student | format | device, threads | p50 / p99 ms, batch 1 | p50 / p99 ms, batch 512 | rows/s, "
                  "batch 512 | artifact bytes | exported bytes | dense params | embedding params |",
                  "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, v in served:
            for m in v.get("measured", []):
                b1, b512 = m["batch"].get("1", {}), m["batch"].get("512", {})
                lines.append(f"| {name} | {v.get('format')} | {m.get('device')}, {m.get('threads')} | "
                             f"{b1.get('p50_ms', float('nan')):.3f} / {b1.get('p99_ms', float('nan')):.3f} | "
                             f"{b512.get('p50_ms', float('nan')):.3f} / {b512.get('p99_ms', float('nan')):.3f} | "
                             f"{b512.get('rows_per_s', float('nan')):,.0f} | {v.get('artifact_bytes', 0):,} | "
                             f"{v.get('exported_bytes', 0):,} | {v['params']['dense']:,} | "
                             f"{v['params']['embedding']:,} |")
        lines += ["", "The distilled student's main tower (the auxiliary tower of a decoupled student is dropped, as it "
                  "is served), exported and timed after a warm-up on random valid inputs."]
    return lines


def interval_lines(summary: dict[str, Any] | None) -> list[str]:
    """The summary's intervals (``seeds.summarize``): every model's AUC, η per student and
    the paired differences, each difference marked a finding only when its interval
    excludes 0."""
    if not summary:
        return []
    n, noise = summary["seeds"], summary["noise"]
    what = {"seeds and test rows": f"over {n} seeds and {summary['replicates']} resamples of the test rows",
            "seeds": f"over {n} seeds; no test-row resamples (run.bootstrap=0, or a model reused from a store "
                     f"written before them)",
            "test rows": f"over {summary['replicates']} resamples of the test rows, one seed: training noise "
                         f"is not in them (run.seeds=3 or more for that)",
            "none": "none: one seed and no test-row resamples (run.bootstrap=0, or a teacher or raw student "
                    "reused from a store written before them)"}[noise]
    out = ["", f"## Intervals ({summary['level']:.0%}, {what})", "",
           "| model | AUC (mean) | interval | std over seeds | LogLoss (mean) | interval |",
           "| --- | ---: | --- | ---: | ---: | --- |"]
    for name, m in summary["models"].items():
        ll = m.get("logloss")
        std = m["auc"].get("std", math.nan)
        out.append(f"| {name} | {m['auc']['mean']:.4f} | {interval_text(m['auc'])} | {std:.4f} | "
                   + (f"{ll['mean']:.4f} | {interval_text(ll)} |" if ll else " | |"))
    out += ["", "| paired figure | value | interval | verdict |", "| --- | ---: | --- | --- |"]
    for name, e in summary["eta"].items():
        out.append(f"| {name}: η | {e['mean']:.3f} | {interval_text(e, '.3f')} | {verdict_text(e)} |")
    for d in summary["differences"]:
        fmt = ".3f" if d["metric"] in ("eta", "transfer_ratio") else ".4f"
        out.append(f"| {d['name']} | {d['mean']:+{fmt}} | {interval_text(d, fmt)} | {verdict_text(d)} |")
    out += ["", "A paired figure is a finding only when its interval excludes 0; otherwise it is within noise. "
                "Intervals are the central 95% of joint draws: a Student-t draw over seeds (their own covariance) "
                "plus one Poisson resample of the test rows, the same rows for every model (recdistill/intervals.py)."]
    return out + transfer_ratio_lines(summary.get("transfer_ratio"))


def transfer_ratio_lines(transfer: dict[str, Any] | None) -> list[str]:
    """LoopFM's transfer ratios: each representation-reading student against its baseline."""
    if not transfer:
        return []
    out = ["", "## Teacher representations (LoopFM)", "",
           "Transfer ratio = (AUC − baseline raw AUC) / (teacher AUC − baseline raw AUC): the share of the teacher's "
           "gain over the plain raw student that a student keeps. The baseline is the student of the same shape "
           "that reads no representations; its distilled model is 'KD only'.", "",
           "| student | baseline | reads | KD only | representations only | KD + representations |",
           "| --- | --- | --- | --- | --- | --- |"]
    for name, t in transfer.items():
        for sfx, where in (("", ""), ("_cold", " (cold users)")):
            if f"kd{sfx}" not in t:
                continue
            cells = [f"{t[k + sfx]['mean']:.3f} {interval_text(t[k + sfx], '.3f')}" for k in
                     ("kd", "representations_only", "kd_representations")]
            out.append(f"| {name}{where} | {t['baseline']} | {', '.join(t['representations'])} | "
                       + " | ".join(cells) + " |")
    return out


def _derived_lines(d: dict[str, Any]) -> list[str]:
    """The sizes the run derived from its data (sizing.py), as a table."""
    if not d:
        return []
    out = ["", f"Sized by the data (train split {d['train_rows']:,} rows, valid {d['valid_rows']:,}; keys left at "
               f"auto, see train/schedule.py):", "",
           "| model | rows | batch | epochs (most) | steps per epoch | eval_every | patience | lr / embedding lr |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, m in [("teacher", d["teacher"]), *d["students"].items()]:
        out.append(f"| {name} | {m['rows']:,} | {m['batch_size']} | {m['epochs']} | {m['steps_per_epoch']:,} | "
                   f"{m['eval_every'] or 'epoch'} | {m['patience']} | {m['lr']:g} / {m['embedding_lr']:g} |")
    if d.get("buckets"):
        b = d["buckets"]
        out += ["", "Hash buckets per field (distinct ids ≈ → buckets): " +
                ", ".join(f"{k} {v['distinct']:,} → {v['buckets']:,}" for k, v in b.items())]
    return out


def _epochs(m: dict[str, Any]) -> str:
    """``stopped (best)`` from a model's results; blank for results without them."""
    stopped, best = m.get("stopped_epoch"), m.get("best_epoch")
    if stopped is None:
        return ""
    return f"{stopped}" + (f" ({best})" if best is not None else "")


_SIGNAL_MODES = {"forward": "forward (each row's logit before the teacher learned it)",
                 "crossfit": "cross-fitted (each fold scored by a teacher that never saw it)",
                 "posthoc": "post hoc (the trained teacher scored rows it trained on: leaky by construction)"}


def leakage_lines(t: dict[str, Any]) -> list[str]:
    """The leakage gauge: the teacher's AUC on the window rows it gave signals for, beside
    its AUC on the test split. A signal AUC well above the test AUC says the teacher
    memorised the rows it scored, so its soft labels there are overconfident."""
    w = t.get("signal_auc_window")
    if w is None or w != w:
        return []
    mode = t.get("signals", "forward")
    steps = f" ({t['steps']:,} teacher steps{' over its fold teachers' if t.get('folds') else ''})" \
        if isinstance(t.get("steps"), int) else ""
    out = ["", f"Signals: {_SIGNAL_MODES.get(mode, mode)}{steps}. Leakage gauge: the teacher's AUC on the students' "
               f"window rows it gave signals for is {w:.4f}, on the test split {t['auc']:.4f} (gap {w - t['auc']:+.4f}; "
               f"a large positive gap says the signals are leaky)."]
    if t.get("folds"):
        out += ["", "Fold teachers (crossfit): " + "; ".join(
            f"fold {k}: test AUC {f['auc']:.4f}, on its held-out fold {f['signal_auc_window']:.4f} "
            f"({f['signal_rows']:,} rows, {f['steps']} steps)" for k, f in enumerate(t["folds"])) + "."]
    return out
