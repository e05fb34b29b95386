"""The ``recdistill`` command line: parse, then call one library function."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path
from typing import Callable

from recdistill.config import ConfigError, ExperimentConfig, dump_config, load_config
from recdistill.run_dir import OVERWRITE_HELP, SWEEP_OVERWRITE_HELP


def _synth(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from recdistill.data.synthetic import generate

    overrides = list(args.overrides)
    for flag, key in ((args.rows, "data.rows"), (args.days, "data.days"), (args.seed, "data.seed")):
        if flag is not None:
            overrides.append(f"{key}={flag}")
    cfg = load_config(args.config, overrides)
    out = Path(args.out) if args.out else cfg.run.out_dir / "data"
    print(f"writing {cfg.data.rows:,} synthetic rows over {cfg.data.days} days to {out}", file=sys.stderr)
    with tqdm(total=cfg.data.rows, unit="rows", unit_scale=True, disable=args.quiet,
              file=sys.stderr) as bar:
        summary = generate(cfg.data, out, progress=bar.update)
    print("\n".join(summary.lines()))
    print(f"manifest        {out / '_manifest.json'}")
    return 0


def _config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """``[CONFIG] [key=value ...]``: a first positional that is an override, not a file, is one."""
    config, overrides = args.config, list(args.overrides)
    if config and "=" in config and not Path(config).exists():
        config, overrides = None, [config, *overrides]
    return load_config(config, overrides)


def _run(args: argparse.Namespace) -> int:
    from recdistill.smoke import smoke_test
    from recdistill.experiment import run_experiment

    cfg = _config_from_args(args)
    if args.overwrite:
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, overwrite=True))
    run_experiment(smoke_test(cfg) if args.smoke_test else cfg)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from recdistill.sweep.cli import sweep_command

    if args.overwrite:
        args.overrides = [*args.overrides, "run.overwrite=true"]
    sweep_command(args)
    return 0


def report_dir(directory: Path, log: Callable[[str], None] = print) -> None:
    """Rebuild the report of a run (batch, online or transfer) or of a sweep from its results.json."""
    from recdistill.report.render import write_html

    path = directory / "results.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no results.json here; expected a run or sweep directory")
    results = json.loads(path.read_text())
    if "trials" in results:
        from recdistill.report.sweep import write_sweep_report

        write_sweep_report(directory, results, None, log)
        return
    cfg_path = directory / "config.yaml"
    if not cfg_path.exists():
        raise ConfigError(f"{cfg_path}: a run directory needs the resolved config.yaml next to results.json")
    cfg = load_config(cfg_path)
    if "windows" in results:
        from recdistill.report.online import plot_auc_over_windows, report_markdown

        plot_auc_over_windows(results, directory / "auc_over_windows.png")
        (directory / "report.md").write_text(report_markdown(cfg, results))
    elif results.get("kind") == "transfer":
        from recdistill.report.transfer import plot_curves, report_markdown

        plot_curves(results, directory / "curves.png")
        (directory / "report.md").write_text(report_markdown(cfg, results))
    else:
        from recdistill.report.experiment import plots_for, report_markdown

        for name, plot in plots_for(results).items():
            plot(results, directory / name)
        (directory / "report.md").write_text(report_markdown(cfg, results))
    log(f"[report] {directory / 'report.md'}, {write_html(directory, cfg.run.name)}")


def _report(args: argparse.Namespace) -> int:
    report_dir(Path(args.dir))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from recdistill.compare import CompareError, compare, markdown, write_comparison

    try:
        c = compare([Path(p) for p in args.dirs], args.metric, args.by)
    except CompareError as e:
        raise ConfigError(str(e)) from None
    written = write_comparison(c, Path(args.out))
    print(markdown(c).split("\n\nEach entry is compared")[0])
    print(f"[compare] wrote {', '.join(map(str, written))}")
    return 0


def _score(args: argparse.Namespace) -> int:
    from recdistill.artifacts.score import describe, score
    from recdistill.ray_env import ensure_ray

    ensure_ray()
    result = score(args.model_dir, args.log, args.format, out=args.out, split=args.split, header=args.header,
                   error_budget=args.error_budget, batch_size=args.batch_size)
    print("\n".join(describe(result)))
    if args.json:
        Path(args.json).write_text(json.dumps(dataclasses.asdict(result), indent=2, default=str))
    return 0


def _export(args: argparse.Namespace) -> int:
    from recdistill.artifacts.export_dir import export_artifact

    batches: list = []
    if args.check_log:
        from recdistill.artifacts.score import encoded_batches
        from recdistill.ray_env import ensure_ray

        if not args.check_format:
            raise ConfigError("--check-log needs --check-format (the log's format)")
        ensure_ray()
        batches = list(encoded_batches(args.model_dir, args.check_log, args.check_format, split=args.check_split,
                                       limit=args.check_rows))
    for fmt in args.to:
        export_artifact(args.model_dir, fmt, Path(args.out) / fmt if args.out else None, batches)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from recdistill.data.inspect import inspect_log

    report = inspect_log(args.path, args.format, header=args.header, error_budget=args.error_budget)
    print("\n".join(report.lines()))
    return 0


def _config_show(args: argparse.Namespace) -> int:
    print(dump_config(_config_from_args(args)), end="")
    return 0


def _config_keys(args: argparse.Namespace) -> int:
    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        default = cls()
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, key + ".")
                continue
            inner = typing.get_args(tp)
            if typing.get_origin(tp) is list and inner and dataclasses.is_dataclass(inner[0]):
                walk(inner[0], key + ".N.")
                continue
            print(f"{key:48s} {getattr(default, f.name)!r:>14}  {f.metadata.get('help', '')}")

    walk(ExperimentConfig, "")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recdistill", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write the built-in synthetic click log as Parquet shards",
                       description="Generate the synthetic click log (true click probability known) "
                                   "and print a summary: rows, CTR, oracle AUC, per-day CTR.")
    s.add_argument("--rows", type=int, help="rows written, after negative down-sampling (data.rows)")
    s.add_argument("--days", type=int, help="days the log spans (data.days)")
    s.add_argument("--seed", type=int, help="generator seed (data.seed)")
    s.add_argument("--out", help="output directory (default <run.dir>/data)")
    s.add_argument("--config", help="experiment YAML whose data section to use")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.synthetic.zipf_exponent=1.2")
    s.set_defaults(fn=_synth)

    r = sub.add_parser("run", help="one experiment: teacher → N students, raw and distilled, η table",
                       description="Train the teacher (recording forward-distillation logits) and every "
                                   "student raw and distilled; write results.json, config.yaml, report.md to "
                                   "run.dir (default runs/<run.name>/). A directory that already holds a run's "
                                   "outputs is refused unless --overwrite. With run.engine=ray (default) it joins "
                                   "the Ray cluster named by RAY_ADDRESS or starts a local one.")
    r.add_argument("config", nargs="?", help="experiment YAML (e.g. jobs/configs/demo.yaml)")
    r.add_argument("overrides", nargs="*", help="dotted overrides, e.g. students.0.alpha=2 run.dir=/tmp/x")
    r.add_argument("--smoke-test", action="store_true",
                   help="shrink the experiment (tiny synthetic log, small models, one pass) to check the wiring")
    r.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    r.set_defaults(fn=_run)

    w = sub.add_parser("sweep", help="Ray Tune sweep over a search space, one teacher per distinct teacher key",
                       description="Resolve the space's trials, train each distinct teacher once, run the rest "
                                   "of the trials with Ray Tune on the stored signals; write results.json, "
                                   "report.md/html with plots and one W&B run per trial.")
    from recdistill.sweep.cli import add_sweep_args

    add_sweep_args(w)
    w.add_argument("--overwrite", action="store_true", help=SWEEP_OVERWRITE_HELP)
    w.set_defaults(fn=_sweep)

    rp = sub.add_parser("report", help="(re)write report.md and report.html of a run or sweep directory",
                        description="Rewrite the reports in place from results.json (not a new run: no --overwrite "
                                    "needed).")
    rp.add_argument("dir", help="a run directory (results.json + config.yaml) or a sweep directory")
    rp.set_defaults(fn=_report)

    cp = sub.add_parser("compare", help="runs and sweeps side by side, each figure with its 95%% interval",
                        description="One table and one plot of a metric across runs (one entry per student) and "
                                    "sweeps (one per trial), with 95% intervals over seeds and test rows, and each "
                                    "entry against its reference (the first entry of the same student, else the "
                                    "first entry): paired seed by seed when all ran the same seeds, a finding only "
                                    "when the interval excludes 0.")
    cp.add_argument("dirs", nargs="+", help="run or sweep directories (each holds results.json)")
    from recdistill.compare import METRICS

    cp.add_argument("--metric", default="eta", choices=list(METRICS),
                    help="what to compare (default eta): " + "; ".join(f"{k}: {v}" for k, v in METRICS.items()))
    cp.add_argument("--by", default=None, metavar="KEY",
                    help="a swept key of a sweep (e.g. teacher.signals): each trial against the trial with the same "
                         "other values and KEY at its first level, so each difference is that factor's effect")
    cp.add_argument("--out", default="runs/compare", help="where compare.json, report.md/html and compare.png go "
                                                          "(default runs/compare; rewritten in place)")
    cp.set_defaults(fn=_compare)

    sc = sub.add_parser("score", help="score a click log with a model artifact (runs/<run>/models/<model>/)",
                        description="Read LOG with the format's reader (Ray Data), encode it with the artifact's own "
                                    "preprocessing and score it in a map_batches actor pool (a GPU per actor when "
                                    "the cluster has them). Writes (row_id, logit, p) with p in population space "
                                    "(the training down-sampling undone); prints AUC, LogLoss and calibration when "
                                    "the log has labels, and the rows whose ids the model never saw, per field.")
    sc.add_argument("model_dir", help="a model artifact directory, e.g. runs/demo/models/decoupled/distill")
    sc.add_argument("log", help="file, directory or glob")
    sc.add_argument("--format", required=True, choices=["criteo", "avazu", "libsvm", "movielens", "parquet"],
                    help="log format (the synthetic log is parquet)")
    sc.add_argument("--out", help="write the scores here as Parquet (a directory); default: metrics only")
    from recdistill.artifacts.score import SPLITS

    sc.add_argument("--split", default="all", choices=list(SPLITS),
                    help="score every row (all, default), or re-cut LOG into the run's train/valid/test splits "
                         "as the run did and score one: with the run's own log, --split test gives back "
                         "results.json's test figures")
    sc.add_argument("--header", default="auto", choices=["auto", "yes", "no"], help="CSV header line")
    sc.add_argument("--error-budget", type=float, default=0.001,
                    help="largest share of rejected rows before failing (default 0.001)")
    sc.add_argument("--batch-size", type=int, default=16_384, help="rows per scoring batch (default 16384)")
    sc.add_argument("--json", help="also write the summary (rows, metrics, unseen ids, rejects) to this JSON file")
    sc.set_defaults(fn=_score)

    from recdistill.serving.export import FORMATS

    ex = sub.add_parser("export", help="export a model artifact's serving tower (TorchScript, ExportedProgram, ONNX)",
                        description="Export the main tower of a model artifact (a decoupled student's auxiliary tower "
                                    "is dropped, as it is served) with a dynamic batch size, put the preprocessing "
                                    "spec, vocabularies and sampling record beside it, and check its logits against "
                                    "the eager model's (to 1e-5) on random inputs and, with --check-log, on a log's "
                                    "rows. ONNX needs the optional extra: pip install 'recdistill[onnx]'.")
    ex.add_argument("model_dir", help="a model artifact directory, e.g. runs/demo/models/decoupled/distill")
    ex.add_argument("--to", nargs="+", required=True, choices=list(FORMATS), help="format(s) to export to")
    ex.add_argument("--out", help="directory for the exports, one subdirectory per format "
                                  "(default MODEL_DIR/export/<format>/)")
    ex.add_argument("--check-log", help="also compare on this log's rows (e.g. the run's log with --check-split test)")
    ex.add_argument("--check-format", choices=["criteo", "avazu", "libsvm", "movielens", "parquet"],
                    help="the --check-log's format")
    ex.add_argument("--check-split", default="all", choices=list(SPLITS), help="rows of --check-log (as `score`)")
    ex.add_argument("--check-rows", type=int, default=100_000, help="at most this many rows (default 100000)")
    ex.set_defaults(fn=_export)

    d = sub.add_parser("data", help="inspect click logs")
    dsub = d.add_subparsers(dest="data_command", required=True)
    i = dsub.add_parser("inspect", help="rows, CTR, per-field cardinality and missing rate, rejected rows",
                        description="Read a log with the platform's reader (Ray Data) and summarise it.")
    i.add_argument("path", help="file, directory or glob")
    i.add_argument("--format", required=True,
                   choices=["criteo", "avazu", "libsvm", "movielens", "parquet"], help="log format")
    i.add_argument("--header", default="auto", choices=["auto", "yes", "no"], help="CSV header line")
    i.add_argument("--error-budget", type=float, default=0.001,
                   help="largest share of rejected rows before failing (default 0.001)")
    i.set_defaults(fn=_inspect)

    c = sub.add_parser("config", help="show the resolved experiment config or list its keys")
    csub = c.add_subparsers(dest="config_command", required=True)
    cs = csub.add_parser("show", help="print the config after defaults, file and overrides")
    cs.add_argument("config", nargs="?", help="experiment YAML")
    cs.add_argument("overrides", nargs="*", help="dotted overrides, e.g. students.0.alpha=2")
    cs.set_defaults(fn=_config_show)
    ck = csub.add_parser("keys", help="list every config key with its default and meaning")
    ck.set_defaults(fn=_config_keys)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with dotted overrides allowed after flags too (``run CONFIG
    --overwrite key=value``): argparse takes a command's positionals in one go, so
    overrides that follow a flag would otherwise be refused."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*(args.overrides or []), *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    from recdistill.data.rejects import DataError
    from recdistill.run_dir import RunDirError

    args = parse_args(argv)
    try:
        return args.fn(args)
    except RunDirError as e:
        print(f"recdistill: {e}", file=sys.stderr)
        return 2
    except ConfigError as e:
        print(f"recdistill: config error: {e}", file=sys.stderr)
        return 2
    except DataError as e:
        # Raised inside a Ray task it arrives wrapped; the first line of the cause is the message.
        cause = getattr(e, "cause", None) or e
        print(f"recdistill: data error: {cause}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"recdistill: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        from recdistill.artifacts.model_dir import ArtifactError
        from recdistill.artifacts.score import ScoreError

        if not isinstance(e, (ArtifactError, ScoreError)):
            raise
        print(f"recdistill: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
