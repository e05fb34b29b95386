"""A batch run on Ray, started: the prepared splits (the held-out ones materialised
once), the signal store and hub, the teacher's key and the loop config every Ray Train
worker gets. The 1→N experiment and the transfer stage start here alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from recdistill.config import ExperimentConfig, to_dict
from recdistill.data.in_order import materialize_in_order
from recdistill.engine.live import LiveMetrics
from recdistill.engine.prologue import Opened, driver_name, open_run, prepare
from recdistill.signals.hub import get_hub, hub_name
from recdistill.signals.store import SignalStore
from recdistill.train.keys import teacher_key
from recdistill.train.plan import check_validation


@dataclass
class RayRun:
    """What every Ray pipeline shares once the log is prepared: splits, store, hub, names."""

    prepared: Any
    train_ds: Any  # the train split tagged history / students' window
    test_ds: Any  # materialised: every model scores it
    valid_ds: Any  # materialised: every model validates on it (no rows: no validation)
    valid_rows: int
    store: SignalStore
    hub: Any
    key: str  # the teacher's key
    experiment: str
    storage: Path
    base: dict[str, Any]  # the loop config every Train worker gets
    t_start: float
    signal_id: str = ""  # the teacher's signals: ``<key>/<generation>``, set by teacher_stage
    cfg: Any = None  # the resolved config (``PreparedLog.cfg``): every later stage uses this one
    opened: Opened | None = None  # the run directory and trackers
    live: LiveMetrics | None = None  # worker reports → the trackers, as they come
    owns_hub: bool = True  # it stops the signal hub when it finishes (a packed seed's sibling run does not)

    def callbacks(self, role: str) -> list[Any]:
        """The Train callbacks of a run of ``role`` (teacher, student, transfer): its reports, live."""
        return [self.live.callback(role)] if self.live is not None else []

    def settle(self) -> list[dict[str, Any]]:
        """Every report its Train runs relayed, drained into the trackers and the relay
        closed (call when none of its Train runs is left): the workers that failed and why,
        one record per restart (``{"role", "run", "errors"}``)."""
        if self.live is None:
            return []
        self.live.close()
        return list(self.live.failures)

    def finish(self, results: dict[str, Any], written: list[Path]) -> None:
        """The run's end: the live relay drained and closed, the trackers given the results
        and outputs, the signal hub stopped (where it owns it)."""
        import ray

        if self.live is not None:
            self.live.close()
        if self.opened is not None:
            self.opened.finish(results, written)
        if self.owns_hub:
            ray.kill(self.hub)

    @property
    def schema(self) -> Any:
        return self.prepared.schema


def start_run(cfg: ExperimentConfig, log: Callable[[str], None],
              raw_train_hook: Callable[[Any], Any] | None = None) -> RayRun:
    """Write the config, join or start Ray, prepare the log and the signal hub.
    ``raw_train_hook`` adds columns to the raw train rows before encoding (``prepare_log``)."""
    import ray

    opened = open_run(cfg)
    live = LiveMetrics(opened.trackers)
    res = ray.cluster_resources()
    prepared = prepare(cfg, log, f" on Ray ({res.get('CPU', 0):.0f} CPUs, {res.get('GPU', 0):.0f} GPUs)", opened,
                       raw_train_hook)
    cfg = prepared.cfg
    train_ds = prepared.splits["train"]
    # Held out once into the object store (sharded across nodes, not on the driver): the
    # teacher and every student group score it, and training workers that hold every CPU
    # of a small node cannot starve a lazy read of it.
    # in the split's order: the first rows of test are the transfer stage's curve rows
    test_ds = materialize_in_order(prepared.splits["test"])
    valid_ds = materialize_in_order(prepared.splits["valid"])
    valid_rows = valid_ds.count()
    check_validation(cfg, valid_rows)
    key = teacher_key(cfg)
    store = SignalStore(cfg.platform.signal_store)
    experiment = driver_name(cfg)
    hub = get_hub(experiment, store.uri)
    base = {"cfg": to_dict(cfg), "schema": prepared.schema, "buckets": prepared.preprocessor.buckets, "key": key,
            "store": store.uri, "hub": hub_name(experiment), "valid_rows": valid_rows}
    return RayRun(prepared, train_ds, test_ds, valid_ds, valid_rows, store, hub, key, experiment,
                  opened.out / "ray_train", base, opened.t_start, cfg=cfg, opened=opened, live=live)


def eval_datasets(run: RayRun) -> dict[str, Any]:
    """The held-out splits every Train run gets: test, and valid when it has rows."""
    return {"test": run.test_ds, **({"valid": run.valid_ds} if run.valid_rows else {})}
