"""TokenMinds' shared vocabulary: does one scenario's student gain from the other scenario's
data through the teacher's semantic IDs?

    .venv/bin/python benchmarks/bench_shared_vocabulary.py [--rows 300000] [--seeds 3] [--out runs/shared-vocab]

A synthetic log with two scenarios (``data.synthetic.scenarios=2``): the same users, each
scenario showing items of its own catalogue. For each scenario S, two runs that differ only
in what the teacher (and so its representations and its codebook) learned from:

- **alone**: S's rows only;
- **shared**: S's rows plus the other scenario's rows of the teacher-only history (the
  earliest part of the train split, before the students' window).

Everything the students see is the same in both runs: S's rows of the students' window
(the history cut is placed at the same time and each student takes the same share of that
window; the script checks that both runs' streams and students have the same rows), S's validation and test rows, the encoding (one bucket mapping for
both), the seeds. The students are those of ``jobs/configs/tokenminds.yaml``: ``plain``
(its raw model is the baseline, its distilled one KD only) and ``codes`` (the user's and
the item's semantic IDs as fields; raw: codes only, distilled: codes + KD). So a difference
between the runs is the other scenario's data reaching S's students through the teacher:
its logits (KD) and its vocabulary (the codes). ``recdistill compare`` gives each
difference with its 95% interval over the seeds and S's test rows, paired seed by seed.

This is a scenario built to expose an effect (TokenMinds' claim), and says so: the other
scenario's rows are given to the teacher only, so that the students' own data stays put.
Written: ``<out>/shared_vocabulary.json`` and ``.md``, and each run's directory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
SPLITS = (0.8, 0.9)  # train | valid | test cut in time over the whole log
HISTORY = 0.5  # the share of a scenario's own train rows that only the teacher learns from
STUDENT = {"arch": "dcnv2", "embed_dim": 8, "depth": 1, "width": 32, "tower_width": 32, "sampling_ratio": 0.3,
           "epochs": 2}  # jobs/configs/tokenminds.yaml's students


def whole_log(rows: int, days: int, seed: int, out: Path) -> tuple[pa.Table, dict[str, int]]:
    """The two-scenario synthetic log, generated (or found) under ``out``, in time order;
    and its fields' cardinalities."""
    sys.path.insert(0, str(ROOT / "platform"))
    from recdistill.config import load_config
    from recdistill.data.log import ensure_synthetic
    from recdistill.data.synthetic import synthetic_schema

    cfg = load_config(None, [f"data.rows={rows}", f"data.days={days}", f"data.seed={seed}",
                             "data.synthetic.scenarios=2"])
    ensure_synthetic(cfg.data, out)
    table = pa.concat_tables(pq.read_table(p) for p in sorted(out.glob("*.parquet")))
    schema = synthetic_schema(cfg.data.synthetic)
    return table.sort_by("ts"), dict(zip(schema.categorical, schema.cardinalities))


def _write(table: pa.Table, like: pa.Schema, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.cast(like), path)  # keeps the recdistill schema metadata: its fields' roles
    return str(path)


def scenario_logs(log: pa.Table, scenario: int, out: Path) -> dict[str, Any]:
    """For ``scenario``: its valid and test files, and the train file and history cut of each
    arm. The history cut of the shared arm is placed where the alone arm's falls, so both arms'
    students' windows hold the same rows."""
    ts = log.column("ts").to_numpy()
    cut_valid, cut_test = (ts[int(q * len(ts))] for q in SPLITS)
    split = np.searchsorted([cut_valid, cut_test], ts, side="right")
    mine = log.column("scenario").to_numpy() == scenario
    train, other = log.filter(pa.array((split == 0) & mine)), log.filter(pa.array((split == 0) & ~mine))
    t_cut = train.column("ts").to_numpy()[int(HISTORY * train.num_rows)]
    own_history = int((train.column("ts").to_numpy() < t_cut).sum())
    other_history = other.filter(pc.less(other.column("ts"), t_cut))
    shared = pa.concat_tables([train, other_history]).sort_by("ts")
    files = {"valid": _write(log.filter(pa.array((split == 1) & mine)), log.schema, out / "valid.parquet"),
             "test": _write(log.filter(pa.array((split == 2) & mine)), log.schema, out / "test.parquet")}
    arms = {"alone": (train, own_history / train.num_rows),
            "shared": (shared, (own_history + other_history.num_rows) / shared.num_rows)}
    return {**files, "arms": {name: {"train": _write(t, log.schema, out / name / "train.parquet"),
                                     "history_fraction": frac, "train_rows": t.num_rows,
                                     "other_scenario_rows": t.num_rows - train.num_rows}
                              for name, (t, frac) in arms.items()}}


def run_arm(name: str, files: dict[str, Any], arm: dict[str, Any], buckets: dict[str, int], seeds: int,
            out: Path, extra: list[str]) -> dict[str, Any]:
    """One arm's run (``recdistill run``, its seeds); its results.json."""
    import yaml

    # sampling_ratio is a share of the train split; the students take the same share of the
    # same window in both arms (train.plan: ratio / (1 - history_fraction) of the window)
    student = {**STUDENT, "sampling_ratio": STUDENT["sampling_ratio"] / (1 - HISTORY) * (1 - arm["history_fraction"])}
    config = {
        "data": {"source": "parquet", "path": arm["train"], "valid_path": files["valid"],
                 "test_path": files["test"], "buckets": buckets},
        "teacher": {"arch": "dcnv2", "embed_dim": 16, "depth": 3, "width": 256,
                    # the share of its train rows before the scenario's own cut (scenario_logs)
                    "history_fraction": arm["history_fraction"], "representations": True,
                    "semantic_ids": {"levels": 3, "codes": 64}},
        "students": [{"name": "plain", **student}, {"name": "codes", **student,
                                                    "representations": {"codes": ["user", "item"]}}],
        # the codebook is fitted on the blocks that end inside the teacher's history: at 300k rows a
        # scenario's history is 60k rows, which the default 64k-row blocks would overrun
        "platform": {"signal_block_rows": 16_384},
        "run": {"name": name, "seeds": seeds, "dir": str(out / name), "serving": "off"},
        "tracking": {"wandb": "disabled"},
    }
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    t0 = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).with_name("recdistill")), "run", str(path), "--overwrite", *extra],
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{name}: recdistill run failed\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    results = json.loads((out / name / "results.json").read_text())
    print(f"[{name}] {time.perf_counter() - t0:.0f} s, teacher AUC {results['teacher']['auc']:.4f}", flush=True)
    return results


def _seed_results(run_dir: Path) -> list[dict[str, Any]]:
    """Each seed's results.json of a run (a run of one seed is its own)."""
    paths = sorted(run_dir.glob("seeds/seed-*/results.json")) or [run_dir / "results.json"]
    return [json.loads(p.read_text()) for p in paths]


def _codebook(run_dir: Path) -> dict[str, Any]:
    """The first seed's codebook: the values it was fitted on and its quality per level."""
    sid = _seed_results(run_dir)[0]["teacher"].get("semantic_ids", {})
    return {"fitted_on": sid.get("fitted_on"), "quality": sid.get("quality")}


def _stream_rows(run_dir: Path) -> list[int]:
    return [r["platform"]["stream_rows"] for r in _seed_results(run_dir)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=300_000, help="rows of the two-scenario synthetic log")
    ap.add_argument("--days", type=int, default=6, help="days the log spans")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per run (paired across the arms)")
    ap.add_argument("--data-seed", type=int, default=0, help="the synthetic log's seed")
    ap.add_argument("--scenarios", default="0,1", help="which scenarios to measure (comma-separated)")
    ap.add_argument("--out", default="runs/shared-vocab", help="output directory")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="overrides for both arms' runs (e.g. platform.signal_block_rows=4096 on a small log)")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    os.environ.setdefault("WANDB_MODE", "offline")
    from recdistill.compare import compare

    log, cards = whole_log(args.rows, args.days, args.data_seed, out / "log")
    # one encoding for every arm: each field's known cardinality, as a synthetic run would use
    buckets = {name: card + 2 for name, card in cards.items()}
    report: dict[str, Any] = {"rows": args.rows, "days": args.days, "seeds": args.seeds, "scenarios": {}}
    for s in (int(x) for x in args.scenarios.split(",")):
        files = scenario_logs(log, s, out / f"scenario{s}")
        runs = {arm: run_arm(f"s{s}-{arm}", files, files["arms"][arm], buckets, args.seeds, out, args.set)
                for arm in ("alone", "shared")}
        rows = [_stream_rows(out / f"s{s}-{arm}") for arm in ("alone", "shared")]
        if rows[0] != rows[1]:
            raise SystemExit(f"scenario {s}: the arms' students' windows differ ({rows[0]} vs {rows[1]} rows): "
                             f"the history cut did not fall at the same time")
        trained = [[x["rows"] for x in runs[arm]["students"]] for arm in ("alone", "shared")]
        if trained[0] != trained[1]:
            raise SystemExit(f"scenario {s}: the arms' students trained on other rows ({trained[0]} vs {trained[1]})")
        dirs = [out / f"s{s}-alone", out / f"s{s}-shared"]
        cmp = {m: compare(dirs, metric=m) for m in ("auc_raw", "auc_distill", "teacher_auc")}
        codebook = {arm: _codebook(out / f"s{s}-{arm}") for arm in runs}
        report["scenarios"][str(s)] = {
            "arms": {arm: {k: v for k, v in files["arms"][arm].items() if k != "train"} for arm in runs},
            "window_rows": rows[0], "comparisons": cmp, "codebook": codebook}
        print(markdown_scenario(s, report["scenarios"][str(s)]), flush=True)
    (out / "shared_vocabulary.json").write_text(json.dumps(report, indent=1, default=str))
    md = "\n".join(markdown_scenario(int(s), r) for s, r in report["scenarios"].items())
    (out / "shared_vocabulary.md").write_text(md)
    print(f"wrote {out / 'shared_vocabulary.json'} and .md")


MODELS = {("plain", "auc_raw"): "raw (no KD, no codes)", ("plain", "auc_distill"): "KD only",
          ("codes", "auc_raw"): "codes only", ("codes", "auc_distill"): "codes + KD"}


def markdown_scenario(s: int, r: dict[str, Any]) -> str:
    """One scenario's table: each model's test AUC alone and shared, and the gain with its interval."""
    from recdistill.report.render import interval_text, verdict_text

    lines = [f"## Scenario {s}: the other scenario's history given to the teacher",
             f"students' window rows per seed: {r['window_rows']}; teacher train rows alone "
             f"{r['arms']['alone']['train_rows']:,}, shared {r['arms']['shared']['train_rows']:,}", "",
             "| model | alone | shared | shared − alone [95%] | |", "|---|---|---|---|---|"]
    for metric in ("teacher_auc", "auc_raw", "auc_distill"):
        c = r["comparisons"][metric]
        by_label = {e["entry"]: e for e in c["entries"]}
        # the teacher is the same in each student's entry: its first difference says it all
        for d in c["differences"][:1] if metric == "teacher_auc" else c["differences"]:
            name = "teacher" if metric == "teacher_auc" else \
                MODELS.get((d["entry"].rsplit(":", 1)[-1], metric), d["entry"])
            a, b = by_label[d["against"]], by_label[d["entry"]]
            lines.append(f"| {name} | {a['mean']:.4f} | {b['mean']:.4f} | {d['mean']:+.4f} "
                         f"{interval_text(d, '+.4f')} | {verdict_text(d)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
