"""The seeds of a run packed into one students' pass (``run.pack_seeds``).

Each seed's teacher is trained (or found in the store) as in its own run; then one
distill stream carries every seed's teacher logits, each in its own column
(``train.plan.seed_channel``), and each student group trains the students of every seed
in one pass per epoch, each member with its own seed's initial weights, rows and teacher
(``train.plan.packed_members``), as ``--pack`` does for a sweep's trials. Each seed still
gets a complete run under ``seeds/seed-<s>/`` (results.json, report, models, trackers),
with the numbers its own run would have: a group member's updates depend on its own rows
and logits only. What is paid once instead of per seed: the log's preparation, the
held-out splits' materialisation, the stream's read and join, and each student group's
Train start-up and data pass.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from recdistill.config import ExperimentConfig, to_dict
from recdistill.engine.live import LiveMetrics
from recdistill.engine.follow import finished_teacher_needed
from recdistill.engine.on_ray import students_stage, teacher_side
from recdistill.engine.prologue import driver_name, open_run
from recdistill.engine.ray_run import RayRun, start_run
from recdistill.engine.stream import distill_stream
from recdistill.run_dir import write_resolved_config
from recdistill.train.keys import teacher_key
from recdistill.train.plan import seed_channel


def pack_refusal(cfg: ExperimentConfig) -> str | None:
    """Why the seeds of ``cfg`` cannot share their students' pass, or None when they can."""
    if not cfg.run.pack_seeds:
        return "run.pack_seeds=false"
    if cfg.run.engine != "ray":
        return "the local engine trains each model on its own"
    why = finished_teacher_needed(cfg)
    if why:
        return why
    if cfg.platform.students_follow == "yes":
        return "platform.students_follow=yes: each seed's students follow its own teacher"
    return None


def sibling_run(first: RayRun, cfg: ExperimentConfig) -> RayRun:
    """Seed ``cfg.run.seed``'s run beside ``first``: its own directory, trackers and teacher
    key; the prepared log, held-out splits, store and hub of ``first`` (the seeds share the
    log and its splits, which no seed moves)."""
    opened = open_run(cfg)
    resolved = dataclasses.replace(first.cfg, run=cfg.run, tracking=cfg.tracking)
    write_resolved_config(resolved)
    opened.trackers.update_config(to_dict(resolved))
    key = teacher_key(resolved)
    # its own driver name (its Train runs' names and its leases'); the hub's name stays first's
    return dataclasses.replace(first, key=key, base={**first.base, "cfg": to_dict(resolved), "key": key},
                               experiment=driver_name(resolved), storage=opened.out / "ray_train",
                               t_start=opened.t_start, signal_id="", cfg=resolved, opened=opened,
                               live=LiveMetrics(opened.trackers), owns_hub=False)


def run_packed_seeds(cfgs: list[ExperimentConfig], log: Callable[[str], None] = print) -> list[dict]:
    """Each seed's results (``cfgs``: one config per seed, ``seeds.seed_config``), its
    students trained in one pass with the other seeds'."""
    first = start_run(cfgs[0], log)
    runs = [first]
    try:
        sides = []
        for k, cfg in enumerate(cfgs):
            log(f"[seeds] seed {cfg.run.seed} ({k + 1}/{len(cfgs)}): its teacher")
            if k:
                runs.append(sibling_run(first, cfg))
            sides.append(teacher_side(runs[-1], log))
        channels = {seed_channel(s.cfg.run.seed): s.run.signal_id for s in sides}
        stream, cov = distill_stream(first, log, sides[0].timings, channels=channels)
        for s in sides:
            s.timings["stream_s"] = sides[0].timings["stream_s"]
            s.cov = {"rows": cov["rows"], "with_signal": cov["by_channel"][seed_channel(s.cfg.run.seed)]}
        return students_stage(sides, stream, log)
    except BaseException:
        _abandon(runs)
        raise


def _abandon(runs: list[RayRun]) -> None:
    """After a failure: every seed's live relay and the shared hub stopped, so a long-lived
    driver (a sweep) keeps no actors of a failed run (closing twice is harmless)."""
    import ray

    for r in runs:
        if r.live is not None:
            r.live.close()
    try:
        ray.kill(runs[0].hub)
    except Exception:  # already stopped
        pass
