"""The batch experiment's outputs: results.json, the printed η table, report.md/html."""

from __future__ import annotations

import json
from typing import Any, Callable

from recdistill.config import ExperimentConfig
from recdistill.report.render import write_html
from recdistill.results import StudentResult


def write_results(cfg: ExperimentConfig, results: dict[str, Any], log: Callable[[str], None]) -> None:
    out = cfg.run.out_dir
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "report.md").write_text(report_markdown(cfg, results))
    write_html(out, cfg.run.name)
    log("\n".join(result_table(results)))
    log(f"[run] wrote {out / 'results.json'}, {out / 'report.md'}, {out / 'report.html'} ({results['seconds']:.0f} s)")


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
        lines.append(f"| {s.name} ({s.arch}, {s.towers}) | {s.params:,} | {s.rows:,} {s.rows_from} | {d.auc:.4f} |"
                     f"{g(d.gauc)} {d.logloss:.4f} | {d.calibration:+.3f} | {s.raw.scored.auc:.4f} | {d.auc:.4f} | "
                     f"{s.eta:.2f} | raw {_epochs(s.raw.early)}, distilled {_epochs(s.distill.early)} |")
    if "oracle" in r:
        lines += ["", f"Oracle AUC (true click probability): {r['oracle']['auc']:.4f}"]
    lines += ["", "η = (AUC distilled − AUC raw) / (AUC teacher − AUC raw), same student, same rows. The teacher "
              "is the one whose signals the students got: as its first (recording) pass over the log left it. "
              "Best = the epoch of the best validation AUC; with patience a model ends with those weights."]
    if "final" in t:
        f = t["final"]
        lines += ["", f"The teacher trained on after that pass (to epoch {f['epochs']}): AUC {f['auc']:.4f}, "
                      f"LogLoss {f['logloss']:.4f}; not η's teacher."]
    lines += _derived_lines(r.get("data", {}).get("derived") or {})
    return "\n".join(lines + [""])


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
