"""The smoke test: the same experiment shrunk to check its wiring in a minute or two.

Spelled once, as dotted overrides of the experiment's config: a run applies them to its
config (``smoke_test``), a sweep puts them under every trial's overrides, so a trial's
own values still win over them.
"""

from __future__ import annotations

import dataclasses

from recdistill.config import ExperimentConfig, apply_override, config_from_dict, unexpanded

# Small enough to finish in about a minute on 2 CPU cores, through every stage.
SMOKE_ROWS = 20_000
SMOKE_DAYS = 2


def smoke_overrides(cfg: ExperimentConfig) -> list[str]:
    """The overrides that shrink ``cfg`` to a smoke test: a tiny log (synthetic sources
    only; a real log keeps its rows), small models, one pass, at most 5 windows."""
    out: list[str] = []
    data = cfg.data
    if data.source == "synthetic":
        # shift events keep their place relative to the log's length
        days = sorted({min(SMOKE_DAYS - 1, d * SMOKE_DAYS // data.days) for d in data.synthetic.drift.shift_days})
        out += [f"data.rows={SMOKE_ROWS}", f"data.days={SMOKE_DAYS}", "data.synthetic.num_users=2000",
                "data.synthetic.max_cardinality=20000", f"data.synthetic.drift.shift_days={days}"]
    # large batches where the data would size them: a smoke test checks the path, not the fit
    out += ["teacher.embed_dim=8", "teacher.depth=1", "teacher.width=32", "teacher.epochs=1"]
    if cfg.teacher.batch_size == "auto":
        out.append("teacher.batch_size=4096")
    # the students of the experiment's own file (a committee's generated variants take their base's shape)
    for i, s in enumerate(unexpanded(cfg)["students"]):
        out += [f"students.{i}.embed_dim=4", f"students.{i}.depth=1", f"students.{i}.width=16",
                f"students.{i}.epochs=1", f"students.{i}.tower_width={min(s['tower_width'], 16)}"]
        if s["batch_size"] == "auto":
            out.append(f"students.{i}.batch_size=2048")
    return out + [f"stream.windows={min(cfg.stream.windows, 5)}",
                  f"stream.batch_windows={min(cfg.stream.batch_windows, 2)}",
                  f"stream.replay_capacity={min(cfg.stream.replay_capacity, 5000)}",
                  f"transfer.eval_every={min(cfg.transfer.eval_every, 10)}",
                  f"transfer.eval_rows={min(cfg.transfer.eval_rows, 5000)}"]


def smoke_test(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` shrunk by ``smoke_overrides``, run under ``<run.name>-smoke``."""
    raw = unexpanded(cfg)
    for override in smoke_overrides(cfg):
        apply_override(raw, override)
    shrunk = config_from_dict(raw)
    # the name set directly: as an override value a name like "2024" would read as YAML
    return dataclasses.replace(shrunk, run=dataclasses.replace(shrunk.run, name=f"{cfg.run.name}-smoke"))
