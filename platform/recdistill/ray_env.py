"""Start or join Ray with settings that are safe on a laptop and on a cluster."""

from __future__ import annotations

import logging
import os


def ensure_ray(num_cpus: int | None = None) -> None:
    """Join the cluster named by RAY_ADDRESS (``auto`` for a local ``ray start`` head), or
    start a fresh, quiet local Ray once per process.

    Locally, token auth is off (``ray.init`` would otherwise write ~/.ray/auth_token) and
    the dashboard stays off: it costs ~1 GB of RSS on a small machine.
    """
    import ray

    if ray.is_initialized():
        quiet_data()  # a Tune trial or a task: Ray is up, this process's Data context is not
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Ray Train's controller polls its workers every 2 s by default, so each Train run
    # ends up to 2 s after its workers do; our runs are short and several (teacher, groups).
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    # Train V2 re-routes workers' print() through its logger, and the driver then shows
    # each progress line twice (logger and stdout forwarding); keep plain stdout.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(logging_level=logging.WARNING)
        quiet_data()
        return
    # Without the dashboard the State API is absent, and Ray Train's placement-group
    # cleaner warns about it every few seconds; Ray's own INFO/WARNING lines from worker
    # processes (checkpoint paths, per-report echoes) drown our progress output locally.
    # Errors still come through, and a worker's exception fails the run as usual.
    # address="local": always a fresh local Ray. A bare ray.init() would instead try the
    # address a previous `ray start` left in Ray's temp dir, and wait on a dead head.
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING,
             configure_logging=True, log_to_driver=True,
             logging_config=ray.LoggingConfig(encoding="TEXT", log_level="ERROR"))
    quiet_data()


def quiet_data() -> None:
    """Ray Data's progress bars interleave with our own output; keep its logs concise.
    Per process: every driver, Tune trial and Train worker that runs a Dataset."""
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
