"""The committee's part of a 1→N report (DiverseDistill): its experts, and what each
variant cost in teacher forward passes and training time."""

from __future__ import annotations

from typing import Any

# a sweep trial of a committee run (``committee.baselines``): η of its variants of the
# trial's student, and the share of the experts' forward passes the filtered one skipped
COMMITTEE_METRICS = ("eta_average", "eta_committee", "eta_filtered", "filtered_passes_saved")


def committee_lines(r: dict[str, Any]) -> list[str]:
    c = r.get("committee")
    if not isinstance(c, dict) or not c.get("experts"):
        return []
    experts = c["experts"]
    out = ["", "## Committee (DiverseDistill)", "",
           f"{len(experts)} domain expert(s) with the first student's shape ({c['arch']}), each trained once on its "
           f"slice of the teacher-only history (sliced by {c['slice_by']}), then frozen"
           + (" (reused from the signal store)" if c.get("reused") else f"; training took {c['seconds']:.1f} s, "
              "paid once per key") + ".", "",
           "| expert | history rows | steps | test AUC | LogLoss | AUC on its slice's test rows | the teacher there |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def own(e: dict[str, Any], key: str) -> str:
        return f"{e[key]:.4f}" if key in e else "–"

    out += [f"| {e['name']} | {e['rows']:,} | {e['steps']:,} | {e['auc']:.4f} | {e['logloss']:.4f} | "
            f"{own(e, 'auc_own_slice')} | {own(e, 'teacher_auc_own_slice')} |" for e in experts]
    out += ["", "On its slice: the expert and the teacher (its stored, final weights) on the test rows that fall in "
                "the expert's slice by the same rule (by time, every test row is in the last slice)."]
    variants = [s for s in r.get("students", []) if s.get("committee")]
    if variants:
        out += ["", "Each variant distils the same student (same seeds, rows and raw model) from another teacher: "
                    "an expert alone, the naive mean of every teacher's logit, or the question-answer committee "
                    "without and with per-row filtering. Expert passes are forward passes of the frozen experts; "
                    "signal reads are uses of the big teacher's stored logits. The module is dropped after "
                    "training: every distilled student has the raw student's parameters.", "",
                "| student | from | η | AUC distilled | expert passes (of possible) | teacher uses saved | "
                "training s | params |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for s in variants:
            p = s["committee"]
            out.append(f"| {s['name']} | {p['distill_from']} | {s['eta']:.3f} | {s['auc_distill']:.4f} | "
                       f"{p['expert_passes']:,} ({p['expert_passes_possible']:,}) | {p['teacher_uses_saved']:.1%} | "
                       f"{s.get('train_seconds_distill', float('nan')):.1f} | {s['params']:,} |")
    return out
