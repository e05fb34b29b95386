"""Local outputs of an online run: results.json, report.md and the AUC-over-windows plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from recdistill.config import ExperimentConfig
from recdistill.report.render import pyplot, restart_lines, save_figure, write_run_outputs


def plot_auc_over_windows(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    ws = results["windows"]
    x = [w["window"] for w in ws]
    n = len(results["students"])
    fig, axes = plt.subplots(n, 1, figsize=(8, 3.2 * n), squeeze=False, sharex=True)
    for j, ax in enumerate(axes[:, 0]):
        ax.plot(x, [w["teacher"]["auc"] for w in ws], "k-o", ms=3, label="teacher")
        ax.plot(x, [w["students"][j]["auc"] for w in ws], "-o", ms=3, color="tab:blue", label="streaming distill")
        if "auc_label_only" in ws[0]["students"][j]:
            ax.plot(x, [w["students"][j]["auc_label_only"] for w in ws], "-s", ms=3, color="tab:orange",
                    label="distilled in batch, labels only after")
        ax.plot(x, [w["students"][j]["auc_raw"] for w in ws], "--", color="tab:gray", label="raw (never distilled)")
        for s in results["shift"]:
            if s["fired"]:
                ax.axvline(s["window"], color="tab:red", alpha=0.3, lw=6)
        missing = [w["window"] for w in ws if not w["signals"]]
        if missing:
            ax.plot(missing, [ax.get_ylim()[0]] * len(missing), "x", color="tab:red", label="no teacher signals")
        ax.set_ylabel("AUC (prequential)")
        ax.set_title(f"student {results['students'][j]['name']}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    axes[-1, 0].set_xlabel("window (red band: shift detector fired)")
    fig.suptitle(f"AUC per streaming window, τ = {results['stream']['tau'] or '∞'}, replay {results['stream']['replay']}",
                 fontsize=11)
    save_figure(fig, path)


def online_table(results: dict[str, Any]) -> list[str]:
    lines = []
    names = [s["name"] for s in results["students"]]
    head = f"{'window':>6s} {'lag s':>6s} {'JS':>7s} {'replay':>6s} {'teacher':>8s} " + " ".join(
        f"{n[:10] + ' raw/dist/lbl':>26s}" for n in names)
    lines.append(head)
    for w, sh in zip(results["windows"], results["shift"]):
        lag = "-" if w["lag"] is None else f"{w['lag']:.1f}"
        cells = []
        for s in w["students"]:
            lo = f"{s['auc_label_only']:.4f}" if "auc_label_only" in s else "-"
            cells.append(f"{s['auc_raw']:.4f}/{s['auc']:.4f}/{lo:>6s}".rjust(26))
        lines.append(f"{w['window']:>6d} {lag:>6s} {sh['js']:7.4f} {('yes' if w['replay'] else 'no'):>6s} "
                     f"{w['teacher']['auc']:8.4f} " + " ".join(cells) + ("" if w["signals"] else "  (no signals)"))
    for s in results["students"]:
        line = (f"[student {s['name']}] end of batch phase: AUC raw {s['auc_raw']:.4f} → distilled "
                f"{s['auc_distill']:.4f} (η {s['eta']:.2f}); streaming mean: raw {s['stream_auc_raw']:.4f}, "
                f"distilled {s['stream_auc_distill']:.4f} (η {s['stream_eta']:.2f})")
        if "stream_auc_label_only" in s:
            line += f", labels only after batch {s['stream_auc_label_only']:.4f} (η {s['stream_eta_label_only']:.2f})"
        lines.append(line)
    return lines


def report_markdown(cfg: ExperimentConfig, r: dict[str, Any]) -> str:
    st = r["stream"]
    lines = [f"# {cfg.run.name} (online)", "",
             f"Windows: {st['windows']} ({st['batch_windows']} in the batch phase); teacher update interval τ = "
             f"{st['tau'] or '∞ (frozen)'}; replay {st['replay']}. Teacher {r['teacher']['arch']} "
             f"({r['teacher']['params']:,} params, key `{r['teacher']['key']}`"
             f"{', reused from the signal store' if r['teacher']['reused'] else ''}).", "",
             "![AUC per window](auc_over_windows.png)", "",
             "Every model is scored on a window before it learns from it (prequential).", "",
             "## End of the batch phase (first streaming window)", "",
             "| student | params | rows labelled + unlabelled (distilled, whole run) | AUC raw | AUC distilled | η |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for s in r["students"]:
        rows = f"{s['rows_labelled']:,} + {s['rows_unlabelled']:,}" if "rows_labelled" in s else ""
        lines.append(f"| {s['name']} | {s['params']:,} | {rows} | {s['auc_raw']:.4f} | {s['auc_distill']:.4f} | "
                     f"{s['eta']:.2f} |")
    lines += ["", "## Streaming windows, mean (all / last third)", "",
              "| student | AUC raw | AUC streaming distill | AUC labels only after batch | η distill | η labels only |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for s in r["students"]:
        for label in ("stream", "last"):
            lo = s.get(f"{label}_auc_label_only")
            elo = s.get(f"{label}_eta_label_only")
            lines.append(f"| {s['name']} ({'all' if label == 'stream' else 'last third'}) | {s[f'{label}_auc_raw']:.4f} "
                         f"| {s[f'{label}_auc_distill']:.4f} | {'' if lo is None else f'{lo:.4f}'} | "
                         f"{s[f'{label}_eta']:.2f} | {'' if elo is None else f'{elo:.2f}'} |")
    ages = [(w["window"], w["replay_signal_age"]) for w in r["windows"] if w.get("replay_signal_age") is not None]
    if ages:  # a window's own rows get the logit recorded in it; replayed rows carry older ones
        lines += ["", "Signal age of the replayed rows (windows since their logit was recorded), per window: "
                  + ", ".join(f"{w}: {a:.1f}" for w, a in ages) + "."]
    lines += restart_lines(st.get("failures"))
    lines += ["", "## Per window", "", "```", *online_table(r), "```", ""]
    return "\n".join(lines)


def write_online_results(cfg: ExperimentConfig, results: dict[str, Any], log: Callable[[str], None]) -> list[Path]:
    paths = write_run_outputs(cfg.run.out_dir, cfg.run.name, results, report_markdown(cfg, results),
                              {"auc_over_windows.png": plot_auc_over_windows})
    log("\n".join(online_table(results)))
    log(f"[run] wrote {', '.join(map(str, paths))} ({results['seconds']:.0f} s)")
    return paths
