"""Shared fixtures: one small local Ray for the whole session (see shared/RAY_NOTES.md)."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("WANDB_MODE", "offline")

RAY_FIXTURES = {"ray_local", "no_local_ray"}


# Seconds each of the longest modules took on one of two xdist workers (2 CPUs, a full suite
# of 2026-12-05 timed per test; test_jobs.py since cut to one job, test_sweep_ray.py to a
# two-trial fixture). scripts/test.sh hands whole modules to the workers in collection order
# (``--dist loadfile --no-loadscope-reorder``); longest first keeps the last module a short
# one, so neither worker idles long while the other finishes. A stale figure costs only that
# balance.
MODULE_SECONDS = {
    "sweep/test_sweep_ray.py": 445, "test_distributed.py": 325, "transfer/test_transfer_ray.py": 176,
    "online/test_online_ray.py": 140, "test_committee_run.py": 128, "test_jobs.py": 100, "test_multinode.py": 95,
    "test_signal_modes.py": 85, "signals/test_representations.py": 75,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules that run Ray first, the longest of them first (``MODULE_SECONDS``), each
    module's tests in their own order."""
    ray_files = {item.path for item in items if RAY_FIXTURES & set(getattr(item, "fixturenames", ()))}
    here = os.path.dirname(__file__)

    def weight(item: pytest.Item) -> tuple[bool, int]:
        return item.path not in ray_files, -MODULE_SECONDS.get(os.path.relpath(item.path, here), 0)

    items.sort(key=weight)


@pytest.fixture(scope="session")
def _ray_session() -> Iterator[None]:
    yield
    import ray

    ray.shutdown()


@pytest.fixture(scope="module")
def ray_local(_ray_session: None) -> Iterator[None]:
    """A local Ray of 2 CPUs, started by the first module that needs it and kept for the
    next: its start and stop cost seconds each. A module that needs another cluster (its
    own head, two nodes) shuts it down first (``no_local_ray``); the next module using
    this fixture starts it again."""
    from recdistill.ray_env import ensure_ray

    ensure_ray(num_cpus=2)
    yield


@pytest.fixture(scope="module")
def no_local_ray() -> None:
    """No Ray in this process: for modules that start their own clusters."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def read_wandb_run():
    """``read_run(path to run-<id>.wandb)``: an offline W&B run read back (tests/wandb_records.py)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("wandb_records", Path(__file__).with_name("wandb_records.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.read_run
