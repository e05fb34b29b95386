"""A sweep: trials resolved up front, grouped by teacher key, each distinct teacher
trained once, the rest of the trials run by Ray Tune reading the stored signals.

The first trial of each teacher group runs on the driver before Tune starts: it trains
that teacher (signals to the store) and its own students. Every other trial then finds
its teacher's signals complete in the store and runs 0 teacher steps. A teacher already
in the store needs no first run: all its trials go to Tune (a lone run stays on the driver). Tune runs each
trial as a driver function (``tune.with_resources(fn, {"cpu": 0.01})``) that builds its
own Ray Train student run, the Train V2 way; Train workers get at most an even share of
the CPUs left after one for Ray Data (a trial whose trainer cannot place its workers
would wait forever, see RAY_NOTES).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from recdistill.config import ConfigError, ExperimentConfig, to_dict
from recdistill.report.committee import COMMITTEE_METRICS
from recdistill.sweep.space import SearchSpace, trial_config, trial_overrides
from recdistill.train.plan import seed_name
from recdistill.train.worker import PLACEMENT_GROUP

STATE_FILE = "sweep_state.json"  # the trials and W&B group of a sweep, for --resume
STOPPED_FILE = "stopped.json"  # in a run directory: the scheduler stopped it (epoch, validation AUC)
ASHA_METRIC = "valid_auc_distill"  # what the students' loop reports each epoch (train/students_loop.py)
TRIAL_METRICS = ("auc", "auc_raw", "eta", "logloss", "calibration", "params", "latency_ms_b1", "latency_ms_b512",
                 "wandb_run_id")
EXTRA = ("stopped_early", "stopped_epoch", "valid_auc", "teacher_auc", "teacher_steps", "teacher_reused", "raw_reused", "seconds", "train_seconds", "stream_auc",
         "stream_eta", *COMMITTEE_METRICS)


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
    lat = (s.get("serving") or {}).get("measured") or []
    if lat:  # the serving cost axis of the sweep's front: measured on CPU (the first measurement)
        out["latency_ms_b1"] = lat[0]["batch"]["1"]["p50_ms"]
        out["latency_ms_b512"] = lat[0]["batch"]["512"]["p50_ms"]
    variants = {x["name"]: x for x in results["students"]}
    for v in ("average", "committee", "filtered"):
        got = variants.get(f"{s['name']}-{v}")
        if got is not None and got.get("committee"):
            out[f"eta_{v}"] = got["eta"]
            if v == "filtered":
                out["filtered_passes_saved"] = got["committee"]["expert_passes_saved"]
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
    cfg = config_from_dict(units[u]["cfg"])
    results = run_experiment(cfg, log=lambda m: print(f"[unit {u}] {m}", flush=True))
    tune.report({"unit": u, "trials": json.dumps([trial_metrics(results, j) for j in range(len(units[u]["trials"]))],
                                                 default=float),
                 # the scheduler's time axis and metric, as in the epoch reports before this one
                 "epoch": max(s.get("stopped_epoch_distill") or 0 for s in results["students"]),
                 **_final_valid(results)})


def _final_valid(results: dict[str, Any]) -> dict[str, float]:
    """The mean last validation AUC of the run's distilled students (what ASHA ranked on)."""
    last = [s["valid_curve_distill"][-1]["auc"] for s in results["students"] if s.get("valid_curve_distill")]
    return {ASHA_METRIC: sum(last) / len(last)} if last else {}


def _scheduler(base: ExperimentConfig, pack: int) -> Any:
    """A fresh Tune scheduler for one Tune stage (``tune.scheduler``); None: FIFO. ASHA ranks
    the runs of a stage against one another (the first run of each teacher, on the driver,
    is never stopped)."""
    t = base.tune
    if t.scheduler == "fifo":
        return None
    if base.stream.enabled:
        raise ConfigError("tune.scheduler=asha: online sweeps report per window, not per epoch; use fifo")
    if pack > 1:
        raise ConfigError(f"tune.scheduler=asha with --pack {pack}: ASHA stops a whole run, and a packed run trains "
                          f"several trials; drop --pack")
    if base.data.splits[1] <= 0 and not base.data.valid_path:
        raise ConfigError("tune.scheduler=asha ranks trials by validation AUC: the log needs a valid split "
                          f"(data.splits={base.data.splits})")
    from ray.tune.schedulers import ASHAScheduler

    # max_t past the last epoch: ASHA stops a trial that reaches max_t, which would cut a
    # finished run off before it reports its test scores
    epochs = max((s.epochs for s in base.students if isinstance(s.epochs, int)), default=100)
    return ASHAScheduler(time_attr="epoch", metric=ASHA_METRIC, mode="max", max_t=epochs + 1,
                         grace_period=t.grace_period, reduction_factor=t.reduction_factor)


def _dry_run(cfgs: list[ExperimentConfig], values: list[dict[str, Any]], keys: list[str], units: list[list[int]],
             unit_cfgs: list[ExperimentConfig], store: Any, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """The trials a sweep would run, their teacher keys and what the store and the sweep
    directory already hold; nothing is trained or written."""
    from recdistill.train.keys import raw_student_key

    rows = []
    for u, members in enumerate(units):
        done = (unit_cfgs[u].run.out_dir / "results.json").exists()
        for i in members:
            raw = None if cfgs[i].stream.enabled else store.raw_result(raw_student_key(cfgs[i], 0)) is not None
            rows.append({"trial": i, "config": values[i], "teacher_key": keys[i], "run": u,
                         "teacher_stored": store.teacher_info(keys[i]) is not None, "raw_stored": raw,
                         "finished": done})
    log(f"[sweep] dry run: {len(rows)} trial(s) in {len(units)} run(s), {len(set(keys))} teacher(s); nothing runs")
    log(f"{'trial':>5}  {'run':>3}  {'teacher key':24}  {'teacher':8}  {'raw':8}  {'finished':8}  config")
    yes = {True: "stored", False: "-", None: "n/a"}
    for r in rows:
        log(f"{r['trial']:>5}  {r['run']:>3}  {r['teacher_key']:24}  {yes[r['teacher_stored']]:8}  "
            f"{yes[r['raw_stored']]:8}  {'yes' if r['finished'] else '-':8}  "
            + ", ".join(f"{k}={v}" for k, v in r["config"].items()))
    return {"dry_run": True, "out": str(out), "trials": rows}


def _release(placement_group: str | None) -> None:
    """Remove the worker group placement group of a run the scheduler stopped. Tune kills the
    trial, and with it the run's Train controller, which dies before it can free its workers'
    CPUs; Train's cleaner would free them, but it needs the State API (a dashboard). Left
    alone, the CPUs stay reserved until the driver exits, and the next Train run waits."""
    if not placement_group:
        return
    import ray
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup

    try:
        ray.util.remove_placement_group(PlacementGroup(PlacementGroupID.from_hex(placement_group)))
    except Exception:  # already removed (Train's cleaner got there first)
        pass


def _epochs_of(cfg: ExperimentConfig) -> int:
    """The epochs a trial's student was set to train (0 when left to the data to size)."""
    e = cfg.students[0].epochs
    return e if isinstance(e, int) else 0


def _packable(space: SearchSpace, base: ExperimentConfig) -> bool:
    """Whether the trials of one teacher group differ in their student only: the space
    changes students.0 and, at most, teacher keys the grouping already separates (every
    teacher field is in its key but the history cut, which moves the students' window)."""
    def per_group(p: str) -> bool:
        return p.startswith("students.0.") or (p.startswith("teacher.") and p != "teacher.history_fraction")

    return len(base.students) == 1 and all(per_group(p) for p in space.paths)


def parse_keep(keep: str) -> int | None:
    """``--keep``: "all" (None) or "best:K" (K ≥ 0)."""
    if keep == "all":
        return None
    head, _, k = keep.partition(":")
    if head != "best" or not k.isdigit():
        raise ConfigError(f"--keep {keep!r}: expected 'all' or 'best:K' (K a whole number, e.g. best:3)")
    return int(k)


def keep_models(trials: list[dict[str, Any]], run_dirs: list[Path], students: list[list[str]], keep: str,
                log: Callable[[str], None]) -> int:
    """Point each trial at its student's model artifacts (``<run dir>/models/<student>/``)
    and, with ``best:K``, delete those of every trial but the K best by distilled test AUC
    (a run's teacher artifact goes when none of its trials is kept). Returns the trials
    whose models are kept."""
    k = parse_keep(keep)
    ranked = sorted((t for t in trials if isinstance(t.get("auc"), (int, float)) and t["auc"] == t["auc"]),
                    key=lambda t: -t["auc"])
    best = {t["trial"] for t in ranked[:k]} if k is not None else {t["trial"] for t in trials}
    kept_runs: set[int] = set()
    for t in trials:
        d = run_dirs[t["run"]] / "models" / students[t["run"]][t["student_index"]]
        if t["trial"] in best and d.is_dir():
            t["models"] = str(d)
            kept_runs.add(t["run"])
        elif d.is_dir():
            shutil.rmtree(d)
    if k is not None:
        for u, d in enumerate(run_dirs):
            if u not in kept_runs and (d / "models").is_dir():
                shutil.rmtree(d / "models")
        log(f"[sweep] --keep {keep}: the models of {len(best)} trial(s) kept "
            f"({', '.join(str(i) for i in sorted(best))}), the others' deleted")
    return sum(1 for t in trials if t.get("models"))


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
              pack: int = 1, dry_run: bool = False, resume: bool = False, keep: str = "all",
              log: Callable[[str], None] = print) -> dict[str, Any]:
    import ray
    from ray import tune

    from recdistill.experiment import run_experiment
    from recdistill.ray_env import ensure_ray
    from recdistill.run_dir import claim_dir
    from recdistill.sweep.orphans import ReleaseOrphans, release_orphans
    from recdistill.train.keys import raw_student_key
    from recdistill.signals.store import SignalStore
    from recdistill.report.sweep import write_sweep_report

    t0 = time.perf_counter()
    out = out.resolve()
    parse_keep(keep)  # a bad --keep fails before any training
    base_cfg = trial_config(base, overrides, {})
    # A sweep directory is refused like a run directory: a re-run says run.overwrite=true
    # (--overwrite) or gets another --out; stored teachers are reused either way (they
    # live in the signal store, not here).
    state_path = out / STATE_FILE
    if resume:
        if not state_path.exists():
            raise ConfigError(f"--resume: {out} holds no interrupted sweep ({STATE_FILE} is missing); run it "
                              f"without --resume")
    elif not dry_run:
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
    state = json.loads(state_path.read_text()) if resume else None
    if state is not None and json.loads(json.dumps(values, default=str)) != state["trials"]:
        raise ConfigError(f"--resume: the trials of {out} were {len(state['trials'])} others (the space, samples or "
                          f"overrides changed since it started); resume with the same command or start a new sweep")
    if not dry_run:
        from recdistill.engine.trainer import check_device

        ensure_ray()
        check_device(base_cfg)  # before any trial claims its directory
    cpus, gpus = (ray.cluster_resources().get("CPU", 0), ray.cluster_resources().get("GPU", 0)) if not dry_run \
        else (1 + 2 * (max_concurrent or base_cfg.tune.max_concurrent_trials), 0)
    concurrent = max_concurrent or base_cfg.tune.max_concurrent_trials
    # each trial's Train workers share what is left after one CPU for Ray Data
    share = max(0.05, min(base_cfg.platform.cpus_per_worker, (cpus - 1) / (2 * concurrent))) if not gpus \
        else base_cfg.platform.cpus_per_worker
    name = base_cfg.run.name
    # every run of the sweep logs to one W&B group, live; the sweep adds a summary run to it
    group = state["group"] if state else base_cfg.tracking.group or f"{name}-{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    cfgs = [trial_config(base, overrides, {**v, "run.dir": str(out / "trials" / f"{i:03d}"), "tracking.group": group,
                                           "run.name": f"{name}-{space.name}-{i:03d}",
                                           "platform.cpus_per_worker": round(share, 3)})
            for i, v in enumerate(values)]
    from recdistill.engine.prepare import resolved_like_a_run

    # the keys a run stores its teacher and raw students under are those of its config with
    # the auto keys resolved: resolved here as the runs will (the statistics pass, if the log
    # was never measured, is the first run's, kept in the store); a dry run reads nothing
    as_run = [resolved_like_a_run(c, read=not dry_run) or c for c in cfgs]
    keys = [teacher_key_of(c) for c in as_run]
    if pack > 1 and not _packable(space, base_cfg):
        log(f"[sweep] --pack {pack} ignored: the space changes more than students.0 (or the base has several "
            f"students), so trials cannot share one run")
        pack = 1
    _scheduler(base_cfg, pack)  # a scheduler the sweep cannot use fails here, before any training
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
    if dry_run:
        return _dry_run(as_run, values, keys, units, unit_cfgs, store, out, log)
    if state is None:
        state_path.write_text(json.dumps({"group": group, "trials": values}, indent=1, default=str))

    def finished(u: int) -> dict[str, Any] | None:
        """A resumed sweep's run that ended before the interruption (its results), or that the
        scheduler stopped (its stop record)."""
        d = unit_cfgs[u].run.out_dir
        for name in ("results.json", STOPPED_FILE):
            if resume and (d / name).exists():
                return json.loads((d / name).read_text())
        return None

    if resume:  # a run cut off midway starts again in its own directory
        unit_cfgs = [c if finished(u) else dataclasses.replace(c, run=dataclasses.replace(c.run, overwrite=True))
                     for u, c in enumerate(unit_cfgs)]
        kept = [u for u in range(len(units)) if finished(u)]
        for u in kept:
            r = finished(u)
            for j, i in enumerate(units[u]):
                results[i] = dict(r) if r.get("stopped_early") else trial_metrics(r, j)
        log(f"[sweep] --resume: {len(kept)} of {len(units)} run(s) had finished (or were stopped) and are kept")
    trained, reused = [], []
    done: set[int] = set()
    for key in groups:
        u = next(j for j, unit in enumerate(units) if keys[unit[0]] == key)
        stored = store.teacher_info(key) is not None and base_cfg.platform.reuse_signals
        runs_of_key = sum(keys[unit[0]] == key for unit in units)
        if stored and runs_of_key > 1:
            # nothing to train first: every run of this teacher goes to Tune, concurrently and
            # under the scheduler (a run on the driver would wait alone and never be stopped)
            log(f"[sweep] teacher {key}: stored; its {runs_of_key} runs read its signals under Tune")
            reused.append(key)
            continue
        log(f"[sweep] teacher {key}: {'stored, reused by' if stored else 'training it with'} run {u} "
            f"(trials {units[u]}); the other runs of this teacher read its signals")
        r = finished(u) or run_experiment(unit_cfgs[u], log=lambda m, u=u: log(f"[unit {u}] {m}"))
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
        orphans = ReleaseOrphans()
        tuner = tune.Tuner(
            trainable, param_space={"unit": tune.grid_search(indices)},
            tune_config=tune.TuneConfig(max_concurrent_trials=concurrent, scheduler=_scheduler(base_cfg, pack)),
            run_config=tune.RunConfig(name=f"{name}-{space.name}-{stage}", verbose=0,
                                      storage_path=str((out / "tune").resolve()), callbacks=[orphans]))
        grid = tuner.fit()
        orphans.released += release_orphans()  # the last stopped trial's controller may have died since
        if orphans.released:
            log(f"[sweep] released {orphans.released} placement group(s) of stopped runs")
        for res in grid:
            if res.error is not None:
                raise RuntimeError(f"sweep run {res.config.get('unit')} failed: {res.error}")
            u = int(res.config["unit"])
            if "trials" not in res.metrics:  # the scheduler stopped it after an epoch: no test scores
                _release(res.metrics.get(PLACEMENT_GROUP))
                stop = {"stopped_early": True, "stopped_epoch": res.metrics.get("epoch"),
                        "valid_auc": res.metrics.get(ASHA_METRIC), "teacher_steps": 0}
                (unit_cfgs[u].run.out_dir / STOPPED_FILE).write_text(json.dumps(stop))
                for i in units[u]:
                    results[i] = dict(stop)
                log(f"[sweep] run {u} (trials {units[u]}) stopped by {base_cfg.tune.scheduler} after epoch "
                    f"{res.metrics.get('epoch')} (validation AUC {res.metrics.get(ASHA_METRIC, float('nan')):.4f})")
                continue
            for i, m in zip(units[u], json.loads(res.metrics["trials"])):
                results[i] = m

    rest = [u for u in range(len(units)) if u not in done and u not in {v for v in range(len(units)) if finished(v)}]
    # Raw students (no teacher) are stored by their own key: the first run holding each
    # raw key trains it, in a first Tune stage, so that the other runs all read it.
    raw_first: dict[str, int] = {}
    if not base_cfg.stream.enabled:
        seen = {raw_student_key(as_run[i], 0) for u in done for i in units[u]}
        for u in rest:
            for i in units[u]:
                k = raw_student_key(as_run[i], 0)
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
    kept_models = keep_models(trials, [c.run.out_dir for c in unit_cfgs],
                              [[unit_cfgs[u].students[j].name for j in range(len(m))] for u, m in enumerate(units)],
                              keep, log)
    wall = time.perf_counter() - t0
    stopped = [t for t in trials if t.get("stopped_early")]
    summary = {"scheduler": base_cfg.tune.scheduler,
               "stopped_early": {"trials": len(stopped), "epochs_run": sum(t["stopped_epoch"] or 0 for t in stopped),
                                 "epochs_saved": sum(_epochs_of(cfgs[t["trial"]]) - (t["stopped_epoch"] or 0)
                                                     for t in stopped)},
               "keep": keep, "models_kept": kept_models,
               "space": space.name, "hypothesis": space.doc, "tracking_group": group, "base_config": str(base), "overrides": overrides,
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
