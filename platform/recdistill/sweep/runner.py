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

import json
import time
from pathlib import Path
from typing import Any, Callable

from recdistill.config import ExperimentConfig, to_dict
from recdistill.sweep.space import SearchSpace, trial_config, trial_overrides

TRIAL_METRICS = ("auc", "auc_raw", "eta", "logloss", "calibration", "params")


def teacher_key_of(cfg: ExperimentConfig) -> str:
    from recdistill.signals.key import online_teacher_key, teacher_key

    return online_teacher_key(cfg) if cfg.stream.enabled else teacher_key(cfg)


def trial_metrics(results: dict[str, Any]) -> dict[str, Any]:
    """A trial's first student, flattened (sweep spaces address students.0)."""
    s = results["students"][0]
    out = {"auc": s["auc_distill"], "auc_raw": s["auc_raw"], "eta": s["eta"], "params": s["params"],
           "logloss": s.get("logloss_distill"), "calibration": s.get("calibration_distill"),
           "teacher_auc": results["teacher"]["auc"], "seconds": results["seconds"]}
    if "stream_auc_distill" in s:
        out.update({"stream_auc": s["stream_auc_distill"], "stream_eta": s["stream_eta"]})
    p = results.get("platform", {})
    out["teacher_steps"] = p.get("teacher_steps", results["teacher"].get("steps", 0)
                                 if not results["teacher"].get("reused") else 0)
    out["teacher_reused"] = bool(p.get("teacher_reused", results["teacher"].get("reused", False)))
    out["raw_reused"] = bool(s.get("raw_reused", False))
    # the trial's own training: its distilled student, and its raw one when not reused
    out["train_seconds"] = (s.get("train_seconds_distill") or 0.0) + (
        0.0 if out["raw_reused"] else (s.get("train_seconds_raw") or 0.0))
    return out


def _run_trial(config: dict[str, Any], cfgs: list[dict[str, Any]]) -> None:
    from ray import tune

    from recdistill.config import config_from_dict
    from recdistill.experiment import run_experiment

    i = config["trial"]
    results = run_experiment(config_from_dict(cfgs[i]), log=lambda m: print(f"[trial {i}] {m}", flush=True))
    tune.report({"trial": i, **trial_metrics(results)})


def run_sweep(base: str | Path | None, overrides: list[str], space: SearchSpace, out: Path, *,
              num_samples: int | None = None, scheduler: str | None = None, max_concurrent: int | None = None,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    import ray
    from ray import tune

    from recdistill.experiment import run_experiment
    from recdistill.ray_env import ensure_ray
    from recdistill.signals.store import SignalStore
    from recdistill.sweep.report import write_sweep_report

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    base_cfg = trial_config(base, overrides, {})
    values = trial_overrides(space, num_samples, seed=base_cfg.run.seed)
    ensure_ray()
    cpus, gpus = ray.cluster_resources().get("CPU", 0), ray.cluster_resources().get("GPU", 0)
    concurrent = max_concurrent or base_cfg.tune.max_concurrent_trials
    # each trial's Train workers share what is left after one CPU for Ray Data
    share = max(0.05, min(base_cfg.platform.cpus_per_worker, (cpus - 1) / (2 * concurrent))) if not gpus \
        else base_cfg.platform.cpus_per_worker
    name = base_cfg.run.name
    cfgs = [trial_config(base, overrides, {**v, "run.dir": str(out / "trials" / f"{i:03d}"),
                                           "run.name": f"{name}-{space.name}-{i:03d}",
                                           "platform.cpus_per_worker": round(share, 3)})
            for i, v in enumerate(values)]
    keys = [teacher_key_of(c) for c in cfgs]
    store = SignalStore(base_cfg.platform.signal_store)
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    log(f"[sweep] {space.name}: {len(cfgs)} trials over {len(groups)} distinct teacher(s); Tune runs "
        f"{concurrent} at a time, Train workers {share:.2f} CPU each")

    results: dict[int, dict[str, Any]] = {}
    trained, reused = [], []
    for key, members in groups.items():
        first = members[0]
        stored = store.teacher_info(key) is not None and base_cfg.platform.reuse_signals
        log(f"[sweep] teacher {key}: {'stored, reused by' if stored else 'training it with'} trial {first}, "
            f"then {len(members) - 1} more trial(s) read its signals")
        r = run_experiment(cfgs[first], log=lambda m: log(f"[trial {first}] {m}"))
        results[first] = trial_metrics(r)
        (trained if results[first]["teacher_steps"] > 0 else reused).append(key)

    trainable = tune.with_resources(tune.with_parameters(_run_trial, cfgs=[to_dict(c) for c in cfgs]), {"cpu": 0.01})

    def tune_trials(indices: list[int], stage: str) -> None:
        if not indices:
            return
        sched = None
        if (scheduler or base_cfg.tune.scheduler) == "asha":
            from ray.tune.schedulers import ASHAScheduler

            # trials report once, at the end: ASHA ranks them but has nothing to stop early
            sched = ASHAScheduler(metric=base_cfg.tune.metric, mode="max", max_t=100, grace_period=1)
        log(f"[sweep] Tune: {len(indices)} trial(s) ({stage})")
        tuner = tune.Tuner(
            trainable, param_space={"trial": tune.grid_search(indices)},
            tune_config=tune.TuneConfig(max_concurrent_trials=concurrent, scheduler=sched),
            run_config=tune.RunConfig(name=f"{name}-{space.name}-{stage}", verbose=0,
                                      storage_path=str((out / "tune").resolve())))
        for res in tuner.fit():
            if res.error is not None:
                raise RuntimeError(f"sweep trial {res.config.get('trial')} failed: {res.error}")
            m = dict(res.metrics)
            results[int(m["trial"])] = m

    rest = [i for i in range(len(cfgs)) if i not in results]
    # Raw students (no teacher) are stored by their own key: the first trial of each raw
    # key trains it, in a first Tune stage, so that the other trials all read it.
    raw_first: dict[str, int] = {}
    if not base_cfg.stream.enabled:
        from recdistill.signals.key import raw_student_key

        seen = {raw_student_key(cfgs[i], 0) for i in results}
        for i in rest:
            k = raw_student_key(cfgs[i], 0)
            if k not in seen and store.raw_result(k) is None:
                raw_first.setdefault(k, i)
    tune_trials(sorted(raw_first.values()), "raw-students")
    tune_trials([i for i in rest if i not in raw_first.values()], "trials")
    trials = []
    for i, (c, v) in enumerate(zip(cfgs, values)):
        m = results[i]
        trials.append({"trial": i, "config": v, "teacher_key": keys[i], "dir": str(c.run.out_dir),
                       **{k: m.get(k) for k in (*TRIAL_METRICS, "teacher_auc", "teacher_steps", "teacher_reused",
                                                "raw_reused", "seconds", "train_seconds", "stream_auc", "stream_eta")
                                             if k in m}})
    summary = {"space": space.name, "hypothesis": space.doc, "base_config": str(base), "overrides": overrides,
               "teachers_trained": len(trained), "teachers_reused": len(reused),
               "teacher_steps": sum(t.get("teacher_steps", 0) or 0 for t in trials),
               "seconds": time.perf_counter() - t0,
               "trial_seconds_sum": sum(t.get("seconds", 0) or 0 for t in trials),
               "trial_train_seconds_sum": sum(t.get("train_seconds", 0) or 0 for t in trials), "trials": trials}
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=str))
    write_sweep_report(out, summary, base_cfg, log)
    log(f"[sweep] {len(trials)} trials, teachers trained {len(trained)}, reused {len(reused)}; "
        f"{summary['seconds']:.0f} s wall vs {summary['trial_seconds_sum']:.0f} s summed over trials; "
        f"{out / 'results.json'}")
    return summary
