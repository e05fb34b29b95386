"""Worker reports, live: what each Ray Train run's workers report (``ray.train.report``)
reaches this run's trackers while the run trains, not after it.

Train calls a ``UserCallback`` on its controller after every report; ``Relay`` puts the
report's ``live`` part (a small dict the loops fill for this: epoch or step, validation
AUC, throughput) on a Ray queue, and a thread of the driver drains it into the trackers
under the role's namespace (``teacher/valid_auc``, ``student/decoupled/distill/valid_auc``)
with the role's step axis. It is the channel Train's own Tune integration uses; inside a
Tune trial ``engine.trainer.ray_trainer`` adds that integration too, so Tune sees every
report (and ASHA can stop a trial between epochs).
"""

from __future__ import annotations

import threading
from typing import Any

import ray.train

from recdistill.tracking import flatten
from recdistill.train.worker import LIVE

FAILURE = "failure"  # a relayed item that is a worker failure, not a report


class Relay(ray.train.UserCallback):
    """On the Train controller: rank 0's ``live`` metrics of every report, onto the queue."""

    def __init__(self, queue: Any, role: str) -> None:
        self.queue, self.role = queue, role

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        live = metrics[0].get(LIVE) if metrics else None
        try:
            for row in (live if isinstance(live, list) else [live] if live else []):  # a report may carry several
                self.queue.put({"role": self.role, **row})
        except Exception as e:  # tracking must never fail the training run it watches
            print(f"[tracking] a {self.role} report was not relayed: {type(e).__name__}: {e}", flush=True)

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        """A worker raised or died: Train restarts the run from its last checkpoint (up to
        ``platform.max_failures`` times). The driver is told why, so a resumed run's record says."""
        run = getattr(getattr(run_context, "run_config", None), "name", None) or self.role
        errors = [f"rank {rank}: {_one_line(e)}" for rank, e in sorted(worker_exceptions.items())]
        try:
            self.queue.put({"role": self.role, FAILURE: {"run": run, "errors": errors}})
        except Exception as e:
            print(f"[tracking] a {self.role} worker failure was not relayed: {type(e).__name__}: {e}", flush=True)


def _one_line(e: BaseException) -> str:
    """An exception as one short line: its type and the last line of its message (Ray's
    errors carry the whole remote traceback, whose last line is the cause)."""
    lines = [x.strip() for x in str(e).strip().splitlines() if x.strip()]
    return f"{type(e).__name__}: {lines[-1][:200] if lines else ''}"


class LiveMetrics:
    """The driver's end: a queue the relays fill and a thread that logs what arrives. Use as
    a context manager; ``callback(role)`` for each Train run."""

    def __init__(self, trackers: Any) -> None:
        from ray.util.queue import Queue

        self.trackers = trackers
        self.queue = Queue(actor_options={"num_cpus": 0})
        self.received = 0
        self.failures: list[dict[str, Any]] = []  # {"role", "run", "errors"}: each restart's cause
        self._stop = threading.Event()  # set by close(), once
        self._thread = threading.Thread(target=self._drain, name="recdistill-live-metrics", daemon=True)
        self._thread.start()

    def callback(self, role: str) -> Relay:
        return Relay(self.queue, role)

    def _drain(self) -> None:
        from ray.util.queue import Empty

        while True:
            try:
                item = self.queue.get(timeout=0.5)
            except Empty:
                if self._stop.is_set():
                    return
                continue
            except Exception as e:  # the queue actor is gone: tracking stops, training goes on
                print(f"[tracking] live metrics stopped after {self.received} rows: {type(e).__name__}: {e}",
                      flush=True)
                return
            if FAILURE in item:
                self._failed(item)
            else:
                self.forward(item)

    def _failed(self, item: dict[str, Any]) -> None:
        record = {"role": item["role"], **item[FAILURE]}
        self.failures.append(record)
        print(f"[{record['role']}] Train run {record['run']}: a worker failed ({'; '.join(record['errors'])}); "
              f"Train restarts it from its last checkpoint while platform.max_failures allows", flush=True)

    def forward(self, item: dict[str, Any]) -> None:
        role = item.pop("role")
        self.received += 1
        self.trackers.log(flatten(role, item))

    def close(self) -> None:
        """Drain what is left, then stop the thread and the queue actor (once: a run settles
        its relay before writing its results, and closes it again on its way out)."""
        import ray

        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=30)
        try:
            ray.kill(self.queue.actor)
        except Exception:  # already gone with its node
            pass

    def __enter__(self) -> LiveMetrics:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class SeedsLive(LiveMetrics):
    """The live rows of a student group that trains several seeds' students (packed seeds,
    members named ``seed-<s>/<student>/<kind>``): each seed's rows go to its own run's
    trackers under the names its own run would give them."""

    def __init__(self, by_prefix: dict[str, Any]) -> None:
        super().__init__(None)
        self.by_prefix = by_prefix  # member-name prefix → that seed's trackers

    def forward(self, item: dict[str, Any]) -> None:
        role = item.pop("role")
        self.received += 1
        shared = {k: v for k, v in item.items() if not any(k.startswith(p) for p in self.by_prefix)}
        for prefix, trackers in self.by_prefix.items():
            own = {k[len(prefix):]: v for k, v in item.items() if k.startswith(prefix)}
            if own:
                trackers.log(flatten(role, {**shared, **own}))
