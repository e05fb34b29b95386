"""A batch run's student groups on Ray and the results they make: each group a one-worker
Ray Train run of ``train.students_loop`` (every student of the group raw and distilled in
one pass per epoch), each run (``Side``: a seed's run up to its students) written from the
groups' final reports (``engine.on_ray``; ``engine.packed_seeds``; ``engine.follow``).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from recdistill.artifacts.serving_cost import measure_run_students
from recdistill.artifacts.run_models import PREDATES, RunModels, model_name
from recdistill.config import ExperimentConfig
from recdistill.data.in_order import materialize_in_order
from recdistill.engine.live import SeedsLive
from recdistill.engine.ray_run import RayRun, eval_datasets
from recdistill.engine.cold import COLD, count_window_users, mark_cold
from recdistill.engine.stream import with_representations
from recdistill.engine.trainer import CHECKPOINT, final_weights, fit_metrics
from recdistill.report.experiment import write_results
from recdistill.results import KINDS, Scored, StudentResult, Training, leakage_gap, transferability
from recdistill.train.follow import FOLLOW
from recdistill.summary import summarize
from recdistill.train.committee import PASSES
from recdistill.train.keys import raw_student_key
from recdistill.train.plan import (PACKED_SEEDS, early_fields, feature_spec, reads_representations,
                                   representation_baseline, seed_prefix, sequence_length)
from recdistill.train.students_loop import COLD_TEACHER, EXPERT_WEIGHTS, TEACHER, students_loop


@dataclass
class Side:
    """One seed's run up to its students: its run (directory, trackers, teacher key), its
    teacher, its committee's experts, and which raw students it trains or reuses."""

    run: RayRun
    info: dict[str, Any]  # the teacher's stored record
    teacher_steps: int
    reused: bool
    timings: dict[str, float]
    committee: dict[str, Any] | None
    cov: dict[str, Any] = field(default_factory=dict)  # its teacher's signal coverage of the stream
    raw_keys: dict[int, str] = field(default_factory=dict)
    cached: dict[int, Any] = field(default_factory=dict)  # raw results found in the store
    first_with: dict[str, int] = field(default_factory=dict)
    skip_raw: list[int] = field(default_factory=list)

    @property
    def cfg(self) -> ExperimentConfig:
        return self.run.cfg

    def plan_raw(self) -> None:
        """Which raw students train here: none whose result is stored (another α, another
        teacher), and one per raw key (students that differ only in α share one)."""
        cfg, n = self.cfg, len(self.cfg.students)
        self.raw_keys = {i: raw_student_key(cfg, i) for i in range(n)}
        # (not with run.cold_users: a stored raw result has no figures on the cold users' rows)
        self.cached = ({i: self.run.store.raw_result(k) for i, k in self.raw_keys.items()}
                       if cfg.platform.reuse_signals and not cfg.run.cold_users else {})
        for i, k in self.raw_keys.items():
            self.first_with.setdefault(k, i)
        self.skip_raw = sorted(i for i in range(n) if self.cached.get(i) or self.first_with[self.raw_keys[i]] != i)


def student_groups(cfg: ExperimentConfig) -> list[list[int]]:
    """The students' indices, ``platform.students_per_group`` per group (0: one group)."""
    n = len(cfg.students)
    size = cfg.platform.students_per_group or n
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


class GroupRuns:
    """A run's student groups (``platform.students_per_group``), each a one-worker Train run
    of ``train.students_loop`` over ``stream``, and each side's results once they end.
    ``follow`` (``train.follow``): ``stream`` is the students' window unjoined, and each
    group joins it behind the teacher still training."""

    def __init__(self, sides: list[Side], stream: Any, log: Callable[[str], None],
                 rep: dict[str, Any] | None = None, follow: dict[str, Any] | None = None,
                 loop_extra: dict[str, Any] | None = None) -> None:
        self.sides, self.log = sides, log
        lead = sides[0]
        cfg, run = lead.cfg, lead.run
        packed = len(sides) > 1
        n = len(cfg.students)
        groups = student_groups(cfg)
        self.t0 = time.perf_counter()
        # members re-batch their own rows, so the stream's batch changes no result, only how
        # many steps a member takes in a row before the next member's weights evict its own
        stream_batch = max(min(s.batch_size for s in cfg.students), cfg.platform.stream_batch_rows)
        cold = cold_users(cfg, run, stream, lead.info, log)
        mark = cold.pop("mark", None)
        self.cold = cold
        self.datasets = datasets = {"train": stream}
        held_out_rep = rep if reads_representations(cfg) else None  # a committee's teacher states serve training only
        for name, ds in eval_datasets(run).items():  # joined and marked in one pass, materialised once
            if held_out_rep:
                ds = with_representations(ds, run, held_out_rep)
            if mark and name == "test":
                ds = ds.map_batches(mark_cold, batch_format="pyarrow", fn_kwargs=mark)
            datasets[name] = materialize_in_order(ds) if held_out_rep or (mark and name == "test") else ds
        committee = lead.committee
        expert_weights = {EXPERT_WEIGHTS: committee[EXPERT_WEIGHTS]} if committee else {}
        seeds = ({PACKED_SEEDS: [{"seed": s.cfg.run.seed, "skip_raw": s.skip_raw} for s in sides]}
                 if packed else {})
        self.configs = [{**run.base, "students": g, "stream_batch": stream_batch, "skip_raw": lead.skip_raw, **cold,
                         **seeds, **({FOLLOW: follow} if follow else {}), **(loop_extra or {}),
                         **(expert_weights if any(cfg.students[i].distill_from != "teacher" for i in g) else {})}
                        for g in groups]
        self.names = [f"students-{j}-{run.experiment}" for j in range(len(groups))]
        log(f"[students] {n} student(s) × (raw, distilled) in {len(groups)} group(s)"
            + (", following the teacher as it publishes its signals" if follow else "")
            + (f", each with the students of {len(sides)} seeds ({', '.join(str(s.cfg.run.seed) for s in sides)})"
               if packed else "")
            + "".join(f"; raw result of student(s) {s.skip_raw} reused from the store"
                      + (f" (seed {s.cfg.run.seed})" if packed else "") for s in sides if s.skip_raw))
        self.live = SeedsLive({seed_prefix(s.cfg.run.seed): s.run.opened.trackers for s in sides}) if packed else None
        self.callbacks = [self.live.callback("student")] if self.live is not None else run.callbacks("student")

    def _args(self, j: int) -> tuple[Any, ...]:
        lead = self.sides[0]
        return (students_loop, self.names[j], lead.cfg, self.configs[j], self.datasets, lead.run.storage,
                self.callbacks)

    def fit(self) -> list[dict[str, Any]]:
        """Every group to its end: one in this process, several as concurrent Ray tasks."""
        import ray

        try:
            if len(self.names) == 1:
                return [fit_metrics(*self._args(0))]
            return ray.get(self.launch())
        finally:
            self.close()

    def launch(self) -> list[Any]:
        """Every group started as a Ray task (its Train run's driver); their object refs."""
        import ray

        remote = ray.remote(num_cpus=0)(fit_metrics)
        return [remote.remote(*self._args(j)) for j in range(len(self.names))]

    def close(self) -> None:
        if self.live is not None:
            self.live.close()

    def written(self, outs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each side's results from the groups' final reports."""
        sides = self.sides
        packed = len(sides) > 1
        students_s = time.perf_counter() - self.t0
        written = []
        for s in sides:
            s.timings["students_s"] = students_s
            written.append(_side_results(s, outs, len(self.names), dict(self.cold), self.log,
                                         [x.cfg.run.seed for x in sides] if packed else None,
                                         self.live.failures if self.live is not None else []))
        # a finished run's student checkpoints served only to resume it, and its models are
        # artifacts now: each group's checkpoints hold every model with its optimizer state (a
        # 3-seed sweep of 12 packed students left 6 GB per seed). The teacher's stay: the
        # transfer stage reads its checkpoint.
        for nm in self.names:
            shutil.rmtree(sides[0].run.storage / nm, ignore_errors=True)
        return written


def _side_results(side: Side, outs: list[dict[str, Any]], n_groups: int, cold: dict[str, Any],
                  log: Callable[[str], None], packed_seeds: list[int] | None = None,
                  group_failures: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """One side's results from the student groups' reports (``packed_seeds``: the seeds whose
    students shared them, each member then named ``seed-<s>/<student>/<kind>``): its models
    as artifacts, its raw students stored for reuse, its results.json and report, its
    trackers finished."""
    cfg, run, info = side.cfg, side.run, side.info
    prefix = seed_prefix(cfg.run.seed) if packed_seeds else ""
    store, key, timings = run.store, run.key, side.timings
    prepared = run.prepared
    members = {k[len(prefix):]: v for o in outs for k, v in o["members"].items() if k.startswith(prefix)}
    checkpoints = {k[len(prefix):]: o[CHECKPOINT] for o in outs for k in o["members"] if k.startswith(prefix)}

    def weights_of(name: str) -> Any:
        return final_weights(checkpoints[name], prefix + name)

    skip_raw, cached, raw_keys, first_with = side.skip_raw, side.cached, side.raw_keys, side.first_with
    committee = {k: v for k, v in (side.committee or {}).items() if k != EXPERT_WEIGHTS}
    models = RunModels(cfg, prepared.preprocessor, feature_spec(prepared.schema, prepared.preprocessor.buckets),
                       sequence_length(cfg), key, log)
    models.stored_teacher(store, info["generation"], info.get("final") or info)  # the weights as trained last
    for i, s in enumerate(cfg.students):
        raw, dist = model_name(s.name, "raw"), model_name(s.name, "distill")
        models.student(i, "distill", weights_of(dist), members[dist])
        if cached.get(i):
            members[raw] = cached[i]
            with models.from_store(store, store.raw_weights_path(raw_keys[i])) as w:
                models.student(i, "raw", w, members[raw], PREDATES)
            continue
        trained = model_name(cfg.students[first_with[raw_keys[i]]].name, "raw") if i in skip_raw else raw
        members[raw] = members[trained]
        weights = weights_of(trained)
        if i not in skip_raw:
            if weights is not None:  # before its result: a run that finds the result finds the weights
                store.put_file(weights, store.raw_weights_path(raw_keys[i]))
            store.write_raw_result(raw_keys[i], members[raw])
        models.student(i, "raw", weights, members[raw])

    cov = side.cov
    results: dict[str, Any] = {
        "engine": "ray",
        "teacher": {**{k: v for k, v in info.items() if k not in ("config", "oracle")},
                    # the cut signal_auc_history/window were measured at (a reused teacher's may differ)
                    "signal_auc_history_fraction": info.get("config", {}).get("history_fraction"),
                    "signals": info.get("signals", "forward"), "leakage_gap": leakage_gap(info)},
        "students": [],
        "platform": {"teacher_key": key, "signal_id": run.signal_id, "teacher_reused": side.reused,
                     "teacher_steps": side.teacher_steps, "signal_store": store.uri, "stream_rows": cov["rows"],
                     "stream_rows_with_signal": cov["with_signal"],
                     **({"stream_rows_late": cov["late"], "students_followed_teacher": True} if "late" in cov else {}),
                     **({"representations": cov["representations"]} if "representations" in cov else {}),
                     # packed: the seeds whose students shared the pass (its timings below are the pass's)
                     "student_groups": n_groups, **({"packed_seeds": packed_seeds} if packed_seeds else {}),
                     # the Ray nodes the groups' workers ran on (a cluster spreads them)
                     "student_nodes": len({o.get("node") for o in outs}),
                     "student_resumed": sum(o["resumed"] for o in outs), "raw_reused": len(skip_raw),
                     # why a Train run resumed, where one did: its own runs' and (packed seeds) the
                     # shared student groups'
                     "failures": [*run.settle(), *group_failures],
                     "student_worker_s": {k: sum(o[k] for o in outs)
                                          for k in ("data_s", "feed_s", "checkpoint_s", "valid_s", "eval_s")},
                     **timings},
    }
    if "oracle" in info:
        results["oracle"] = {"auc": info["oracle"]["auc"]}
    if committee:
        results["committee"] = committee
    if cold:
        t_cold = next((o[TEACHER]["cold"] for o in outs if "cold" in o.get(TEACHER, {})), None)
        results["teacher"]["cold"] = {**(t_cold or {}), "threshold": cfg.run.cold_users,
                                      # η's teacher is the one the signals were recorded by
                                      "is_signals_teacher": "final" not in info}
        store.delete_dir(cold["cold_dir"])
    for i, s in enumerate(cfg.students):
        raw, dist = (_training(members[f"{s.name}/{kind}"]) for kind in KINDS)
        d = members[f"{s.name}/distill"]
        labelled = d["rows_trained"] - d.get("unlabelled_trained", 0)
        entry = StudentResult(s.name, s.arch, s.towers, d["params"], d["sample_rows"], s.rows,
                              d["signal_rows"] / labelled if labelled else 0.0, raw, dist,
                              transferability(info["auc"], raw.scored.auc, dist.scored.auc), raw_reused=i in skip_raw,
                              unlabelled_rows=d.get("unlabelled_rows", 0),
                              unlabelled_without_signal=d.get("unlabelled_without_signal", 0),
                              representations=[*s.representations.use,
                                               *(f"{p} codes" for p in s.representations.codes)] or None,
                              baseline=representation_baseline(cfg, i))
        record = entry.to_dict()
        if s.distill_from != "teacher":
            record["committee"] = {k: d[k] for k in ("distill_from", *PASSES) if k in d}
        if "cold" in members[f"{s.name}/distill"] and "cold" in members[f"{s.name}/raw"]:
            record["cold"] = {kind: members[f"{s.name}/{kind}"]["cold"] for kind in KINDS}
        results["students"].append(record)
        log(f"[student {s.name}{f' seed {cfg.run.seed}' if prefix else ''}] AUC raw {raw.scored.auc:.4f} → "
            f"distilled {dist.scored.auc:.4f}, η {entry.eta:.2f}")
    prepared.rejects().check_budget(cfg.data.error_budget, cfg.data.path or "synthetic log")
    results["models"] = models.summary()
    measure_run_students(cfg.run.out_dir, results, cfg.run.serving, log)
    results["summary"] = summarize([results], cfg.run.pairs)  # one seed: intervals over the test rows
    results["data"] = prepared.describe()
    results["seconds"] = time.perf_counter() - run.t_start
    results["tracking"] = run.opened.tracking_info()
    run.finish(results, write_results(cfg, results, log))
    return results


def cold_users(cfg: ExperimentConfig, run: Any, stream: Any, info: dict[str, Any],
               log: Callable[[str], None]) -> dict[str, Any]:
    """With ``run.cold_users``: each window user's rows counted (partials in the store, never
    gathered here) and what the test split's cold-user marking and the students' loop need."""
    if not cfg.run.cold_users:
        return {}
    schema = run.schema
    if schema.user_field not in schema.categorical:
        raise ValueError(f"run.cold_users={cfg.run.cold_users}: the log ({schema.source or 'its schema'}) has no user "
                         f"field among its categorical fields, so no user is cold or warm")
    directory = count_window_users(stream, run.store, run.experiment, schema.user_field)
    log(f"[cold] test rows of users with at most {cfg.run.cold_users} row(s) in the students' window are scored "
        f"apart (the teacher from its stored weights)")
    return {COLD: True, "cold_dir": directory, COLD_TEACHER: run.store.teacher_weights_path(run.key, info["generation"]),
            "mark": {"store_uri": run.store.uri, "directory": directory, "column": schema.user_field,
                     "threshold": cfg.run.cold_users}}


def _training(m: dict[str, Any]) -> Training:
    """A student group member's final metrics (``train.group``) as a training record."""
    return Training(Scored.of(m), m["rows_trained"] / m["seconds"] if m["seconds"] else float("nan"), m["steps"],
                    early_fields(m), m["seconds"])
