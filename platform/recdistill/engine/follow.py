"""Student groups that start with the teacher (``platform.students_follow``).

A batch run's students otherwise start once the teacher has finished: its Train run, its
evaluation and checkpoint, then the stream's join, then the groups' Train start. Here the
groups start just before the teacher's Train run, read the students' window unjoined,
and join each batch with the logits the teacher has published so far
(``train.follow``), so their start-up, their reads and their first epoch overlap the
teacher's training. The joined batches are the sequential run's, so every number is too.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from recdistill.config import ConfigError, ExperimentConfig, signal_mode
from recdistill.engine.groups import GroupRuns, Side, student_groups
from recdistill.engine.ray_run import RayRun
from recdistill.engine.stream import students_window
from recdistill.engine.trainer import use_gpu, worker_gpus
from recdistill.ray_env import alive_nodes
from recdistill.train.follow import FOLLOW, SignalFollower
from recdistill.train.committee import committee_reads_representations
from recdistill.train.plan import reads_representations, teacher_sample_seed
from recdistill.train.worker import NODE_SHARE


def finished_teacher_needed(cfg: ExperimentConfig) -> str | None:
    """What of ``cfg``'s students needs their own seed's teacher finished before they start
    (so they neither share a pass with other seeds' students nor follow their teacher), or
    None."""
    if cfg.committee.experts or any(s.distill_from != "teacher" for s in cfg.students):
        return "a committee: its experts train after the seed's teacher"
    if reads_representations(cfg) or committee_reads_representations(cfg):
        return "teacher representations: they are joined once the seed's teacher has finished"
    if cfg.run.cold_users:
        return "run.cold_users: the seed's finished teacher is scored on the cold users' rows beside its students"
    return None


def follow_refusal(cfg: ExperimentConfig) -> str | None:
    """Why the students of ``cfg`` cannot follow its teacher, or None when they can."""
    if signal_mode(cfg.teacher.signals)[0] != "forward":
        return f"teacher.signals={cfg.teacher.signals} publishes the signals only after the teacher has trained"
    return finished_teacher_needed(cfg)


def room_refusal(cfg: ExperimentConfig, cpus: float, gpus: float, has: str = "the cluster has") -> str | None:
    """Why ``cpus`` CPUs and ``gpus`` GPUs (0: CPU workers) cannot run the teacher's
    workers and every student group at once, leaving Ray Data a CPU; None when they can.
    (A group that waited for resources would start only after the teacher.)"""
    p = cfg.platform
    groups = len(student_groups(cfg))
    workers = p.teacher_workers + groups
    if workers * p.cpus_per_worker > cpus - 1 + 1e-9:
        return (f"{p.teacher_workers} teacher worker(s) and {groups} student group(s) at "
                f"platform.cpus_per_worker={p.cpus_per_worker:g} need {workers * p.cpus_per_worker:g} CPUs with one "
                f"left for Ray Data, and {has} {cpus:g}")
    if gpus:
        share = worker_gpus(cfg, cluster_gpus=gpus)
        teacher = worker_gpus(cfg, cluster_gpus=gpus, workers=p.teacher_workers)
        need = p.teacher_workers * teacher + groups * share
        if need > gpus + 1e-9:
            return (f"{p.teacher_workers} teacher worker(s) at {teacher:g} GPU and {groups} student group(s) at "
                    f"{share:g} GPU each need {need:g} GPUs, and {has} {gpus:g} (platform.gpus_per_worker shares "
                    f"a GPU between one-worker runs; a teacher of 2+ workers takes a whole GPU per worker)")
    return None


def follows(cfg: ExperimentConfig) -> bool:
    """Whether this run's students may follow its teacher (``platform.students_follow``):
    under auto, on GPUs or several nodes, where the groups need not share the teacher's
    cores; ``Follow.start`` still looks at what the cluster has free then."""
    import ray
    from ray.tune.trainable.trainable_fn_utils import _in_tune_session

    mode = cfg.platform.students_follow
    if mode == "no":
        return False
    why = follow_refusal(cfg)
    if mode == "yes":
        res = ray.cluster_resources()
        why = why or room_refusal(cfg, res.get("CPU", 1.0), res.get("GPU", 0.0) if use_gpu(cfg) else 0.0)
        if why:
            raise ConfigError(f"platform.students_follow=yes: the students cannot follow the teacher here: {why}")
        return True
    if why is not None or _in_tune_session():  # a sweep's trials start together: each would count the same free CPUs
        return False
    # on one CPU node the groups' start and first epoch take the cores the teacher trains on:
    # at 1M rows on 2 CPUs a followed run took 1.08-1.11x the wall of students after the teacher
    return use_gpu(cfg) or alive_nodes() > 1


class Follow:
    """A run's student groups started beside its teacher; ``start`` is the teacher stage's
    ``on_train`` hook (not called when the teacher is reused: its signals are all there)."""

    def __init__(self, run: RayRun, log: Callable[[str], None]) -> None:
        self.run, self.log = run, log
        self.groups: GroupRuns | None = None
        self.refs: list[Any] = []

    @property
    def started(self) -> bool:
        return self.groups is not None

    def start(self, side: Side) -> None:
        """Launch the groups (under auto, when the cluster has room free for them now)."""
        import ray

        cfg, run = side.cfg, side.run
        if cfg.platform.students_follow == "auto":
            # what is free now: another run on the cluster may hold what its total shows
            free = ray.available_resources()
            why = room_refusal(cfg, free.get("CPU", 0.0), free.get("GPU", 0.0) if use_gpu(cfg) else 0.0,
                               "the cluster has free")
            if why:
                self.log(f"[students] they start after the teacher: {why} (platform.students_follow=auto)")
                return
        t = cfg.teacher
        follow = SignalFollower.config(run.base["hub"], run.store.uri, run.signal_id, t.sampling_ratio,
                                       t.negative_keep_rate, teacher_sample_seed(cfg), cfg.platform.follow_timeout_s)
        # on one node the groups take a share of its cores' torch threads and the teacher, whose
        # pass is the run's critical path (the groups mostly wait on it), keeps all of them:
        # at 1M rows on 2 CPUs 123/131 s, against 135/140 s with the teacher's threads split too
        share = {NODE_SHARE: 1 + len(student_groups(cfg))} if alive_nodes() == 1 and not use_gpu(cfg) else {}
        self.groups = GroupRuns([side], students_window(run), self.log, follow=follow, loop_extra=share)
        self.refs = self.groups.launch()

    def cancel(self) -> None:
        """After the teacher failed: its followers stopped (they would wait for signals)."""
        import ray

        for ref in self.refs:
            ray.cancel(ref, force=True)
        if self.groups is not None:
            self.groups.close()

    def finish(self, side: Side) -> dict[str, Any]:
        """The groups' ends awaited; the run's results, as ``GroupRuns.written`` writes them."""
        import ray

        assert self.groups is not None
        t_teacher = time.perf_counter()
        try:
            outs = ray.get(self.refs)
        finally:
            self.groups.close()
        counts = outs[0][FOLLOW]  # every group read the whole stream
        side.cov = {"rows": int(counts["rows"]), "with_signal": int(counts["with_signal"])}
        side.timings["students_after_teacher_s"] = time.perf_counter() - t_teacher
        side.timings["students_wait_s"] = max(float(o[FOLLOW]["wait_s"]) for o in outs)
        late = side.cov["late"] = max(int(o[FOLLOW]["late"]) for o in outs)
        c = side.cov
        self.log(f"[stream] window rows joined behind the teacher: {c['rows']:,} rows, {c['with_signal']:,} with a "
                 f"signal ({c['rows'] - c['with_signal']:,} without: the aux loss is masked there"
                 + (f"; {late:,} of them because their signal came after platform.follow_timeout_s" if late else "")
                 + f"); the groups waited {side.timings['students_wait_s']:.1f} s on the teacher and ended "
                 f"{side.timings['students_after_teacher_s']:.1f} s after it")
        return self.groups.written(outs)[0]
