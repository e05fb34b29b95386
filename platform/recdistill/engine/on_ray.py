"""One experiment on Ray: Ray Data → Ray Train teacher → signal hub → distill stream →
student groups (Ray Train) → the same results as the single-process engine.

1. ``engine.ray_run``: Ray Data reads, splits and encodes the log (lazy, sharded; nothing
   gathered here); the train split is tagged history / students' window.
2. ``engine.teacher``: the teacher key is looked up in the signal store; when its signals
   are complete the teacher step is skipped. Otherwise a ``TorchTrainer`` trains the
   teacher on its sample (``train.teacher_loop``, DDP over ``platform.teacher_workers``),
   publishing forward-distillation logits block by block (``signals.publish``).
3. ``engine.stream``: the window's rows joined with the teacher's logits once, by row id,
   and materialised in the object store; every student group reads it.
4. ``engine.groups``: student groups (``platform.students_per_group``) run as concurrent
   one-worker Ray Train runs (``train.students_loop``); each trains its students raw and
   distilled in one pass per epoch (``students_stage``; with packed seeds, every seed's
   students: see ``engine.packed_seeds``), then each run (``Side``) writes its results. Where the
   students can follow the teacher (``engine.follow``), the groups start just before the
   teacher's Train run and join the window with its logits themselves as it publishes
   them (``train.follow``), in place of step 3.

Every model is validated on the valid split (materialised once, sharded to the workers,
merged across them) and stops as ``train.evaluate.EarlyStop`` says, as on the local engine.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Callable

from recdistill.config import ExperimentConfig
from recdistill.engine.follow import Follow, follows
from recdistill.engine.groups import GroupRuns, Side
from recdistill.engine.ray_run import RayRun, start_run
from recdistill.engine.stream import distill_stream
from recdistill.engine.experts import experts_stage
from recdistill.engine.teacher import representation_blocks, teacher_stage
from recdistill.signals.representations import layout
from recdistill.signals.semantic_ids import CODE_KIND
from recdistill.train.committee import committee_reads_representations
from recdistill.train.plan import feature_spec, reads_representations, sequence_length


def run_on_ray(cfg: ExperimentConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    run = start_run(cfg, log)
    follow = Follow(run, log) if follows(run.cfg) else None
    try:
        side = teacher_side(run, log, follow.start if follow is not None else None)
    except BaseException:
        if follow is not None:
            follow.cancel()
        raise
    if follow is not None and follow.started:
        return follow.finish(side)
    rep = student_representations(run.cfg, run, log)
    stream, side.cov = distill_stream(run, log, side.timings, rep)
    return students_stage([side], stream, log, rep)[0]


def teacher_side(run: RayRun, log: Callable[[str], None],
                 on_train: Callable[["Side"], None] | None = None) -> Side:
    """A seed's teacher (trained or reused) and its committee's experts. ``on_train`` is
    called with the side just before a teacher trains (its signal id set, its raw students
    planned): students that follow the teacher start there."""
    # from the run's start to here: Ray joined, the log prepared, the held-out splits materialised
    side = Side(run, {}, 0, False, {"prepare_s": time.perf_counter() - run.t_start}, None)
    side.plan_raw()
    side.info, side.teacher_steps, side.reused = teacher_stage(
        run.cfg, run, log, side.timings, (lambda: on_train(side)) if on_train is not None else None)
    side.committee = experts_stage(run.cfg, run, side.info, log, side.timings)
    return side


def students_stage(sides: list[Side], stream: Any, log: Callable[[str], None],
                   rep: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The student groups on the distill stream, then each side's results written. Several
    sides are packed seeds (``engine.packed_seeds``): each group trains every seed's
    students, each reading its own seed's teacher channel, and each seed gets the results its
    own run would have."""
    groups = GroupRuns(sides, stream, log, rep)
    return groups.written(groups.fit())


def student_representations(cfg: ExperimentConfig, run: Any, log: Callable[[str], None]) -> dict[str, Any] | None:
    """What the students' join of the teacher's representations needs (its blocks and the
    log's layout), or None when no student reads them."""
    if not (reads_representations(cfg) or committee_reads_representations(cfg)):
        return None
    blocks = representation_blocks(run)
    codes = any(s.representations.codes for s in cfg.students)
    spec = feature_spec(run.schema, run.prepared.preprocessor.buckets)
    lay = layout(run.schema, spec, cfg.teacher.embed_dim, sequence_length(cfg),
                 cfg.teacher.semantic_ids.levels if codes else 0)
    log(f"[stream] teacher representations ({', '.join(c for c in (lay.user_column, lay.item_column, lay.history_column) if c)}; "
        f"{cfg.teacher.embed_dim} dims): {len(blocks)} blocks, joined as of strictly before each row's "
        f"{lay.order_column}")
    return {"blocks": blocks, "lay": asdict(lay), "code_blocks": representation_blocks(run, CODE_KIND) if codes else None}
