"""Local outputs of a transfer run: results.json, the learning-curve plot, report.md/html."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from recdistill.config import ExperimentConfig
from recdistill.report.render import pyplot, restart_lines, save_figure, write_run_outputs

_ZOOM = 0.03  # AUC range shown below the scratch student's final AUC
_COLOURS = {"scratch": "tab:gray", "progressive": "tab:blue", "end_to_end": "tab:red",
            "progressive_noaug": "tab:green"}


def plot_curves(results: dict[str, Any], path: Path) -> None:
    """Held-out AUC against training steps and against training seconds, per variant."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    target = results.get("speedup", {}).get("target_auc")
    for name, v in results["variants"].items():
        curve = v["curve"]
        colour = _COLOURS.get(name)
        for ax, x in zip(axes, ("step", "seconds")):
            ax.plot([p[x] for p in curve], [p["auc"] for p in curve], "-o", ms=2.5, color=colour, label=name)
            ends = [p for i, p in enumerate(curve[:-1]) if curve[i + 1]["phase"] != p["phase"] and p["phase"]]
            for p in ends:
                ax.axvline(p[x], color=colour, ls=":", alpha=0.6)
    for ax, label in zip(axes, ("training steps", "training seconds (evaluation excluded)")):
        if target is not None:
            ax.axhline(target, color="k", lw=0.8, ls="--", label="scratch's final AUC")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    aucs = [p["auc"] for v in results["variants"].values() for p in v["curve"]]
    note = ""
    if target is not None and min(aucs) < target - _ZOOM:
        # the first few points (an untrained head) would squash the range the variants differ in
        axes[0].set_ylim(target - _ZOOM, max(aucs) + _ZOOM / 10)
        note = f"; AUC below {target - _ZOOM:.3f} (the first steps) is off the chart"
    axes[0].set_ylabel("held-out AUC")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"transfer: learning curves (dotted: end of phase 1{note})", fontsize=10)
    save_figure(fig, path)


def _fmt(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def transfer_table(r: dict[str, Any]) -> list[str]:
    head = f"{'variant':18s} {'AUC':>7s} {'LogLoss':>8s} {'steps':>6s} {'train s':>8s}  to scratch's AUC (steps, time)"
    rows = [head]
    sp = r.get("speedup", {})
    for name, v in r["variants"].items():
        hit = sp.get(name)
        match = "" if hit is None else ("never" if not hit["reached"] else
                                        f"{hit['steps']} ({hit['step_ratio']:.2f}×), {hit['seconds']:.1f} s "
                                        f"({_fmt(hit['time_ratio'], '.2f')}×)")
        rows.append(f"{name:18s} {v['final']['auc']:>7.4f} {v['final']['logloss']:>8.4f} {v['steps']:>6d} "
                    f"{v['seconds']:>8.1f}  {match}")
    return rows


def _old_model_lines(old: dict[str, Any] | None) -> list[str]:
    """A saved old model (``transfer.old_model``): where it came from and how its ids met this run's."""
    if not old:
        return []
    lines = ["", f"The old model is the saved artifact `{old['path']}` (weights sha256 {str(old['weights_sha256'])[:12]}…, "
                 f"trained in run {old.get('trained_in')}): its logits come from its own encoding of this run's rows, "
                 f"shifted by {old['logit_offset']:+.4f} onto this run's sampling; its embeddings are projected through "
                 f"the pairing of its encoder and this run's.", "",
             "| field | old buckets | new buckets | id pairs | rows with an id the old model never saw |",
             "|---|---:|---:|---:|---:|"]
    for field, p in old["id_pairing"].items():
        lines.append(f"| {field} | {p['old_buckets']:,} | {p['new_buckets']:,} | {p['pairs']:,} | {p['old_oov_rows']:,} |")
    return lines + [""]


def report_markdown(cfg: ExperimentConfig, r: dict[str, Any]) -> str:
    t, s, d = r["teacher"], r["student"], r["data"]
    lines = [f"# {cfg.run.name}: cross-architecture transfer", "",
             f"Old model (teacher): {t['arch']}, embed {r['teacher_embed_dim']}, {t['params']:,} params, "
             f"AUC {t['auc']:.4f}" + (" (reused from the signal store)" if r["platform"]["teacher_reused"] else "")
             + (" on this run's test rows" if "old_model" in r else ""),
             *_old_model_lines(r.get("old_model")),
             f"New model (student): {s['arch']}, embed {s['embed_dim']}, depth {s['depth']}, width {s['width']}, "
             f"towers {s['towers']}", "",
             f"Offline rows: {d['offline_rows']:,} → {d['train_rows']:,} labelled after sampling "
             f"({d.get('sampling', {}).get('strategy', 'all')}; positive rate {d['train_positive_rate']:.3f}) and "
             f"{d['augmented_rows']:,} augmented rows "
             + (f"({d['augment']['generator']}, ratio {d['augment']['ratio']})" if "augment" in d else "(off)"), "",
             "## Variants", "",
             "| variant | AUC | LogLoss | calibration | steps | training s | steps to scratch's AUC | time to it |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    sp = r.get("speedup", {})
    for name, v in r["variants"].items():
        hit = sp.get(name)
        steps = time_ = ""
        if hit is not None:
            steps = f"{hit['steps']} ({hit['step_ratio']:.2f}×)" if hit["reached"] else "never"
            time_ = f"{hit['seconds']:.1f} s ({_fmt(hit['time_ratio'], '.2f')}×)" if hit["reached"] else "never"
        f = v["final"]
        lines.append(f"| {name} | {f['auc']:.4f} | {f['logloss']:.4f} | {f['calibration']:+.3f} | {v['steps']} | "
                     f"{v['seconds']:.1f} | {steps} | {time_} |")
    if sp:
        lines += ["", f"Target: the scratch student's final curve AUC {sp['target_auc']:.4f} "
                      f"({sp['scratch_steps']} steps, {sp['scratch_seconds']:.1f} s). Curves are scored on "
                      f"{cfg.transfer.eval_rows:,} test rows every {cfg.transfer.eval_every} steps; "
                      f"final metrics on the whole test split."]
    lines += ["", "![learning curves](curves.png)", ""]
    fields = next((v["fields"] for v in r["variants"].values() if v["fields"]), [])
    if fields:
        lines += ["## Embedding projection per field", "",
                  "| field | method | d_T → d_S | rows | rel. reconstruction error | Gram distortion | energy kept |",
                  "| ---: | --- | --- | ---: | ---: | ---: | ---: |"]
        for fr in fields:
            lines.append(f"| {fr['field']} | {fr['method']} | {fr['d_t']} → {fr['d_s']} | {fr['rows']:,} | "
                         f"{fr['rel_recon_error']:.2e} | {fr['gram_distortion']:.2e} | {fr['energy_kept']:.3f} |")
    if "sampling" in d:
        lines += ["", "## Sampling", "", "```", json.dumps(d["sampling"], indent=2, default=str), "```"]
    lines += restart_lines(r.get("platform", {}).get("failures"))
    return "\n".join(lines) + "\n"


def write_transfer_results(cfg: ExperimentConfig, results: dict[str, Any], log: Callable[[str], None]) -> list[Path]:
    paths = write_run_outputs(cfg.run.out_dir, cfg.run.name, results, report_markdown(cfg, results),
                              {"curves.png": plot_curves})
    log("\n".join(transfer_table(results)))
    log(f"[run] wrote {', '.join(map(str, paths))} ({results['seconds']:.0f} s)")
    return paths
