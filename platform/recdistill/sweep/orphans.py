"""Placement groups a stopped Tune trial leaves behind, found and removed.

When a scheduler stops a trial, Tune kills it and with it the trial's Train controller. A
placement group lives as long as the job that created it (the sweep's driver), not as long
as the actor that created it, so the worker group's CPUs stay reserved until the driver
exits and every later Train run waits for them: on a small machine, forever. The worker
reports its placement group and the sweep removes it (``runner._release``), but the kill
can land while the controller is restarting its worker group after the trial's worker died
first: the new group's placement group was never reported (seen once in CI: the next
module's teacher waited on a 0.5-CPU leftover until the job was killed).

So, while a Tune stage runs and once it ends, every placement group of this job whose
creator was an actor that is now dead is removed. Only a Train controller creates
placement groups in a sweep's job, and a live run's controller is alive.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ray import tune

logger = logging.getLogger(__name__)


def orphaned_placement_groups() -> list[Any]:
    """This job's placement groups, not detached and not removed, whose creating actor is dead."""
    import ray
    from ray._private.state import state
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import PlacementGroup

    job = ray.get_runtime_context().get_job_id()
    out = []
    # ray.util.placement_group_table() leaves out the creator fields: read GCS's records
    for raw in state._connect_and_get_accessor().get_placement_group_table():
        pg = gcs_pb2.PlacementGroupTableData.FromString(raw)
        # GCS marks a group created by the driver itself (Tune's trial groups) "creator
        # actor dead" from the start: only groups an actor created count
        by_actor = bool(pg.creator_actor_id) and pg.creator_actor_id != ray.ActorID.nil().binary()
        if (by_actor and pg.creator_actor_dead and not pg.is_detached and pg.creator_job_id.hex() == job
                and pg.state != gcs_pb2.PlacementGroupTableData.REMOVED):
            out.append(PlacementGroup(ray.PlacementGroupID(pg.placement_group_id)))
    return out


def release_orphans() -> int:
    """Remove ``orphaned_placement_groups()``; how many were removed."""
    import ray

    n = 0
    for pg in orphaned_placement_groups():
        try:
            ray.util.remove_placement_group(pg)
            n += 1
        except Exception as e:  # removed meanwhile
            logger.debug("placement group %s: %s", pg.id.hex(), e)
    return n


class ReleaseOrphans(tune.Callback):
    """Between Tune's steps, at most every ``every_s`` seconds: ``release_orphans()``, so that
    the trials after a stopped one get its CPUs back within the stage."""

    def __init__(self, every_s: float = 2.0) -> None:
        self.every_s, self.released = every_s, 0
        self._last = 0.0

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            self.released += release_orphans()
