"""The figures of a 1→N run with their noise: ``summarize`` gives every model's AUC and
LogLoss with an interval, η per student and the paired differences (distilled − raw per
student, each student against the first, each ``run.pairs`` ablation), each marked a
finding only when its interval excludes 0 (``intervals``); ``over_seeds`` folds the
results of a run's seeds into one results dict of the usual shape.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from recdistill.intervals import LEVEL, Figures, draws, finding, interval, ratio, spread
from recdistill.results import KINDS

SEEDS_DIR = "seeds"


def over_seeds(per_seed: list[dict[str, Any]], seeds: list[int], pairs: list[list[str]]) -> dict[str, Any]:
    """The results of a run over seeds, from each seed's results (see the module docstring)."""
    first = per_seed[0]
    out: dict[str, Any] = {
        "engine": first["engine"],
        "teacher": _mean_record([r["teacher"] for r in per_seed]),
        "students": [_mean_record([r["students"][i] for r in per_seed]) for i in range(len(first["students"]))],
    }
    if "oracle" in first:
        out["oracle"] = _mean_record([r["oracle"] for r in per_seed])
    summary = summarize(per_seed, pairs)
    for i, s in enumerate(out["students"]):
        s["eta"] = summary["eta"][s["name"]]["mean"]  # η of the mean AUCs (the ratio, not a mean of ratios)
        if first["students"][i].get("serving"):  # one shape in every seed: the first seed's export, as measured
            s["serving"] = {**first["students"][i]["serving"], "seed": seeds[0]}
    out["summary"] = summary
    out["per_seed"] = [{"seed": s, "dir": f"{SEEDS_DIR}/seed-{s}", "teacher_auc": r["teacher"]["auc"],
                        "teacher_key": r.get("platform", {}).get("teacher_key"),
                        "students": {x["name"]: {k: x[k] for k in ("auc_raw", "auc_distill", "eta")}
                                     for x in r["students"]}} for s, r in zip(seeds, per_seed)]
    out["data"] = first.get("data", {})
    if all(r.get("committee") for r in per_seed):  # each seed's experts (their key has the seed), averaged
        c = [r["committee"] for r in per_seed]
        out["committee"] = {**_mean_record(c), "reused": all(x["reused"] for x in c),
                            "experts": [_mean_record([x["experts"][k] for x in c]) for k in range(len(c[0]["experts"]))]}
    stale = [r.get("platform", {}).get("representations") for r in per_seed]
    if all(stale):
        out["representations"] = _mean_record(stale)  # their staleness, averaged over the seeds
    return out


def _mean_record(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One record from each seed's: numbers averaged, lists (curves, bootstrap deviations:
    one seed's) left out, the rest from the first seed."""
    out: dict[str, Any] = {}
    for k, v in records[0].items():
        vals = [r.get(k) for r in records]
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vals):
            m = float(np.mean(vals))
            out[k] = int(round(m)) if all(isinstance(x, int) for x in vals) else m
        elif isinstance(v, dict):
            out[k] = _mean_record([x if isinstance(x, dict) else {} for x in vals])
        elif not isinstance(v, list):
            out[k] = v
    return out


def summarize(per_seed: list[dict[str, Any]], pairs: list[list[str]] = ()) -> dict[str, Any]:
    """Every model's AUC (interval over seeds and test rows) and LogLoss (over seeds), η per
    student and the paired differences, from each seed's results (one seed: test rows only)."""
    names = [s["name"] for s in per_seed[0]["students"]]
    auc: dict[str, list[float]] = {"teacher": [r["teacher"]["auc"] for r in per_seed]}
    boot: dict[str, list[Any]] = {"teacher": [r["teacher"].get("auc_boot") for r in per_seed]}
    other: dict[str, dict[str, list[float]]] = {"teacher": _scalars([r["teacher"] for r in per_seed], "")}
    for i, n in enumerate(names):
        for kind in KINDS:
            recs = [r["students"][i] for r in per_seed]
            auc[f"{n}/{kind}"] = [x[f"auc_{kind}"] for x in recs]
            boot[f"{n}/{kind}"] = [x.get(f"auc_boot_{kind}") for x in recs]
            other[f"{n}/{kind}"] = _scalars(recs, f"_{kind}")
    cold = all("cold" in r["teacher"] and "auc" in r["teacher"]["cold"] and all("cold" in x for x in r["students"])
               for r in per_seed)
    if cold:  # each model on the cold users' test rows (run.cold_users), as models of their own
        auc["teacher@cold"] = [r["teacher"]["cold"]["auc"] for r in per_seed]
        boot["teacher@cold"] = [r["teacher"]["cold"].get("auc_boot") for r in per_seed]
        for i, n in enumerate(names):
            for kind in KINDS:
                auc[f"{n}/{kind}@cold"] = [r["students"][i]["cold"][kind]["auc"] for r in per_seed]
                boot[f"{n}/{kind}@cold"] = [r["students"][i]["cold"][kind].get("auc_boot") for r in per_seed]
                other[f"{n}/{kind}@cold"] = _scalars([r["students"][i]["cold"][kind] for r in per_seed], "")
        other["teacher@cold"] = _scalars([r["teacher"]["cold"] for r in per_seed], "")
    f = Figures.of(auc, boot)
    d = draws(f)
    noise = ("seeds and test rows" if f.seeds > 1 and f.rows_resampled else "seeds" if f.seeds > 1
             else "test rows" if f.rows_resampled else "none")
    models = {}
    for m in auc:
        models[m] = {"auc": {**interval(lambda x, m=m: x[m], f, d), "std": spread(auc[m])["std"],
                             "values": auc[m]},
                     **{k: spread(v) for k, v in other[m].items()}}
    eta = {n: {**interval(ratio(f"{n}/distill", f"{n}/raw", "teacher", f"{n}/raw"), f, d),
               "values": [r["students"][i]["eta"] for r in per_seed]} for i, n in enumerate(names)}
    signals_teacher = cold and all(r["teacher"]["cold"].get("is_signals_teacher") for r in per_seed)
    if signals_teacher:  # η on the cold users' rows: against the teacher the signals came from
        for n in names:
            eta[f"{n}@cold"] = interval(ratio(f"{n}/distill@cold", f"{n}/raw@cold", "teacher@cold", f"{n}/raw@cold"),
                                        f, d)
    for e in eta.values():
        e["finding"] = finding(e)
    diffs = [_difference(f"{n}: distilled − raw", "auc", f"{n}/distill", f"{n}/raw", f, d) for n in names]
    compared = [(n, names[0]) for n in names[1:]] + [tuple(p) for p in pairs if tuple(p) not in
                                                      {(n, names[0]) for n in names[1:]}]
    for a, b in compared:
        diffs.append(_difference(f"{a} − {b}: distilled AUC", "auc", f"{a}/distill", f"{b}/distill", f, d))
        diffs.append(_difference(f"{a} − {b}: η", "eta", ratio(f"{a}/distill", f"{a}/raw", "teacher", f"{a}/raw"),
                                 ratio(f"{b}/distill", f"{b}/raw", "teacher", f"{b}/raw"), f, d))
    transfer = {}
    for s in per_seed[0]["students"]:
        base = s.get("baseline")
        if not s.get("representations") or base not in names:
            continue
        n = s["name"]
        # LoopFM's transfer ratio: the share of the teacher's gain over the plain raw student
        # (the baseline's) that a student keeps, with KD, representations, or both
        got = {"baseline": base, "representations": s["representations"],
               "kd": interval(ratio(f"{base}/distill", f"{base}/raw", "teacher", f"{base}/raw"), f, d),
               "representations_only": interval(ratio(f"{n}/raw", f"{base}/raw", "teacher", f"{base}/raw"), f, d),
               "kd_representations": interval(ratio(f"{n}/distill", f"{base}/raw", "teacher", f"{base}/raw"), f, d)}
        if signals_teacher:
            for k, num, b in (("kd_cold", f"{base}/distill@cold", f"{base}/raw@cold"),
                              ("representations_only_cold", f"{n}/raw@cold", f"{base}/raw@cold"),
                              ("kd_representations_cold", f"{n}/distill@cold", f"{base}/raw@cold")):
                got[k] = interval(ratio(num, b, "teacher@cold", b), f, d)
        for k in [k for k in got if k.startswith(("kd", "representations_only"))]:
            got[k]["finding"] = finding(got[k])
        transfer[n] = got
        diffs.append(_difference(f"{n} − {base}: transfer ratio, KD + representations − KD only", "transfer_ratio",
                                 ratio(f"{n}/distill", f"{base}/raw", "teacher", f"{base}/raw"),
                                 ratio(f"{base}/distill", f"{base}/raw", "teacher", f"{base}/raw"), f, d))
        diffs.append(_difference(f"{n} − {base}: raw AUC (representations only − raw)", "auc", f"{n}/raw",
                                 f"{base}/raw", f, d))
    out = {"seeds": f.seeds, "replicates": len(next(iter(f.deviations.values()))[0]) if f.deviations else 0,
           "noise": noise, "level": LEVEL, "models": models, "eta": eta, "differences": diffs}
    if transfer:
        out["transfer_ratio"] = transfer
    return out


def _scalars(records: list[dict[str, Any]], suffix: str) -> dict[str, list[float]]:
    """Per-seed LogLoss, calibration and (where computed) GAUC of one model."""
    out = {}
    for k in ("logloss", "calibration", "gauc"):
        vals = [r.get(f"{k}{suffix}") for r in records]
        if all(isinstance(v, (int, float)) and math.isfinite(v) for v in vals):
            out[k] = [float(v) for v in vals]
    return out


def _difference(label: str, metric: str, a: Any, b: Any, f: Figures, d: dict[str, np.ndarray]) -> dict[str, Any]:
    """A paired difference a − b of two figures (names, or statistics of the draws)."""
    fa = (lambda x: x[a]) if isinstance(a, str) else a
    fb = (lambda x: x[b]) if isinstance(b, str) else b
    got = interval(lambda x: fa(x) - fb(x), f, d)
    out = {"name": label, "metric": metric, **got}
    out["finding"] = finding(out)
    return out

