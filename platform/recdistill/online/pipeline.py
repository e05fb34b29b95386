"""The online experiment on Ray: window spool → teacher and student group as two
concurrent Ray Train runs that meet only at the signal hub → per-window results.

``results.json`` holds, besides the batch-phase keys (``teacher.auc``, ``students[i]``
with ``auc_raw``, ``auc_distill``, ``eta``: scored on the first streaming window before
anyone learns from it, i.e. the batch phase's held-out result), ``windows[i]`` (window,
lag, teacher metrics, per student raw / distilled / label-only AUC and η) and
``shift[i]`` (window, JS divergences, fired) for every streaming window.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from recdistill.config import ConfigError, ExperimentConfig, to_dict
from recdistill.results import transferability


def run_online(cfg: ExperimentConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    import ray

    from recdistill.engine.prologue import driver_name, open_run
    from recdistill.engine.trainer import CHECKPOINT, final_weights, fit_metrics, test_hook_env
    from recdistill.online.spool import build_spool
    from recdistill.online.workers import online_students_loop, online_teacher_loop
    from recdistill.engine.live import LiveMetrics
    from recdistill.report.online import write_online_results
    from recdistill.run_dir import write_resolved_config
    from recdistill.signals.hub import completed, get_hub, hub_name
    from recdistill.signals.lease import reuse_or_lease
    from recdistill.signals.store import SignalStore, new_generation, signal_id
    from recdistill.sizing import resolve_for_stream
    from recdistill.train.keys import online_teacher_key

    if cfg.platform.teacher_workers != 1:
        raise ConfigError(f"platform.teacher_workers={cfg.platform.teacher_workers}: the streaming teacher runs on "
                          f"one worker (a window is what one update cycle sees); set platform.teacher_workers=1")
    opened = open_run(cfg)
    live = LiveMetrics(opened.trackers)  # each window's figures, to the trackers as the loops report them
    cpus = ray.cluster_resources().get("CPU", 0)
    if not ray.cluster_resources().get("GPU", 0) and 2 * cfg.platform.cpus_per_worker > cpus - 1 + 1e-9:
        # two Train workers plus Ray Data's read tasks: without a whole CPU left over Ray hangs
        raise ConfigError(f"platform.cpus_per_worker={cfg.platform.cpus_per_worker}: the teacher and the student "
                          f"group run at once and one CPU must stay free for Ray Data, but the cluster has "
                          f"{cpus:.0f} CPUs; use platform.cpus_per_worker={max(0.1, (cpus - 1) / 2):g} or less")
    cfg = resolve_for_stream(cfg, log)
    write_resolved_config(cfg)
    opened.trackers.update_config(to_dict(cfg))
    store = SignalStore(cfg.platform.signal_store)
    spool = build_spool(cfg, store.uri, log)
    key = online_teacher_key(cfg)
    experiment = driver_name(cfg)
    hub = get_hub(experiment, store.uri)
    base = {"cfg": to_dict(cfg), "spool": spool, "schema": spool.schema, "buckets": spool.buckets, "key": key,
            "store": store.uri, "hub": hub_name(experiment), "run_id": experiment}
    storage = opened.out / "ray_train"
    s = cfg.stream
    tau = "∞ (frozen)" if s.teacher_update_interval is None else s.teacher_update_interval

    def stored() -> dict[str, Any] | None:
        info = store.teacher_info(key) if cfg.platform.reuse_signals else None
        if info is None:
            return None
        whole = completed(hub, signal_id(key, info["generation"]), [(w, w) for w in range(s.batch_windows, s.windows)])
        return info if whole else None

    # One run trains a key at a time: another run's teacher of this key is waited for (its
    # signals are then read), not trained a second time.
    p = cfg.platform
    info, lease = reuse_or_lease(store, key, experiment, p.lease_ttl_s, p.lease_poll_s, stored, log, p.lease_wait_s)
    reused = info is not None
    generation = info["generation"] if reused else new_generation()
    base["key"] = signal_id(key, generation)
    runs = [("students", online_students_loop, f"online-students-{experiment}")]
    if reused:
        log(f"[teacher] reusing the stored online teacher {key} (signals of all {s.windows} windows): 0 teacher steps")
    else:
        runs.insert(0, ("teacher", online_teacher_loop, f"online-teacher-{key}-{experiment}"))
        log(f"[teacher] online teacher {key}: batch phase over windows 0–{s.batch_windows - 1}, then "
            f"{s.windows - s.batch_windows} streaming windows with τ = {tau}, replay {s.replay}")
    log(f"[students] {len(cfg.students)} student(s) × (raw, distilled"
        f"{', label-only after the batch phase' if s.label_only_baseline else ''}) follow window by window")

    # the trainers are built in tasks: they read the hooks from their own environment
    hooks = test_hook_env()
    remote = ray.remote(num_cpus=0)(fit_metrics).options(runtime_env={"env_vars": hooks} if hooks else None)
    try:
        metrics = dict(zip([r[0] for r in runs],
                           ray.get([remote.remote(fn, name, cfg, base, {}, storage, [live.callback("online")], len(runs))
                                    for _, fn, name in runs])))
        if reused:
            teacher = info
        else:
            m = metrics["teacher"]
            teacher = {"key": key, "generation": generation, "arch": cfg.teacher.arch, "config": to_dict(cfg.teacher),
                       "params": m["params"], "steps": m["steps"], "batch": m["batch"], "windows": m["windows"],
                       "resumed": m["resumed"]}
            weights = final_weights(m[CHECKPOINT], "teacher")
            if weights is not None:  # beside its signals: a run reusing them still writes its artifact
                store.put_file(weights, store.teacher_weights_path(key, generation))
            store.commit_teacher(key, teacher)
    finally:
        if lease is not None:
            lease.release()
    live.close()  # every report and failure is in: both runs have ended
    results = assemble(cfg, teacher, metrics["students"], reused)
    results["stream"]["failures"] = live.failures  # why a run resumed, when one did
    results["models"] = _write_models(cfg, spool, store, key, generation, metrics, results, log, experiment, reused)
    results["seconds"] = time.perf_counter() - opened.t_start
    results["tracking"] = opened.tracking_info()
    written = write_online_results(cfg, results, log)
    opened.finish(results, written)
    ray.kill(hub)
    return results


def _write_models(cfg: ExperimentConfig, spool: Any, store: Any, key: str, generation: str,
                  metrics: dict[str, Any], results: dict[str, Any], log: Callable[[str], None], run_id: str,
                  reused: bool) -> dict[str, Any]:
    """The models as the stream left them (after the last window): the online teacher and
    every student (raw, distilled, label-only), as artifacts with the spool's encoder; with
    ``stream.keep_models=every`` also each as it was after each streamed window, from the
    weights the workers handed over through the store (``models/windows/w<w>/<model>/``)."""
    from recdistill.artifacts.run_models import RunModels
    from recdistill.engine.trainer import CHECKPOINT, final_weights
    from recdistill.online.spool import spool_preprocessor
    from recdistill.train.plan import feature_spec, sequence_length

    pre = spool_preprocessor(spool, store)
    if pre is None:
        log("[models] no artifacts: the window spool was written before it kept its encoder; delete it "
            f"({spool.uri}) to rebuild it")
        return {"written": {}, "missing": {"*": "the window spool predates kept encoders"}}
    models = RunModels(cfg, pre, feature_spec(spool.schema, spool.buckets), sequence_length(cfg), key, log)
    last = results["windows"][-1]
    models.stored_teacher(store, generation, last["teacher"])
    ckpt = metrics["students"][CHECKPOINT]
    for i, s in enumerate(cfg.students):
        mine = last["students"][i]
        for kind, auc in (("raw", mine["auc_raw"]), ("distill", mine["auc"]),
                          ("label_only", mine.get("auc_label_only"))):
            name = f"{s.name}/{kind}"
            if auc is not None:
                models.student(i, kind, final_weights(ckpt, name), {"auc": auc, "window": last["window"]})
    if cfg.stream.keep_models == "every":
        _write_window_models(cfg, store, models, results["windows"], run_id, reused)
    return models.summary()


def _write_window_models(cfg: ExperimentConfig, store: Any, models: Any, windows: list[dict[str, Any]], run_id: str,
                         reused: bool) -> None:
    """One artifact per model per streamed window, as it was after learning that window. Its
    metrics are the next window's prequential scores (what it scored before learning on); the
    last window's model has none, it is the run's final one."""
    for k, win in enumerate(windows):
        w = win["window"]
        nxt = windows[k + 1] if k + 1 < len(windows) else None
        if not reused:
            with models.from_store(store, store.window_weights_path(run_id, w, "teacher")) as weights:
                metrics = {"window": w, **({"auc": nxt["teacher"]["auc"]} if nxt else {})}
                models.teacher(weights, metrics, "the teacher worker handed none over", window=w)
        for i, s in enumerate(cfg.students):
            for kind, score in (("raw", "auc_raw"), ("distill", "auc"), ("label_only", "auc_label_only")):
                if windows[-1]["students"][i].get(score) is None:
                    continue  # a kind this run did not train (label-only students are optional)
                auc = nxt["students"][i].get(score) if nxt else None
                with models.from_store(store, store.window_weights_path(run_id, w, f"{s.name}/{kind}")) as weights:
                    models.student(i, kind, weights, {"window": w, **({"auc": auc} if auc is not None else {})},
                                   "the student worker handed none over", window=w)
    store.remove_window_weights(run_id)


def assemble(cfg: ExperimentConfig, teacher: dict[str, Any], students: dict[str, Any],
             reused: bool) -> dict[str, Any]:
    """Per-window records of both runs joined by window, η per window and student."""
    t_win = {w["window"]: w for w in teacher["windows"]}
    windows, shift = [], []
    for sw in students["windows"]:
        w = sw["window"]
        tw = t_win[w]
        entry: dict[str, Any] = {
            "window": w, "lag": sw["lag_s"], "signals": sw["signals"], "signal_rows": sw["signal_rows"],
            "rows": sw["rows"], "replay": sw["replay"], "replay_signal_age": sw.get("replay_signal_age"), "seconds": {"teacher": tw.get("seconds"), "students": sw["seconds"]},
            "rss_mb": {"teacher": tw.get("rss_mb"), "students": sw.get("rss_mb")},
            "teacher": {k: tw[k] for k in ("auc", "logloss", "calibration", "steps") if k in tw},
            "students": []}
        if "oracle_auc" in tw:
            entry["oracle_auc"] = tw["oracle_auc"]
        if "representations_found" in sw:  # LoopFM online: rows whose user had a teacher representation
            entry["representations_found"] = sw["representations_found"]
        for st in cfg.students:
            mm = {kind: sw["members"].get(f"{st.name}/{kind}") for kind in ("raw", "distill", "label_only")}
            e = {"name": st.name, "auc": mm["distill"]["auc"], "auc_raw": mm["raw"]["auc"],
                 "logloss": mm["distill"]["logloss"], "calibration": mm["distill"]["calibration"],
                 "eta": transferability(tw["auc"], mm["raw"]["auc"], mm["distill"]["auc"])}
            if mm["label_only"]:
                e["auc_label_only"] = mm["label_only"]["auc"]
                e["eta_label_only"] = transferability(tw["auc"], mm["raw"]["auc"], mm["label_only"]["auc"])
            entry["students"].append(e)
        windows.append(entry)
        shift.append({"window": w, **tw["shift"]})
    first = windows[0]
    results: dict[str, Any] = {
        "engine": "ray-online",
        # the window's own step count gives way to the teacher's total
        "teacher": {**first["teacher"], "key": teacher["key"], "arch": teacher["arch"], "params": teacher["params"],
                    "steps": teacher["steps"], "reused": reused},
        "students": [], "windows": windows, "shift": shift,
        "stream": {"tau": cfg.stream.teacher_update_interval, "replay": cfg.stream.replay,
                   "batch_windows": cfg.stream.batch_windows, "windows": cfg.stream.windows,
                   "student_batch": students["batch"], "teacher_batch": teacher.get("batch"),
                   "student_resumed": students["resumed"], "teacher_resumed": teacher.get("resumed", 0)},
    }
    if "oracle_auc" in first:
        results["oracle"] = {"auc": first["oracle_auc"]}
    last = windows[-max(1, len(windows) // 3):]  # the last third: how much gain is kept late in the stream
    for j, st in enumerate(cfg.students):
        e0 = first["students"][j]
        entry = {"name": st.name, "arch": st.arch, "towers": st.towers,
                 "params": students["params"][f"{st.name}/distill"], "auc_raw": e0["auc_raw"],
                 "auc_distill": e0["auc"], "eta": e0["eta"]}
        trained = (students.get("rows") or {}).get(f"{st.name}/distill")
        if trained:  # rows over the run: the batch phase's epochs and the stream
            entry["rows_labelled"], entry["rows_unlabelled"] = trained["labelled"], trained["unlabelled"]
        for label, ws in (("stream", windows), ("last", last)):
            sel = [w["students"][j] for w in ws]
            entry[f"{label}_auc_raw"] = float(np.mean([x["auc_raw"] for x in sel]))
            entry[f"{label}_auc_distill"] = float(np.mean([x["auc"] for x in sel]))
            entry[f"{label}_teacher_auc"] = float(np.mean([w["teacher"]["auc"] for w in ws]))
            entry[f"{label}_eta"] = transferability(entry[f"{label}_teacher_auc"], entry[f"{label}_auc_raw"],
                                                    entry[f"{label}_auc_distill"])
            if "auc_label_only" in sel[0]:
                entry[f"{label}_auc_label_only"] = float(np.mean([x["auc_label_only"] for x in sel]))
                entry[f"{label}_eta_label_only"] = transferability(
                    entry[f"{label}_teacher_auc"], entry[f"{label}_auc_raw"], entry[f"{label}_auc_label_only"])
        results["students"].append(entry)
    return results
