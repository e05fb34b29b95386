"""Search spaces: Python files mapping experiment-config paths to Ray Tune distributions.

A file defines ``SPACE`` (and may define other spaces, picked with ``FILE.py:NAME``) and
optionally ``NUM_SAMPLES``. Keys are dotted config paths (``students.0.alpha``); a tuple
of paths ties them to one value (``("students.0.depth", "students.0.width")`` over
``(2, 64)`` pairs). Values are Tune domains, ``tune.grid_search`` lists or constants.

Trials are resolved here, before Tune starts, as Tune's own variant generator would
(grid points × ``num_samples`` random draws), so the sweep knows every trial's teacher
key up front and trains each distinct teacher once.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recdistill.config import ConfigError, ExperimentConfig, load_config

Key = str | tuple[str, ...]


@dataclass
class SearchSpace:
    name: str
    doc: str
    space: dict[Key, Any]
    num_samples: int

    @property
    def paths(self) -> list[str]:
        return [p for k in self.space for p in (k if isinstance(k, tuple) else (k,))]


def load_space(spec: str) -> SearchSpace:
    """``path/to/file.py`` (its ``SPACE``) or ``path/to/file.py:NAME``."""
    path, _, attr = spec.partition(":")
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"search space {path!r} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"recdistill_space_{p.stem}", p)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # the file is user code: say which file broke
        raise ConfigError(f"search space {path!r} failed to load: {type(e).__name__}: {e}") from e
    attr = attr or "SPACE"
    space = getattr(module, attr, None)
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"search space {path!r}: expected a non-empty dict named {attr}")
    return SearchSpace(f"{p.stem}" + (f":{attr}" if attr != "SPACE" else ""), (module.__doc__ or "").strip(),
                       space, int(getattr(module, "NUM_SAMPLES", 1)))


def _grid_values(v: Any) -> list[Any] | None:
    if isinstance(v, dict) and set(v) == {"grid_search"}:
        return list(v["grid_search"])
    return None


def _draw(v: Any, rng: np.random.Generator) -> Any:
    from ray.tune.search.sample import Domain

    if isinstance(v, Domain):
        # Tune's samplers take a numpy Generator as their random state
        return v.sample(random_state=rng)
    return v


def _override(path: str, value: Any) -> str:
    return f"{path}={json.dumps(value)}"


def trial_overrides(space: SearchSpace, num_samples: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Every trial's values by config path: the grid's product, each point drawn
    ``num_samples`` times for the random parts, in a reproducible order."""
    n = num_samples or space.num_samples
    rng = np.random.default_rng(seed)
    grid_keys = [k for k, v in space.space.items() if _grid_values(v) is not None]
    grids = list(itertools.product(*[_grid_values(space.space[k]) for k in grid_keys])) or [()]
    trials = []
    for point in grids:
        for _ in range(n):
            values: dict[str, Any] = {}
            for k, v in space.space.items():
                val = point[grid_keys.index(k)] if k in grid_keys else _draw(v, rng)
                if isinstance(k, tuple):
                    if not isinstance(val, (tuple, list)) or len(val) != len(k):
                        raise ConfigError(f"search space {space.name}: key {k} needs {len(k)}-tuples, got {val!r}")
                    values.update(dict(zip(k, val)))
                else:
                    values[k] = val
            trials.append({p: (v.item() if isinstance(v, np.generic) else v) for p, v in values.items()})
    return trials


def trial_config(base: str | Path | None, overrides: list[str], values: dict[str, Any]) -> ExperimentConfig:
    return load_config(base, [*overrides, *(_override(p, v) for p, v in values.items())])


def check_space(space: SearchSpace, base: str | Path | None = None, overrides: list[str] = ()) -> int:
    """Every path exists and every drawn trial is accepted by the config (one draw per grid
    point), its values together: one key may need another (semantic IDs need the teacher's
    representations). Returns the number of trials. Raises ConfigError naming the trial."""
    trials = trial_overrides(space, 1, seed=random.Random(0).randrange(2**31))
    for values in trials:
        try:
            trial_config(base, list(overrides), values)
        except ConfigError as e:
            shown = ", ".join(f"{p}={v!r}" for p, v in values.items())
            raise ConfigError(f"search space {space.name}: trial {shown}: {e}") from e
    return len(trials) * space.num_samples
