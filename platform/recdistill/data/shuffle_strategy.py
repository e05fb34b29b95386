"""Which Ray Data shuffle the platform's all-to-all steps use (the vocabulary's groupby,
the window shuffle's sort): ``platform.shuffle_strategy``.

Measured with ray 2.60 on a 2-CPU node (benchmarks/bench_data.py, "shuffle"): Ray's
default there, ``shuffle_v2``, costs 3.5–4.9 s per sort or groupby even of 600 rows;
the pull-based sort shuffle does the same in 0.05–0.15 s. On one node no shuffle saves
network traffic, and the pull-based shuffle's M × R intermediate blocks stay in one object
store, so ``auto`` takes it there; across nodes it keeps Ray's default (set by Ray's own
``RAY_DATA_DEFAULT_SHUFFLE_STRATEGY``), which is built for that scale.
"""

from __future__ import annotations

from recdistill.ray_env import alive_nodes

AUTO = "auto"
RAY_DEFAULT = "ray"
ONE_NODE = "sort_shuffle_pull_based"


def choose(setting: str, nodes: int, ray_default: str) -> str:
    """The strategy for ``setting`` on a cluster of ``nodes`` alive nodes, where Ray's own
    default is ``ray_default``."""
    if setting == RAY_DEFAULT or (setting == AUTO and nodes > 1):
        return ray_default
    return ONE_NODE if setting == AUTO else setting


def use_shuffle_strategy(setting: str) -> str:
    """Set this process's Ray Data shuffle strategy for the datasets it creates from now
    on (a dataset keeps the context it was created with); the strategy set."""
    from ray.data import DataContext
    from ray.data.context import DEFAULT_SHUFFLE_STRATEGY, ShuffleStrategy

    chosen = ShuffleStrategy(choose(setting, alive_nodes(), DEFAULT_SHUFFLE_STRATEGY))
    DataContext.get_current().shuffle_strategy = chosen
    return chosen.value
