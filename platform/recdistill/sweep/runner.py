"""A sweep: trials resolved up front, grouped by teacher key, each distinct teacher
trained once, the rest of the trials run by Ray Tune reading the stored signals.

The first trial of each teacher group runs on the driver before Tune starts: it trains
that teacher (signals to the store) and its own students. Every other trial then finds
its teacher's signals complete in the store and runs 0 teacher steps. Tune runs each
trial as a driver function (``tune.with_resources(fn, {"cpu": 0.01})``) that builds its
own Ray Train student run, the Train V2 way; Train workers get at most an even share of
the CPUs left after one for Ray Data (a trial whose trainer cannot place its workers
would wait forever, see RAY_NOTES).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

from recdistill.config import ExperimentConfig, to_dict
from recdistill.sweep.space import SearchSpace, trial_config, trial_overrides
from recdistill.train.plan import seed_name

TRIAL_METRICS = ("auc", "auc_raw", "eta", "logloss", "calibration", "params", "wandb_run_id")
EXTRA = ("teacher_auc", "teacher_steps", "teacher_reused", "raw_reused", "seconds", "train_seconds", "stream_auc",
         "stream_eta")


def teacher_key_of(cfg: ExperimentConfig) -> str:
    from recdistill.train.keys import online_teacher_key, teacher_key

    return online_teacher_key(cfg) if cfg.stream.enabled else teacher_key(cfg)


def trial_metrics(results: dict[str, Any], j: int = 0) -> dict[str, Any]:
    """Student ``j`` of a run, flattened: a trial's metrics."""
    s = results["students"][j]
    out = {"auc": s["auc_distill"], "auc_raw": s["auc_raw"], "eta": s["eta"], "params": s["params"],
           "logloss": s.get("logloss_distill"), "calibration": s.get("calibration_distill"),
           "teacher_auc": results["teacher"]["auc"], "seconds": results["seconds"],
           # the run's own W&B run: it tracked the trial live (a packed run tracks its trials together)
           "wandb_run_id": (results.get("tracking") or {}).get("wandb_run_id")}
    if "stream_auc_distill" in s:
        out.update({"stream_auc": s["stream_auc_distill"], "stream_eta": s["stream_eta"]})
    p = results.get("platform", {})
    teacher_reused = bool(p.get("teacher_reused", results["teacher"].get("reused", False)))
    out["teacher_steps"] = p.get("teacher_steps", 0 if teacher_reused else results["teacher"].get("steps", 0))
    out["teacher_reused"] = teacher_reused
    out["raw_reused"] = bool(s.get("raw_reused", False))
    # the trial's own training: its distilled student, and its raw one when not reused
    out["train_seconds"] = (s.get("train_seconds_distill") or 0.0) + (
        0.0 if out["raw_reused"] else (s.get("train_seconds_raw") or 0.0))
    return out


def _run_unit(config: dict[str, Any], units: list[dict[str, Any]]) -> None:
    """A Tune trial: one run of one or more packed sweep trials (students of one group)."""
    from ray import tune

    from recdistill.config import config_from_dict
    from recdistill.experiment import run_experiment

    u = config["unit"]
    results = run_experiment(config_from_dict(units[u]["cfg"]), log=lambda m: print(f"[unit {u}] {m}", flush=True))
    tune.report({"unit": u, "trials": json.dumps([trial_metrics(results, j) for j in range(len(units[u]["trials"]))],
                                                 default=float)})


def _packable(space: SearchSpace, base: ExperimentConfig) -> bool:
    return len(base.students) == 1 and all(p.startswith("students.0.") for p in space.paths)


def _unit_config(cfgs: list[ExperimentConfig], trials: list[int], out: Path, name: str) -> ExperimentConfig:
    """Trials that differ only in their student, as the students of one run (one pass
    over the distill stream); seed_name keeps each one's seeds, so it trains exactly as it would alone."""
    if len(trials) == 1:
        return cfgs[trials[0]]
    first = cfgs[trials[0]]
    students = [dataclasses.replace(cfgs[i].students[0], name=f"t{i:03d}",
                                    seed_name=seed_name(cfgs[i], 0)) for i in trials]
    return dataclasses.replace(first, students=students, run=dataclasses.replace(
        first.run, dir=str(out / "packs" / f"{trials[0]:03d}"), name=f"{name}-pack{trials[0]:03d}"))


def run_sweep(base: str | Path | None, overrides: list[str], space: SearchSpace, out: Path, *,
              num_samples: int | None = None, max_concurrent: int | None = None,
              pack: int = 1, log: Callable[[str], None] = print) -> dict[str, Any]:
    import ray
    from ray import tune

    from recdistill.experiment import run_experiment
    from recdistill.ray_env import ensure_ray
    from recdistill.run_dir import claim_dir
    from recdistill.train.keys import raw_student_key
    from recdistill.signals.store import SignalStore
    from recdistill.report.sweep import write_sweep_report

    t0 = time.perf_counter()
    out = out.resolve()
    base_cfg = trial_config(base, overrides, {})
    # A sweep directory is refused like a run directory: a re-run says run.overwrite=true
    # (--overwrite) or gets another --out; stored teachers are reused either way (they
    # live in the signal store, not here).
    claim_dir(out, base_cfg.run.overwrite, "sweep")
    # Tune runs each trial in its own working directory: relative paths would give every
    # trial its own log and signal store (and its own teacher). Pin them down here.
    shared: dict[str, Any] = {}
    if base_cfg.data.path and "://" not in base_cfg.data.path:
        shared["data.path"] = str(Path(base_cfg.data.path).resolve())
    elif not base_cfg.data.path and base_cfg.data.source == "synthetic":
        shared["data.path"] = str(out / "data")
    for key in ("valid_path", "test_path"):
        value = getattr(base_cfg.data, key)
        if value and "://" not in value:
            shared[f"data.{key}"] = str(Path(value).resolve())
    if "://" not in base_cfg.platform.signal_store:
        shared["platform.signal_store"] = str(Path(base_cfg.platform.signal_store).resolve())
    overrides = [*overrides, *(f"{k}={v}" for k, v in shared.items())]
    base_cfg = trial_config(base, overrides, {})
    values = trial_overrides(space, num_samples, seed=base_cfg.run.seed)
    ensure_ray()
    cpus, gpus = ray.cluster_resources().get("CPU", 0), ray.cluster_resources().get("GPU", 0)
    concurrent = max_concurrent or base_cfg.tune.max_concurrent_trials
    # each trial's Train workers share what is left after one CPU for Ray Data
    share = max(0.05, min(base_cfg.platform.cpus_per_worker, (cpus - 1) / (2 * concurrent))) if not gpus \
        else base_cfg.platform.cpus_per_worker
    name = base_cfg.run.name
    # every run of the sweep logs to one W&B group, live; the sweep adds a summary run to it
    group = base_cfg.tracking.group or f"{name}-{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    cfgs = [trial_config(base, overrides, {**v, "run.dir": str(out / "trials" / f"{i:03d}"), "tracking.group": group,
                                           "run.name": f"{name}-{space.name}-{i:03d}",
                                           "platform.cpus_per_worker": round(share, 3)})
            for i, v in enumerate(values)]
    keys = [teacher_key_of(c) for c in cfgs]
    if pack > 1 and not _packable(space, base_cfg):
        log(f"[sweep] --pack {pack} ignored: the space changes more than students.0 (or the base has several "
            f"students), so trials cannot share one run")
        pack = 1
    store = SignalStore(base_cfg.platform.signal_store)
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    # units: what one run trains, per teacher group: one trial, or a pack of trials
    units: list[list[int]] = []
    for members in groups.values():
        units += [members[j:j + pack] for j in range(0, len(members), pack)]
    log(f"[sweep] {space.name}: {len(cfgs)} trials over {len(groups)} distinct teacher(s) in {len(units)} run(s); "
        f"Tune runs {concurrent} at a time, Train workers {share:.2f} CPU each")

    results: dict[int, dict[str, Any]] = {}
    unit_cfgs = [_unit_config(cfgs, u, out, name) for u in units]
    trained, reused = [], []
    done: set[int] = set()
    for key in groups:
        u = next(j for j, unit in enumerate(units) if keys[unit[0]] == key)
        stored = store.teacher_info(key) is not None and base_cfg.platform.reuse_signals
        log(f"[sweep] teacher {key}: {'stored, reused by' if stored else 'training it with'} run {u} "
            f"(trials {units[u]}); the other runs of this teacher read its signals")
        r = run_experiment(unit_cfgs[u], log=lambda m, u=u: log(f"[unit {u}] {m}"))
        for j, i in enumerate(units[u]):
            results[i] = trial_metrics(r, j)
        done.add(u)
        (trained if results[units[u][0]]["teacher_steps"] > 0 else reused).append(key)

    trainable = tune.with_resources(
        tune.with_parameters(_run_unit, units=[{"cfg": to_dict(c), "trials": u} for c, u in zip(unit_cfgs, units)]),
        {"cpu": 0.01})

    def tune_units(indices: list[int], stage: str) -> None:
        if not indices:
            return
        log(f"[sweep] Tune: {len(indices)} run(s) ({stage})")
        tuner = tune.Tuner(
            trainable, param_space={"unit": tune.grid_search(indices)},
            tune_config=tune.TuneConfig(max_concurrent_trials=concurrent),
            run_config=tune.RunConfig(name=f"{name}-{space.name}-{stage}", verbose=0,
                                      storage_path=str((out / "tune").resolve())))
        for res in tuner.fit():
            if res.error is not None:
                raise RuntimeError(f"sweep run {res.config.get('unit')} failed: {res.error}")
            u = int(res.metrics["unit"])
            for i, m in zip(units[u], json.loads(res.metrics["trials"])):
                results[i] = m

    rest = [u for u in range(len(units)) if u not in done]
    # Raw students (no teacher) are stored by their own key: the first run holding each
    # raw key trains it, in a first Tune stage, so that the other runs all read it.
    raw_first: dict[str, int] = {}
    if not base_cfg.stream.enabled:
        seen = {raw_student_key(cfgs[i], 0) for u in done for i in units[u]}
        for u in rest:
            for i in units[u]:
                k = raw_student_key(cfgs[i], 0)
                if k not in seen and store.raw_result(k) is None:
                    raw_first.setdefault(k, u)
    first_stage = sorted(set(raw_first.values()))
    tune_units(first_stage, "raw-students")
    tune_units([u for u in rest if u not in first_stage], "trials")

    trials = []
    for i, (c, v) in enumerate(zip(cfgs, values)):
        m = results[i]
        unit = next(u for u, members in enumerate(units) if i in members)
        trials.append({"trial": i, "config": v, "teacher_key": keys[i], "dir": str(unit_cfgs[unit].run.out_dir),
                       "run": unit, "student_index": units[unit].index(i), **{k: m.get(k) for k in (*TRIAL_METRICS, *EXTRA) if k in m}})
    wall = time.perf_counter() - t0
    summary = {"space": space.name, "hypothesis": space.doc, "tracking_group": group, "base_config": str(base), "overrides": overrides,
               "pack": pack, "runs": len(units), "teachers_trained": len(trained), "teachers_reused": len(reused),
               "teacher_steps": sum(t.get("teacher_steps", 0) or 0 for t in trials), "seconds": wall,
               # a packed run's wall time is shared by its trials
               "trial_seconds_sum": sum(results[u[0]].get("seconds", 0) or 0 for u in units),
               "trial_train_seconds_sum": sum(t.get("train_seconds", 0) or 0 for t in trials), "trials": trials}
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=str))
    write_sweep_report(out, summary, base_cfg, log)
    log(f"[sweep] {len(trials)} trials in {len(units)} run(s), teachers trained {len(trained)}, reused "
        f"{len(reused)}; {wall:.0f} s wall vs {summary['trial_seconds_sum']:.0f} s summed over the runs and "
        f"{summary['trial_train_seconds_sum']:.0f} s of student training; {out / 'results.json'}")
    return summary
