"""Shared fixtures: one small local Ray for the whole session (see shared/RAY_NOTES.md)."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("WANDB_MODE", "offline")

RAY_FIXTURES = {"ray_local", "no_local_ray"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules that run Ray first, each module's tests in their own order. scripts/test.sh
    hands whole modules to two xdist workers in this order (``--no-loadscope-reorder``): the
    Ray modules hold most of the suite's time, and one that starts last keeps one worker busy
    while the other idles (xdist's own order, most tests first, put the sweeps last)."""
    ray_files = {item.path for item in items if RAY_FIXTURES & set(getattr(item, "fixturenames", ()))}
    items.sort(key=lambda item: item.path not in ray_files)


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
