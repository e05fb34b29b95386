"""Start or join Ray with settings that are safe on a laptop and on a cluster."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import warnings
from typing import Iterator

TRAIN_V2 = "RAY_TRAIN_V2_ENABLED"


def ensure_ray(num_cpus: int | None = None) -> None:
    """Join the cluster named by RAY_ADDRESS (``auto`` for a local ``ray start`` head), or
    start a fresh, quiet local Ray once per process.

    A joined cluster keeps its own auth settings: on a token-authenticated cluster the
    driver needs RAY_AUTH_MODE=token and the cluster's token (RAY_AUTH_TOKEN,
    RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token); a submitted job inherits both from the node.
    Only the local Ray started here runs without token auth (``ray.init`` would otherwise
    write ~/.ray/auth_token) and without the dashboard (~1 GB of RSS on a small machine).
    """
    import ray

    if ray.is_initialized():
        quiet_data()  # a Tune trial or a task: Ray is up, this process's Data context is not
        return
    require_train_v2()
    # Ray Train's controller polls its workers every 2 s by default, so each Train run
    # ends up to 2 s after its workers do; our runs are short and several (teacher, groups).
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    # Train V2 re-routes workers' print() through its logger, and the driver then shows
    # each progress line twice (logger and stdout forwarding); keep plain stdout.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        _start_local(num_cpus)
    quiet_data()


def require_train_v2() -> None:
    """The platform uses Train V2 APIs (e.g. ``ray.train.LoggingConfig``); Ray reads
    RAY_TRAIN_V2_ENABLED as Train's version switch (on unless set to other than 1/true)."""
    value = os.environ.get(TRAIN_V2)
    if value is not None and value.strip().lower() not in ("1", "true"):
        raise RuntimeError(f"{TRAIN_V2}={value!r}: recdistill needs Ray Train V2 (its default since Ray 2.51); "
                           f"unset {TRAIN_V2} or set it to 1")


def _start_local(num_cpus: int | None) -> None:
    import ray

    # Our own single-node cluster: nothing outside this host reaches it.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    port = _free_port()
    cluster_env = {
        # Ray Train's placement-group cleaner (an actor) calls the State API with no
        # address; Ray then looks for "the" local cluster and, beside a second one on this
        # host, raises "Found multiple active Ray instances" or picks the other one. The
        # GCS port is pinned so that every process of this cluster is told its address.
        "RAY_GCS_SERVER_PORT": str(port),
        "RAY_ADDRESS": f"127.0.0.1:{port}",
        # Train's preemption watcher (node-drain notices) logs a core_worker error on each
        # Train start; nothing drains the node of a local single-host cluster.
        "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
        # Ray Data logs four INFO lines per dataset (start, plan, finish) from the processes
        # that execute it (Train's split coordinators), beyond the reach of quiet_data();
        # a run executes a dozen datasets. Warnings and errors still show.
        "RAY_DATA_LOG_LEVEL": "WARNING",
    }
    # Without the dashboard the State API is absent, and Ray Train's placement-group
    # cleaner warns about it every few seconds; Ray's own INFO/WARNING lines from worker
    # processes (checkpoint paths, per-report echoes) drown our progress output locally.
    # Errors still come through, and a worker's exception fails the run as usual.
    # address="local": always a fresh local Ray. A bare ray.init() would instead try the
    # address a previous `ray start` left in Ray's temp dir, and wait on a dead head.
    with _environ(cluster_env):  # inherited by the raylet, hence by every worker process
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING,
                 configure_logging=True, log_to_driver=True,
                 logging_config=ray.LoggingConfig(encoding="TEXT", log_level="ERROR"))


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """Set ``values`` (those the user has not set) for the block, then restore: the driver's
    own later children (a `ray start`, another run) must not inherit this cluster's address."""
    added = [k for k in values if k not in os.environ]
    os.environ.update({k: values[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def quiet_data() -> None:
    """Ray Data's progress bars interleave with our own output; keep its logs concise; pace
    its executor while a consumer is fed (``executor_pace``). Per process: every driver
    and Tune trial; a Train worker gets the context with its datasets and quiets the logs
    itself (``quiet_train_worker``)."""
    from ray.data import DataContext

    from recdistill.executor_pace import pace_executor

    ctx = DataContext.get_current()
    pace_executor(ctx)
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False  # travels with each dataset to where it executes
    quiet_data_logs()


def quiet_data_logs() -> None:
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # with the bars off (the datasets' context says so), Ray Data warns once per process
    # that they are off: a line from the driver and one from each Train worker
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


# Train V2 logs every ray.train.report (metrics included) at INFO from a logger named after
# its source file, logging.getLogger(__file__) in ray/train/v2/_internal/execution/context.py:
# outside the "ray.train" hierarchy that ray.train.LoggingConfig sets.
_TRAIN_CONTEXT_FILE = ("train", "v2", "_internal", "execution", "context.py")


def train_context_logger_name() -> str:
    import ray

    return os.path.join(os.path.dirname(ray.__file__), *_TRAIN_CONTEXT_FILE)


def quiet_train_worker() -> None:
    """In a Train worker: drop Train's per-report INFO lines (long runs drowned our progress
    lines in them); its warnings and errors still show. Ray Data's too, as on the driver."""
    logging.getLogger(train_context_logger_name()).setLevel(logging.WARNING)
    quiet_data_logs()


def alive_nodes() -> int:
    """The cluster's live nodes (1 before Ray is joined)."""
    import ray

    return sum(1 for n in ray.nodes() if n.get("Alive")) if ray.is_initialized() else 1


def actor_restarted() -> bool:
    """Whether the calling actor has been restarted. Ray's own
    ``was_current_actor_reconstructed`` reads its deprecated ``actor_id`` property and so
    prints a RayDeprecationWarning in every actor that asks; that one warning is dropped."""
    import ray

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s).*Use get_actor_id\(\) instead", category=DeprecationWarning)
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)
