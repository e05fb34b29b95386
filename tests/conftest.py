"""Shared fixtures: one local Ray per test module, kept small (see shared/RAY_NOTES.md)."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    from recdistill.ray_env import ensure_ray

    ensure_ray(num_cpus=2)
    yield
    ray.shutdown()
