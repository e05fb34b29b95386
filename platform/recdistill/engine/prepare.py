"""The experiment's log made model-ready: splits, the auto keys sized by the train split,
encoding, and the train split tagged (history / students' window / recency) and
ordered. Above data/ and ``sizing``: it is where the log meets the config's defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from recdistill import sizing
from recdistill.config import ExperimentConfig
from recdistill.data.datasource import new_ledger, read_rejects
from recdistill.data.hold import LogHold
from recdistill.data.log import raw_splits, synthetic_dir
from recdistill.data.preprocess import Preprocessor, build_preprocessor, fit_vocab, oov_counts
from recdistill.data.rejects import RejectTally
from recdistill.data.schema import LogSchema
from recdistill.data.windows import resolve_shuffle, shuffled_train, tag_history
from recdistill.train.plan import recent_cuts


@dataclass
class PreparedLog:
    """Model-ready splits of the experiment's log (Ray Datasets) and how they were made."""

    schema: LogSchema
    preprocessor: Preprocessor
    splits: dict[str, Any]  # "train" (tagged: windows.tag_history), "valid", "test" → encoded Dataset
    ledger: Any  # RejectLedger: call rejects() after the splits were consumed
    cfg: ExperimentConfig  # the config with every auto key resolved (sizing.resolve): train with this one
    shuffle: str = "none"  # the resolved data.shuffle the train split is ordered by
    split_sources: dict[str, str] = field(default_factory=dict)  # split → where its rows come from
    derived: dict[str, Any] = field(default_factory=dict)  # what sizing.resolve derived, from what
    raw: dict[str, Any] = field(default_factory=dict)  # the splits before encoding (lazy): another encoder's view
    hold: dict[str, Any] = field(default_factory=dict)  # data.hold.LogHold.describe(): read once and held, or streamed

    def rejects(self) -> RejectTally:
        return read_rejects(self.ledger)

    def describe(self) -> dict[str, Any]:
        """What results.json says about the data: the training order, where each split came
        from, and the test rows whose ids training never saw (one distributed pass)."""
        return {"shuffle": self.shuffle, "split_sources": dict(self.split_sources),
                "oov_test": oov_counts(self.splits["test"], self.preprocessor), "derived": self.derived,
                "hold": self.hold}


def prepare_log(cfg: ExperimentConfig, *, progress: Any = None, log: Callable[[str], None] | None = None,
                raw_train_hook: Callable[[Any], Any] | None = None) -> PreparedLog:
    """Open → splits (``data.log.raw_splits``) → auto keys resolved (``sizing``) →
    (vocabulary fitted on train only) → encode every split → train split tagged and ordered.

    The statistics pass and the vocabulary see the train split only, so OOV counts on test
    are honest. The train split is tagged history / students' window / recency
    (``windows.tag_history``), then data.shuffle orders it (``windows.shuffled_train``).
    ``PreparedLog.cfg`` is the resolved config: the engines train with it and write it as
    config.yaml.
    """
    from recdistill.data.shuffle_strategy import use_shuffle_strategy
    from recdistill.engine.cut_memo import cut_memo

    use_shuffle_strategy(cfg.platform.shuffle_strategy)
    ledger = new_ledger()
    # one memo for the split and history cuts: its keys leave out the sizing-only keys that
    # resolving the config fills in, so the resolved config's cuts are this log's
    memo = cut_memo(cfg, log)
    hold = LogHold(cfg.platform.hold_log, log)
    raw, schema, sources, below = raw_splits(cfg, ledger, progress, memo, hold)
    cfg, derived = _resolve_auto(cfg, schema, raw, log)
    data = cfg.data
    vocab = fit_vocab(raw["train"], schema, data.min_count) if data.encoding == "vocab" else None
    pre = build_preprocessor(schema, data, vocab)
    # a hook adds columns to the raw train rows (an old model's logit: transfer.old_model);
    # the encoder passes columns it does not encode through
    encoded = {name: (raw_train_hook(split) if raw_train_hook is not None and name == "train" else split)
               .map_batches(pre, batch_format="pyarrow") for name, split in raw.items()}
    shuffle = resolve_shuffle(data.shuffle, schema.has_ts)
    cuts = recent_cuts(cfg)
    if shuffle != "none":
        encoded["train"] = shuffled_train(encoded["train"], schema.order_column, cfg.teacher.history_fraction,
                                          shuffle, data.seed, cuts, memo, cut_on=raw["train"], below=below)
    else:
        encoded["train"], _ = tag_history(encoded["train"], schema.order_column, cfg.teacher.history_fraction, cuts,
                                          memo, cut_on=raw["train"], below=below)
    return PreparedLog(schema, pre, encoded, ledger, cfg, shuffle, sources, derived, raw, hold.describe())


def _resolve_auto(cfg: ExperimentConfig, schema: LogSchema, raw: dict[str, Any],
                  log: Callable[[str], None] | None) -> tuple[ExperimentConfig, dict[str, Any]]:
    """The config with its auto keys sized by the train split (one cached pass; none when
    nothing is auto)."""
    if not sizing.needs_pass(cfg):
        return cfg, {}
    fields = sizing.sketched_fields(cfg, schema)
    stats = _synthetic_stats(cfg) if not fields else None
    if stats is None:
        stats = sizing.cached_stats(cfg, fields, lambda: sizing.measure(raw["train"], raw["valid"], fields))
    return sizing.resolve_and_print(cfg, stats, log or print)


def resolved_if_known(cfg: ExperimentConfig) -> ExperimentConfig | None:
    """``cfg`` with its auto keys resolved as a run of it will resolve them, from what is known
    without reading the log: a synthetic log's manifest, or the statistics an earlier run of
    the log kept in the store; None when only a pass could say. Keys of the resolved config
    (teacher, raw student) are those the run will store its models under."""
    if not sizing.needs_pass(cfg):
        return cfg
    fields: tuple[str, ...] | None = None
    stats = None
    if cfg.data.source == "synthetic":
        from recdistill.data.synthetic import synthetic_schema

        fields = sizing.sketched_fields(cfg, synthetic_schema(cfg.data.synthetic))
        stats = _synthetic_stats(cfg) if not fields else None
    stats = stats or sizing.stored_stats(cfg, fields)
    return sizing.resolve(cfg, stats)[0] if stats is not None else None


def resolved_like_a_run(cfg: ExperimentConfig, *, read: bool) -> ExperimentConfig | None:
    """``cfg`` resolved as ``prepare_log`` will resolve it in a run: from what is known
    (``resolved_if_known``), else (``read``) by the run's own statistics pass, done here and
    kept in the store, so the run finds it there. None for an online config (it is sized by
    the whole log, ``sizing.resolve_for_stream``) or when nothing is known and ``read`` is off."""
    if cfg.stream.enabled:
        return None
    known = resolved_if_known(cfg)
    if known is not None or not read:
        return known
    from recdistill.engine.cut_memo import cut_memo

    raw, schema, _, _ = raw_splits(cfg, new_ledger(), memo=cut_memo(cfg))
    return _resolve_auto(cfg, schema, raw, lambda _: None)[0]


def _synthetic_stats(cfg: ExperimentConfig) -> Any:
    """A synthetic log's split sizes from its manifest (rows and positives as generated; the
    time splits cut equal-count quantiles), so sizing it needs no pass; None for other logs."""
    from recdistill.data.synthetic import verified_manifest

    if cfg.data.source != "synthetic":
        return None
    manifest = verified_manifest(synthetic_dir(cfg))
    if manifest is None:
        return None
    rows, positives = manifest["summary"]["rows"], manifest["summary"]["positives"]
    keep = cfg.data.negative_keep_rate  # the experiment's own down-sampling, after generation
    rows = positives + (rows - positives) * keep
    f_train, f_valid, _ = cfg.data.splits
    return sizing.TrainStats(int(round(rows * f_train)), int(round(positives * f_train)), int(round(rows * f_valid)))
