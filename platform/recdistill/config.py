"""Experiment configuration: one YAML file → typed dataclasses, with dotted overrides.

Every field carries help text and its constraints in ``metadata`` so that the loader can
reject a bad value with a message naming the key, the value and what is allowed, and so
that ``recdistill config --help``-style listings come from one place. Later issues add
fields by adding dataclass fields; the loader needs no change.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml


class ConfigError(ValueError):
    """A configuration key or value that cannot be accepted; the message names it."""


def opt(default: Any = dataclasses.MISSING, *, help: str, ge: float | None = None,
        gt: float | None = None, le: float | None = None, lt: float | None = None,
        default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with help text and numeric bounds checked at load time."""
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------------------- data


@dataclass
class DriftConfig:
    rotation_per_day: float = opt(
        0.05, ge=0.0,
        help="radians per day by which user- and context-side latent factors rotate "
             "(item-side factors stay put, so user-item affinities change slowly)")
    popularity_shift_per_day: float = opt(
        0.0, ge=0.0, le=1.0,
        help="fraction of the item catalogue by which the popularity ranking slides "
             "each day (yesterday's hits cool down)")
    shift_days: list[int] = opt(
        default_factory=list,
        help="days (0-based) on which an abrupt regime change happens")
    shift_magnitude: float = opt(
        0.7, ge=0.0, le=1.0,
        help="share of the first-order weights and user factors replaced at a shift "
             "event (0 = none, 1 = all); also the chance that an item/context field gets a "
             "new set of popular ids")
    shift_ctr_jump: float = opt(
        0.3, ge=0.0,
        help="at a shift event the click odds are multiplied or divided (coin flip per "
             "event) by 1 + this")


@dataclass
class SyntheticConfig:
    num_dense: int = opt(13, ge=0, help="dense, count-like, heavy-tailed fields (Criteo: 13)")
    num_categorical: int = opt(26, ge=1, help="categorical fields besides user_id/item_id (Criteo: 26)")
    min_cardinality: int = opt(10, ge=2, help="smallest categorical vocabulary")
    max_cardinality: int = opt(1_000_000, ge=2, help="largest categorical vocabulary; sizes are log-spaced between the two")
    zipf_exponent: float = opt(1.1, gt=0.0, help="Zipf exponent of id popularity (larger = heavier head)")
    num_users: int = opt(100_000, ge=1, help="distinct users")
    num_items: int = opt(50_000, ge=1, help="distinct items")
    user_side_fields: int = opt(8, ge=0, help="categorical fields that are attributes of the user (fixed per user)")
    item_side_fields: int = opt(8, ge=0, help="categorical fields that are attributes of the item (fixed per item)")
    warmup_days: int = opt(1, ge=0, help="days simulated before the log starts (not written) so users arrive with click histories")
    history_length: int = opt(10, ge=0, help="length of each user's history of recently clicked items (0 = no sequence feature)")
    latent_dim: int = opt(8, ge=1, help="dimension of the ground-truth latent factors (FM-style pairwise interactions)")
    dense_missing_rate: float = opt(0.2, ge=0.0, lt=1.0, help="largest per-field missing rate of dense fields (field rates spread from 0 to this)")
    negative_keep_rate: float = opt(
        0.125, gt=0.0, le=1.0,
        help="the generator's logging policy: probability of writing a negative row (positives "
             "are all written); recorded per row in `sample_rate`. 0.125 gives a Criteo-like "
             "~25% CTR; 1 = keep all")
    base_ctr: float = opt(0.04, gt=0.0, lt=1.0, help="mean click probability before negative down-sampling, on day 0")
    first_order_scale: float = opt(0.6, ge=0.0, help="std of the per-id first-order logit effects")
    pairwise_scale: float = opt(0.9, ge=0.0, help="std of the FM-style pairwise interaction term")
    higher_order_scale: float = opt(0.8, ge=0.0, help="std of the non-linear (random MLP) higher-order term")
    sequence_scale: float = opt(0.5, ge=0.0, help="weight of the user-history ↔ item affinity term")
    dense_scale: float = opt(0.3, ge=0.0, help="std of the dense-feature logit effect")
    drift: DriftConfig = opt(default_factory=DriftConfig, help="drift over time")
    segments: int = opt(
        0, ge=0, le=64,
        help="segments whose click model differs (0 = off, one click model for every row): each impression gets a "
             "uniformly drawn `segment` (a context field of this many values, written as a categorical column), "
             "and each segment has its own first-order weights and higher-order MLP, mixed with the shared ones "
             "by segment_strength. Makes a log where domain experts sliced by segment have something to know")
    segment_strength: float = opt(
        0.7, ge=0.0, le=1.0,
        help="segments > 0: how far a segment's first-order weights and MLP depart from the shared ones (each is "
             "sqrt(1-s²)·shared + s·own, so its scale stays put; 0 = the segments share one click model)")
    scenarios: int = opt(
        0, ge=0, le=16,
        help="scenarios (item surfaces) over the same users (0 = one surface): each impression gets a uniformly "
             "drawn `scenario` (a categorical column) and shows an item of that scenario's own catalogue, "
             "num_items // scenarios ids of item_id apart from the other catalogues. Users, their latent factors "
             "and their click histories are shared by every surface, so one surface's rows teach a model about "
             "the users of the other: TokenMinds' shared-vocabulary setting (benchmarks/bench_shared_vocabulary.py)")


@dataclass
class DataConfig:
    source: Literal["synthetic", "criteo", "avazu", "libsvm", "movielens", "parquet"] = opt(
        "synthetic", help="where rows come from: the built-in synthetic log or a real-log format")
    path: str | None = opt(
        None, help="file, directory or glob of the log (real formats); for synthetic, a "
                   "directory to cache the generated shards in (default: <run.dir>/data). Files are "
                   "read in sorted path order; where the format has no time column that order (then "
                   "line) is the log's order, else rows are ordered by time whatever the file order")
    valid_path: str | None = opt(
        None, help="file, directory or glob of the validation split (same format as data.path). "
                   "Given: it is the valid split, and data.splits cuts only data.path (see splits)")
    test_path: str | None = opt(
        None, help="file, directory or glob of the test split (same format as data.path). Given: it "
                   "is the test split, and data.splits cuts only data.path (see splits). Test ids "
                   "the train split never had map to OOV and are counted per field in results.json")
    rows: int = opt(200_000, ge=1, help="synthetic: rows written, after negative down-sampling")
    days: int = opt(7, ge=1, help="synthetic: days the log spans")
    seed: int = opt(0, help="seed of the data's own randomness: the synthetic generator (same seed → "
                            "same bytes), negative_keep_rate's coins and data.shuffle's order")
    negative_keep_rate: float = opt(
        1.0, gt=0.0, le=1.0,
        help="experiment-level negative down-sampling of any source (a Ray Data step after "
             "reading): keep each negative with this probability; multiplies into `sample_rate`")
    shard_rows: int = opt(250_000, ge=1000, help="synthetic: rows per Parquet shard")
    synthetic: SyntheticConfig = opt(default_factory=SyntheticConfig, help="synthetic click model")
    header: Literal["auto", "yes", "no"] = opt("auto", help="CSV formats: whether the first line is a header")
    encoding: Literal["hash", "vocab"] = opt(
        "hash", help="categorical encoding: hash into buckets, or a vocabulary with min_count → OOV bucket")
    hash_buckets: int = opt(
        1_000_003, ge=2, help="the most hash buckets a field gets (encoding=hash); a field's known cardinality "
                              "(synthetic) or data.buckets' measured size is used when smaller")
    buckets: dict[str, int] | Literal["auto", "max"] = opt(
        "auto", help="hash buckets per field (encoding=hash). auto: one statistics pass over the train split "
                     "counts each field's distinct ids (HyperLogLog, ~1% error) and gives it "
                     "buckets_per_distinct × that, at least min_buckets and at most hash_buckets; the sizes are "
                     "printed and written into the run's config.yaml as a mapping. max: hash_buckets for every "
                     "field. A mapping {field: buckets} sets them (fields not named get hash_buckets)")
    buckets_per_distinct: float = opt(
        2.0, ge=1.0, help="buckets=auto: buckets per measured distinct id (2 → a table half full, so most ids "
                          "that share a bucket are rare ones)")
    min_buckets: int = opt(1024, ge=2, help="buckets=auto: the fewest buckets a hashed field gets (small fields "
                                            "then collide almost never, at a negligible cost)")
    min_count: int = opt(10, ge=1, help="encoding=vocab: ids seen fewer times map to the OOV bucket (CrossAdapt: 10 Criteo, 5 Avazu)")
    dense_transform: Literal["log1p", "none"] = opt("log1p", help="dense transform: sign(x)·log1p(|x|), or raw values")
    dense_fill: float = opt(0.0, help="value given to missing dense features (after the transform)")
    error_budget: float = opt(0.001, ge=0.0, le=1.0, help="largest share of rejected rows before reading fails")
    splits: list[float] = opt(
        default_factory=lambda: [0.8, 0.1, 0.1],
        help="time-ordered train/valid/test fractions of data.path (must sum to 1). With "
             "valid_path and test_path both given, data.path is all train and splits is unused; "
             "with only test_path, data.path is cut into train/valid in the ratio "
             "splits[0]:splits[1] (default 0.8:0.1 → 8/9 train, 1/9 valid); with only "
             "valid_path, into train/test in the ratio splits[0]:splits[2]")
    shuffle: Literal["auto", "none", "window", "global"] = opt(
        "auto", help="training order of the train split, seeded by data.seed and the same on every "
                     "engine and run: none = log order; window = shuffled within the teacher-only "
                     "history and within the students' window (history still first); global = the "
                     "whole train split shuffled (the students' window is still the later rows). "
                     "auto = none for logs with a time column, window for logs without. Shuffled train rows get a permuted row_id (a seeded "
                     "bijection, negative, so never equal to a valid/test id); results.json says "
                     "which order a run used (data.shuffle)")

    def check(self) -> None:
        if len(self.splits) != 3 or any(s < 0 for s in self.splits) or abs(sum(self.splits) - 1) > 1e-6:
            raise ConfigError(f"data.splits={self.splits!r}: expected three non-negative fractions "
                              f"(train, valid, test) summing to 1")
        if self.splits[0] <= 0 and not (self.valid_path and self.test_path):
            raise ConfigError(f"data.splits={self.splits!r}: the train fraction must be positive")
        if (self.valid_path or self.test_path) and self.source == "synthetic":
            raise ConfigError("data.valid_path / data.test_path need a real log (data.source is synthetic, "
                              "whose splits are cut by time from the generated log)")
        if self.source != "synthetic" and not self.path:
            raise ConfigError(f"data.path is required when data.source={self.source!r}")
        syn = self.synthetic
        if syn.min_cardinality > syn.max_cardinality:
            raise ConfigError(f"data.synthetic.min_cardinality={syn.min_cardinality} exceeds "
                              f"max_cardinality={syn.max_cardinality}")
        if syn.user_side_fields + syn.item_side_fields > syn.num_categorical:
            raise ConfigError(
                f"data.synthetic.user_side_fields + item_side_fields = "
                f"{syn.user_side_fields + syn.item_side_fields} exceeds num_categorical={syn.num_categorical}")
        if syn.scenarios == 1 or syn.scenarios > syn.num_items:
            raise ConfigError(f"data.synthetic.scenarios={syn.scenarios}: expected 0 (one surface) or 2.."
                              f"{min(16, syn.num_items)} scenarios, each with its own catalogue of at least one of "
                              f"num_items={syn.num_items}")
        bad = [d for d in syn.drift.shift_days if not 0 <= d < self.days]
        if bad:
            raise ConfigError(f"data.synthetic.drift.shift_days={syn.drift.shift_days}: days {bad} "
                              f"are outside 0..{self.days - 1} (data.days={self.days})")


# ------------------------------------------------------------------ models and KD

@dataclass
class SemanticIdsConfig:
    """TokenMinds: residual quantisation of the teacher's representations (``signals.semantic_ids``)."""

    levels: int = opt(0, ge=0, help="codebook levels L (0 = no semantic IDs); an entity's ID is L codes, coarse "
                                    "to fine")
    codes: int = opt(64, ge=2, help="codes per level K (k-means centroids on the previous levels' residual)")
    fit_rows: int = opt(100_000, ge=1, help="most stored values the codebook is fitted on: a seeded sample of those "
                                            "the teacher wrote by the end of its history, so no label of the "
                                            "students' window reaches the centroids")


@dataclass
class TeacherConfig:
    arch: Literal["dnn", "deepfm", "dcnv2", "tokenmixer"] = opt(
        "dcnv2", help="teacher backbone family. dcnv2 (the default) trains at CPU speed and is a strong CTR "
                      "model; tokenmixer is the large-teacher family, sized for GPUs: set it on a GPU cluster "
                      "(the default stays the same on every machine so a config means one teacher everywhere)")
    embed_dim: int = opt(16, ge=1, help="embedding size per field")
    depth: int = opt(3, ge=1, help="stacked blocks / hidden layers")
    width: int = opt(256, ge=1, help="hidden width")
    epochs: int | Literal["auto"] = opt("auto", ge=1, help="most passes over the teacher's training rows (auto: "
                                                           "see train/schedule.py, sized by its rows)")
    batch_size: int | Literal["auto"] = opt("auto", ge=1, help="rows per step (auto: sized by its rows, 128..4096)")
    lr: float | Literal["auto"] = opt("auto", gt=0.0, help="learning rate of dense parameters (Adam; auto: 1e-2)")
    embedding_lr: float | Literal["auto"] = opt("auto", gt=0.0, help="learning rate of embedding tables (auto: 1e-3)")
    sampling_ratio: float = opt(1.0, gt=0.0, le=1.0, help="share of the train split the teacher trains on")
    negative_keep_rate: float = opt(
        1.0, gt=0.0, le=1.0,
        help="extra negative down-sampling of the teacher's rows (its sampling correction f_T)")
    history_fraction: float = opt(
        0.5, ge=0.0, lt=1.0,
        help="earliest share of the train split that only the teacher learns from (CrossAdapt: "
             "40% history, 40% offline); students train on the later rows, whose forward "
             "signals then come from a teacher that has learned the history but not those rows")
    eval_every: int | Literal["auto"] = opt(
        "auto", ge=0, help="validation: AUC on the valid split every this many optimizer steps (and after the last); "
                           "0 = after each epoch (auto: 0). Skipped when the valid split is empty")
    patience: int | Literal["auto"] = opt(
        "auto", ge=0, help="early stopping: stop after this many validations in a row without a better valid AUC "
                           "and restore the best weights; 0 = off (all epochs run, the curve is still reported; "
                           "auto: 2 with a valid split, else 0). The teacher always finishes its first epoch, the "
                           "pass that records the students' signals")
    signals: str = opt(
        "forward", help="how the students' teacher signals are made. forward: each row's logit as the teacher's "
                        "first pass met it, before it learned from that row (Rec-Distill; strictly causal). "
                        "crossfit:K: K teachers, each trained on the history and K-1 of K folds of the students' "
                        "window (folds by row-id hash), each scoring its held-out fold, so every window row's "
                        "signal comes from a teacher that never saw it (K teacher trainings; η's teacher AUC is "
                        "their mean). posthoc: the final teacher scores every row, the rows it trained on "
                        "included (leaky; for comparison, and flagged so in the report)")
    representations: bool = opt(
        False, help="LoopFM: in its recording pass the teacher also writes the embedding-table rows of the users "
                    "and items its rows met (the log's user and item fields, and the items of its sequence "
                    "field) as `embedding` signals keyed by (entity, time), one block per signal block (online: "
                    "per window it learns), each stamped with the latest time the teacher had trained on; "
                    "students with students.N.representations.use read them as input features. Forward signals, "
                    "Ray engine")

    semantic_ids: SemanticIdsConfig = opt(
        default_factory=lambda: SemanticIdsConfig(),
        help="TokenMinds: the teacher's representations quantised into semantic IDs ({levels, codes, fit_rows}), "
             "stored as `code` signals; students read them with students.N.representations.codes")

    def check(self) -> None:
        signal_mode(self.signals)
        if self.semantic_ids.levels and not self.representations:
            raise ConfigError(f"teacher.semantic_ids.levels={self.semantic_ids.levels}: semantic IDs quantise the "
                              f"teacher's representations; set teacher.representations=true too")


def signal_mode(spec: str) -> tuple[str, int]:
    """``teacher.signals`` as (mode, folds): forward → ("forward", 1), crossfit:5 →
    ("crossfit", 5), posthoc → ("posthoc", 1)."""
    mode, _, k = spec.strip().partition(":")
    if mode in ("forward", "posthoc") and not k:
        return mode, 1
    if mode == "crossfit" and (not k or (k.isdigit() and int(k) >= 2)):
        return mode, int(k) if k else 5
    raise ConfigError(f"teacher.signals={spec!r}: expected forward, posthoc or crossfit:K with K >= 2 folds "
                      f"(crossfit alone: 5)")


@dataclass
class UnlabelledConfig:
    """Rows of the students' window a distilled student has no labels for, trained on with
    the teacher's soft labels only (the raw student never sees them, so η stays comparable)."""

    share: float = opt(0.0, ge=0.0, le=1.0,
                       help="share of the window's rows outside this student's labelled sample that its distilled "
                            "model also trains on, with the distill loss only (its task loss is masked there); "
                            "0 = off. A seeded sample by row hash, in log order with its labelled rows")
    alpha: float | None = opt(None, ge=0.0, help="distill weight on those rows (null: the student's alpha); the "
                                                 "labelled and the unlabelled rows' distill losses are each a mean "
                                                 "over their own rows")


REPRESENTATION_PARTS = ("user", "item", "history")


@dataclass
class RepresentationsConfig:
    """LoopFM: the teacher's stored representations as this student's input features, each
    as of strictly before the row's time (``signals.representations``)."""

    use: list[str] = opt(
        default_factory=list,
        help="which teacher representations the student reads, any of user (the row's user), item (the shown "
             "item), history (the items of the row's sequence field, pooled); [] = none. Each enters as one "
             "input token, with its staleness (log1p of its age in the log's time) beside them. Needs "
             "teacher.representations: true. The raw student reads them too: it is the 'representations "
             "only' model, its distilled twin 'KD + representations'")
    history: Literal["mean", "attention"] = opt(
        "mean", help="how the history items' representations are pooled: mean, or attention weighted by their "
                     "dot product with the shown item's representation (softmax over d^-0.5·<h_j, item>)")
    codes: list[str] = opt(
        default_factory=list,
        help="TokenMinds: whose semantic IDs the student reads as categorical features, any of user, item; one "
             "field per level (codes + 1 buckets, 0 = none yet), as of strictly before the row's time. Needs "
             "teacher.semantic_ids.levels > 0")
    code_fields: Literal["levels", "prefix"] = opt(
        "levels", help="how the semantic IDs enter (codes): levels = one field per level, its code alone; prefix = "
                       "one field per level holding the tuple of codes up to it (level 2's token is the pair "
                       "(c1, c2), so a fine code means one thing under each parent), exact up to 65,537 tuples "
                       "and hashed past that")


@dataclass
class StudentConfig:
    name: str = opt("student", help="label in tables and reports (unique)")
    arch: Literal["dnn", "deepfm", "dcnv2", "tokenmixer"] = opt("dcnv2", help="student backbone family")
    embed_dim: int = opt(8, ge=1, help="embedding size per field")
    depth: int = opt(2, ge=1, help="hidden layers / cross layers")
    width: int = opt(64, ge=1, help="hidden width")
    towers: Literal["decoupled", "single"] = opt(
        "single", help="single: one tower on task + α·distill; decoupled: main tower on task loss, aux tower on "
                       "task + α·distill (Rec-Distill §4.3.1). single at α 4 is the default: it beat decoupled "
                       "towers at α 1 on the demo and on two real logs (issue 14)")
    tower_width: int = opt(0, ge=0, help="hidden width of each tower's own MLP (0 = a linear head on the backbone)")
    alpha: float = opt(4.0, ge=0.0, help="distillation weight α (free, not tied to the task weight)")
    sampling_ratio: float = opt(
        0.5, gt=0.0, le=1.0,
        help="share of the train split's rows this student has labels for (0.2 of a 100k-row train split: "
             "20k rows), drawn from the students' window, the rows after teacher.history_fraction, so at most "
             "1 - history_fraction. results.json and the report give the rows it had")
    rows: Literal["random", "recent"] = opt(
        "random", help="where the student's rows come from: random = a seeded uniform sample of the students' "
                       "window; recent = the window's latest rows (in time, or file order for logs without time "
                       "and data.shuffle none)")
    negative_keep_rate: float = opt(
        1.0, gt=0.0, le=1.0,
        help="extra negative down-sampling of this student's rows (its sampling correction f_S)")
    epochs: int | Literal["auto"] = opt("auto", ge=1, help="most passes over the student's training rows (auto: "
                                                           "see train/schedule.py, sized by its rows)")
    batch_size: int | Literal["auto"] = opt("auto", ge=1, help="rows per step (auto: sized by its rows, 128..4096)")
    lr: float | Literal["auto"] = opt("auto", gt=0.0, help="learning rate of dense parameters (Adam; auto: 1e-2)")
    embedding_lr: float | Literal["auto"] = opt("auto", gt=0.0, help="learning rate of embedding tables (auto: 1e-3)")
    eval_every: int | Literal["auto"] = opt(
        "auto", ge=0, help="validation: AUC on the valid split every this many of this model's optimizer steps "
                           "(and after the last); 0 = after each epoch (auto: 0). Skipped when the valid split "
                           "is empty")
    patience: int | Literal["auto"] = opt(
        "auto", ge=0, help="early stopping: stop after this many validations in a row without a better valid AUC "
                           "and restore the best weights; 0 = off (all epochs run, the curve is still reported; "
                           "auto: 2 with a valid split, else 0). Raw and distilled models stop on their own; the "
                           "group trains on while one is left")
    unlabelled: UnlabelledConfig = opt(
        default_factory=UnlabelledConfig,
        help="rows without labels for the distilled student: {share, alpha} (issue 18: the teacher's soft labels "
             "where the student has no labels)")
    seed_name: str | None = opt(
        None, help="name whose seeds (initial weights, row sample) this student uses; null = its own name, so a "
                   "student's seeds depend on run.seed and its name, never on its place in the list. A sweep "
                   "packs trials as students of one run under new names with seed_name kept, so each trains "
                   "exactly as it would alone")
    representations: RepresentationsConfig = opt(
        default_factory=RepresentationsConfig,
        help="LoopFM: the teacher's stored user / item / history representations as input features "
             "({use: [user, item, history], history: mean | attention}; issue 19)")
    distill_from: str = opt(
        "teacher", help="whose logits the distilled student learns from: teacher (the big teacher); with a committee "
                        "(committee.experts > 0): expert:K (domain expert K alone), average (the naive mean of every "
                        "teacher's logit), committee (the question-answer module over every teacher, no filtering) "
                        "or filtered (the same, each row skipping the teachers its importance puts below "
                        "committee.threshold). committee.baselines adds these variants of each student by itself")


COMMITTEE_SOURCES = ("teacher", "average", "committee", "filtered")


def committee_source(spec: str, experts: int) -> tuple[str, int]:
    """``students.N.distill_from`` as (source, expert): teacher → ("teacher", -1), expert:2 →
    ("expert", 2); ConfigError when it names an expert the committee does not have."""
    name, _, k = spec.partition(":")
    if spec in COMMITTEE_SOURCES and (spec == "teacher" or experts):
        return spec, -1
    if name == "expert" and k.isdigit() and int(k) < experts:
        return "expert", int(k)
    allowed = ["teacher"] + ([*COMMITTEE_SOURCES[1:], *(f"expert:{j}" for j in range(experts))] if experts else [])
    raise ConfigError(f"distill_from={spec!r}: expected one of {', '.join(allowed)}"
                      + ("" if experts else " (the others need a committee: committee.experts > 0)"))


@dataclass
class CommitteeConfig:
    """DiverseDistill: domain experts beside the big teacher, frozen, aligned into the
    student by a question-answer module that is dropped after training (``distill.committee``)."""

    experts: int = opt(0, ge=0, le=16,
                       help="domain experts (0 = no committee): models with the first student's shape, each trained "
                            "once on a slice of the teacher-only history (so every students' window row is new to "
                            "it), keyed and kept in the signal store like a teacher, then frozen")
    slice_by: str = opt(
        "hash", help="how the history is cut into the experts' slices: hash (row-id hash, K equal random parts), time "
                     "(K equal-count spans in time; row order for logs without time), or field:NAME (a categorical "
                     "field's values, the commonest packed into K groups of about equal rows, the rest by hash)")
    threshold: float = opt(
        0.5, ge=0.0, lt=1.0,
        help="the filtered committee: for each row, a teacher whose importance weight is below threshold / "
             "(number of teachers) is skipped (no forward pass, no stored signal read); the row's most important "
             "teacher always runs")
    align_weight: float = opt(1.0, ge=0.0, help="weight β of the answers' alignment loss (1 − cosine to the student's "
                                                "hidden state, weighted by teacher importance)")
    query_dim: int = opt(32, ge=1, help="size of the question-answer module's queries and keys")
    baselines: bool = opt(
        True, help="with experts: each student that distils from the teacher is joined by its variants "
                   "<name>-expert<K>, <name>-average, <name>-committee and <name>-filtered (same seeds, so the raw "
                   "model is shared and every difference is paired), and run.pairs gets average − teacher, "
                   "committee − teacher, committee − average and filtered − committee")

    def check(self) -> None:
        slice_spec(self.slice_by)


def committee_variants(name: str, experts: int) -> list[tuple[str, str]]:
    """The (name, distill_from) of the variants ``committee.baselines`` adds to student ``name``."""
    return [(f"{name}-expert{k}", f"expert:{k}") for k in range(experts)] + [
        (f"{name}-{v}", v) for v in ("average", "committee", "filtered")]


def committee_pairs(name: str) -> list[list[str]]:
    """The ``run.pairs`` ``committee.baselines`` adds for student ``name``."""
    return [[f"{name}-average", name], [f"{name}-committee", name], [f"{name}-committee", f"{name}-average"],
            [f"{name}-filtered", f"{name}-committee"]]


def unexpanded(cfg: "ExperimentConfig") -> dict[str, Any]:
    """``cfg`` as a raw dict without what ``committee.baselines`` added (the variants and
    their pairs): what the experiment's own file says, so that overrides of ``students.i``
    name its students and loading it expands them again."""
    raw = to_dict(cfg)
    c = cfg.committee
    if not (c.experts and c.baselines):
        return raw
    generated = {n: src for s in cfg.students if s.distill_from == "teacher"
                 for n, src in committee_variants(s.name, c.experts)}
    auto = [p for s in cfg.students if s.distill_from == "teacher" for p in committee_pairs(s.name)]
    raw["students"] = [d for d in raw["students"] if generated.get(d["name"]) != d["distill_from"]]
    raw["run"]["pairs"] = [p for p in raw["run"]["pairs"] if p not in auto]
    return raw


def slice_spec(spec: str) -> tuple[str, str | None]:
    """``committee.slice_by`` as (kind, field): hash → ("hash", None), field:C3 → ("field", "C3")."""
    kind, _, name = spec.partition(":")
    if kind in ("hash", "time") and not name:
        return kind, None
    if kind == "field" and name:
        return kind, name
    raise ConfigError(f"committee.slice_by={spec!r}: expected hash, time or field:NAME (a categorical field)")


@dataclass
class DistillConfig:
    loss: Literal["soft_ce", "kl", "mse"] = opt(
        "soft_ce", help="soft-label cross-entropy (Rec-Distill Eq. 8), KL with temperature (×T²), or MSE on probabilities")
    temperature: float = opt(1.0, gt=0.0, help="distillation temperature T (not the teacher update interval)")
    form: Literal["free_alpha", "convex"] = opt(
        "free_alpha", help="free_alpha: task + α·distill (Rec-Distill); convex: α·distill + (1−α)·task (CrossAdapt)")
    debias: bool = opt(True, help="re-correct teacher logits with the sampling correction before the distill loss")
    debias_with: Literal["student", "teacher"] = opt(
        "student", help="whose sampling correction f is applied to the teacher's raw logits (Rec-Distill Eq. 13-14)")


@dataclass
class StreamConfig:
    """The hybrid pipeline (Rec-Distill §4.4, CrossAdapt's online stage): a batch phase over
    the first windows of the log, then the rest replayed one window at a time."""

    enabled: bool = opt(False, help="after the batch phase, replay later windows in time order")
    windows: int = opt(10, ge=2, help="equal-count time windows the whole log is cut into")
    keep_models: Literal["last", "every"] = opt(
        "last", help="model artifacts of an online run: last = every model as the stream left it (models/<model>/); "
                     "every = also one per window boundary, each model as it was after learning that window "
                     "(models/windows/w<window>/<model>/; a reused teacher has only its last)")
    batch_windows: int = opt(4, ge=1, help="windows in the batch phase (the rest stream)")
    teacher_update_interval: int | None = opt(
        10, ge=1, help="teacher optimizer step every τ batches in streaming, gradients accumulated in between "
                       "(CrossAdapt τ; 1 = synchronous); null = frozen teacher (τ = ∞)")
    batch_size: int = opt(
        1024, ge=1, help="batch size of every model in the streaming phase (the batch phase uses each model's own): "
                         "a window is what arrives between two updates, and τ counts these batches")
    shift_threshold: float = opt(
        0.05, ge=0.0, help="Jensen-Shannon divergence (base 2, in [0, 1]) above which replay turns on")
    shift_history: int = opt(3, ge=1, help="past windows pooled as the reference the new window is compared to")
    shift_top_k: int = opt(20, ge=1, help="most frequent ids per categorical field kept by the detector (+ other)")
    replay: Literal["adaptive", "always", "off"] = opt(
        "adaptive", help="historical replay: adaptive = on for replay_hold windows after the detector fires; "
                         "always = every streaming window (CrossAdapt's released code)")
    replay_ratio: float = opt(0.1, ge=0.0, lt=1.0, help="share of each training batch replayed from past windows")
    replay_hold: int = opt(2, ge=1, help="windows replay stays on after the detector fires")
    replay_capacity: int = opt(100_000, ge=1, help="rows the replay buffer keeps (reservoir over all past windows)")
    label_only_baseline: bool = opt(
        True, help="also train each distilled student on labels only after the batch phase (Rec-Distill Table 8)")
    signal_timeout_s: float = opt(
        600.0, gt=0.0, help="how long a student waits for a window's teacher signals before it trains that "
                            "window on labels only (the gap is reported)")
    checkpoint_every_windows: int = opt(1, ge=1, help="streaming checkpoint cadence, in windows, per role")


TRANSFER_VARIANTS = ("scratch", "progressive", "end_to_end", "progressive_noaug")


@dataclass
class TransferSamplingConfig:
    """Strategic sampling of the offline rows (CrossAdapt), all at the same expected budget."""

    strategy: Literal["all", "random", "biased", "temporal", "recent", "mixture"] = opt(
        "all", help="all = every offline row once; random; biased = with replacement, rebalanced to "
                    "target_positive_rate; temporal = weights rising with recency; recent = the last "
                    "recent_fraction of the time span only; mixture = half biased, half temporal")
    budget: float = opt(1.0, gt=0.0, help="expected sampled rows / offline rows (may exceed 1 with replacement)")
    target_positive_rate: float = opt(0.5, gt=0.0, lt=1.0, help="biased: positive rate after rebalancing")
    recency_strength: float = opt(3.0, ge=0.0, help="temporal: weight exp(strength·u), u = position in the time span")
    recent_fraction: float = opt(0.25, gt=0.0, le=1.0, help="recent: the share of the time span kept")


@dataclass
class TransferAugmentConfig:
    """Unclicked-sample augmentation: made-up (user, item) pairs scored by the teacher."""

    ratio: float = opt(0.0, ge=0.0, help="augmented rows per real row (0 = off); they carry the teacher's soft "
                                         "label only and get the distill loss only")
    generator: Literal["random", "popularity", "session"] = opt(
        "popularity", help="where a pair's item comes from: random = a distinct item of the batch, uniformly; "
                           "popularity = another impression of the batch (popular items more often); "
                           "session = another impression of the same user in the batch")
    item_columns: list[str] = opt(
        default_factory=list,
        help="columns that describe the item, swapped in from the donor row (default: the schema's item field, "
             "and for the synthetic log its item-side attribute fields and dense counts)")


@dataclass
class TransferConfig:
    """CrossAdapt's offline stage: the teacher (the OLD model) → projected embeddings →
    progressive distillation into students[0] (the NEW architecture), next to baselines."""

    enabled: bool = opt(False, help="run the cross-architecture transfer instead of the 1→N experiment")
    variants: list[str] = opt(
        default_factory=lambda: ["scratch", "progressive", "end_to_end"],
        help="scratch = random init, all epochs joint; progressive = projected, phase 1 frozen then joint; "
             "end_to_end = projected, joint at once (no phase 1); progressive_noaug = progressive without "
             "augmented rows")
    phase1_epochs: int = opt(1, ge=1, help="progressive: epochs with the projected embeddings frozen")
    phase2_epochs: int = opt(1, ge=1, help="epochs with everything trained (end_to_end trains phase1+phase2)")
    scratch_epochs: int = opt(0, ge=0, help="epochs of the from-scratch student (0 = phase1 + phase2)")
    l2_pull: float = opt(0.0, ge=0.0, help="phase 2: weight of an L2 pull of embedding rows to their phase-2 start")
    eval_every: int = opt(20, ge=1, help="training steps between held-out AUC points (the learning curves)")
    eval_rows: int = opt(50_000, ge=1, help="test rows the learning curves are scored on (final metrics: all)")
    sampling: TransferSamplingConfig = opt(default_factory=TransferSamplingConfig, help="offline-data sampling")
    augment: TransferAugmentConfig = opt(default_factory=TransferAugmentConfig, help="unclicked-sample augmentation")
    old_model: str | None = opt(
        None, help="a model artifact directory (runs/<run>/models/<model>/) as the OLD model, in place of a teacher "
                   "trained in the run: its logits (its own encoding) are the signal, its embeddings are projected "
                   "through the id pairing of its encoder and this run's (another vocabulary or hash size allowed); "
                   "needs augment.ratio=0")

    def check(self) -> None:
        if self.old_model and self.augment.ratio > 0:
            raise ConfigError(f"transfer.old_model is set and transfer.augment.ratio={self.augment.ratio}: augmented "
                              f"rows are made from rows already in the new encoding, which the old model cannot "
                              f"score; set transfer.augment.ratio=0")
        if self.old_model and "progressive_noaug" in self.variants:
            raise ConfigError("transfer.old_model: progressive_noaug is progressive without augmented rows, and with "
                              "the old model there are none; drop it from transfer.variants")
        bad = [v for v in self.variants if v not in TRANSFER_VARIANTS]
        if bad or not self.variants:
            raise ConfigError(f"transfer.variants={self.variants!r}: expected a non-empty list of "
                              f"{', '.join(TRANSFER_VARIANTS)}")
        if len(set(self.variants)) != len(self.variants):
            raise ConfigError(f"transfer.variants={self.variants!r}: repeated variant")


@dataclass
class TuneConfig:
    max_concurrent_trials: int = opt(2, ge=1, help="trials running at once")
    scheduler: Literal["fifo", "asha"] = opt(
        "fifo", help="fifo: every trial runs to its end; asha: Tune's ASHA stops trials early by the validation "
                     "AUC of their distilled student, reported after every epoch (needs a valid split; trials "
                     "are not packed). The first trial of a teacher not yet stored trains it outside Tune and is "
                     "never stopped")
    grace_period: int = opt(1, ge=1, help="asha: epochs every trial trains before it can be stopped")
    reduction_factor: int = opt(2, ge=2, help="asha: a rung keeps the best 1/reduction_factor of the trials")


@dataclass
class TrackingConfig:
    wandb: Literal["auto", "offline", "online", "disabled"] = opt(
        "auto", help="auto: what WANDB_MODE says when it is set; else online with a key (WANDB_API_KEY or a "
                     "`wandb login` entry), offline without")
    project: str = opt("recdistill", help="W&B project")
    group: str | None = opt(None, help="W&B group of the run (null: none; a sweep groups its trials' runs, a "
                                       "run over seeds its seeds' runs)")
    jsonl: bool = opt(True, help="also write metrics as JSON lines under the run directory")


@dataclass
class PlatformConfig:
    """How the experiment maps onto Ray: workers, the signal store, fault tolerance."""

    teacher_workers: int = opt(1, ge=1, help="Ray Train workers for the teacher (DDP across them when > 1)")
    students_per_group: int = opt(
        0, ge=0, help="students trained together by one worker in one pass over the distill stream (0 = all in "
                      "one group); groups run as concurrent one-worker Ray Train runs (students are small: "
                      "they scale out by model, the teacher by data)")
    cpus_per_worker: float = opt(
        1.0, gt=0.0, help="CPUs reserved per Train worker; leave at least one CPU of the node for Ray Data")
    torch_threads: int = opt(0, ge=0, help="intra-op threads per worker (0 = the node's CPUs / its workers)")
    use_gpu: Literal["auto", "yes", "no"] = opt("auto", help="auto: GPU workers when the cluster has GPUs")
    gpus_per_worker: float | Literal["auto"] = opt(
        "auto", gt=0.0, le=1.0,
        help="GPU share each GPU Train worker asks for: a fraction lets one-worker runs share a device (a run of "
             "2+ workers, the teacher's DDP, takes a whole GPU per worker: NCCL joins no two ranks on one "
             "device). auto = 1, except "
             "an online run's teacher and student group, which run at once and wait on each other: with fewer GPUs "
             "than the 2 they need they take 0.5 each (on one GPU, one would otherwise wait for the other's end)")
    signal_store: str = opt(
        "runs/signal_store",
        help="where teacher signals live as Parquet, content-addressed by teacher key (local path or a "
             "pyarrow filesystem URI such as s3://bucket/prefix)")
    reuse_signals: bool = opt(True, help="skip the teacher when the store already holds its signals")
    signal_block_rows: int = opt(65536, ge=1, help="rows per signal block (Parquet file) the teacher writes")
    read_split_mb: int = opt(
        64, ge=0, help="an uncompressed Criteo or Avazu file larger than this many MiB is read as byte ranges of "
                       "about this size, one Ray Data read task each, so that several cores or nodes parse it "
                       "(rows, ids and line numbers as a whole-file read gives them); 0 reads each file whole")
    stream_batch_rows: int = opt(
        32_768, ge=1, help="rows per batch a student group reads from its stream (at least its smallest student "
                           "batch); each member re-batches its own rows, so results do not depend on it. Larger "
                           "batches let a member take several steps in a row while its weights are in cache: with "
                           "32 members a member's steps took 22% less time at 32,768 than at 4,096 (benchmarks/README.md)")
    students_follow: Literal["auto", "yes", "no"] = opt(
        "auto", help="batch runs: start the student groups with the teacher, each joining the teacher's logits block "
                     "by block as it publishes them in its recording pass, so the students' Train start, reads and "
                     "first epoch overlap the teacher's training (every model's numbers are the ones students started "
                     "after the teacher get). yes: always (refused where the students cannot follow: teacher.signals "
                     "posthoc or crossfit, a committee, teacher representations, run.cold_users, packed seeds); auto: "
                     "when they can, on GPU workers or a cluster of several nodes (on one CPU node the groups take the "
                     "teacher's cores: 1.08-1.11x the wall at 1M rows on 2 CPUs), not in a sweep's trial, and when "
                     "the cluster has free the teacher's workers and every group with a CPU left for Ray Data (and "
                     "their GPU shares); no: students start after the teacher")
    follow_timeout_s: float = opt(
        600.0, gt=0.0, help="students following a teacher: a batch whose rows still lack their signals goes on "
                            "without them (masked, counted late) once the teacher has published nothing for this long")
    max_failures: int = opt(2, ge=0, help="restarts of a failed Train run from its last checkpoint")
    checkpoint_every_blocks: int = opt(
        32, ge=1, help="teacher checkpoint every this many signal blocks (a checkpoint holds the model and its "
                       "optimizer state: with a large teacher it costs seconds, so not every block)")
    lease_ttl_s: float = opt(
        60.0, gt=0.0, help="a run training a teacher key holds a lease on it in the signal store and renews it every "
                           "third of this; another run of the same key waits for its signals, and takes the lease "
                           "over only when it has not been renewed for this long (its driver died)")
    lease_poll_s: float = opt(2.0, gt=0.0, help="how often a run waiting on another run's teacher looks again")
    lease_wait_s: float | None = opt(
        None, help="give up waiting on another run's teacher after this many seconds (null: wait while its lease "
                   "is renewed)")
    hold_log: Literal["auto", "yes", "no"] = opt(
        "auto", help="read the log's files once and hold the parsed rows in Ray's object store, so that every later "
                     "pass (split cut, statistics, vocabulary, history cut, held-out sets, the teacher's stream, the "
                     "signal join) reads memory instead of parsing the files again: auto = a text log (TSV, CSV, "
                     "libsvm) whose estimated in-memory size is at most a quarter of the cluster's object store "
                     "(Parquet streams: its passes read only the columns they need, with no parse); yes = always; "
                     "no = stream the files at every pass (a log the cluster could hold only by spilling)")
    shuffle_strategy: Literal["auto", "ray", "sort_shuffle_pull_based", "sort_shuffle_push_based", "hash_shuffle",
                              "shuffle_v2"] = opt(
        "auto", help="Ray Data shuffle of the vocabulary's groupby and the window shuffle's sort: auto = the "
                     "pull-based sort shuffle on a one-node cluster (Ray 2.60's default, shuffle_v2, costs seconds of "
                     "fixed time per shuffle there), Ray's default across nodes; ray = Ray's default "
                     "(RAY_DATA_DEFAULT_SHUFFLE_STRATEGY); or one of Ray's strategies by name")


@dataclass
class RunConfig:
    name: str = opt("demo", help="run name; outputs go to runs/<name>/ unless run.dir is set")
    dir: str | None = opt(None, help="output directory (default runs/<name>)")
    overwrite: bool = opt(
        False, help="a run directory that already holds outputs is refused unless this is true; then its outputs "
                    "are deleted first (the data/ cache stays). `--overwrite` on the command line")
    seed: int = opt(0, help="seed for model initialisation and sampling")
    seeds: int | list[int] = opt(
        1, help="repeat the 1→N experiment over paired seeds: N runs run.seed, run.seed+1, ...; a list names the "
                "seeds. In each seed the raw and the distilled student share initial weights and rows, and the "
                "seed's teacher is keyed and reused like any teacher; results.json adds means, stds, 95% "
                "intervals and paired differences (seeds/ holds each seed's own run)")
    pack_seeds: bool = opt(
        True, help="with several run.seeds on Ray: every seed's teacher trains first, then the students of all "
                   "seeds train in one pass per epoch over one distill stream (each reads its own seed's teacher "
                   "logits), as --pack does for a sweep's trials; every model's numbers equal the seeds' runs one "
                   "after another (each seed's timings of the students' pass are the shared pass's). A group then "
                   "holds platform.students_per_group students of every seed, so its memory grows with the seeds. "
                   "Off, or where a run cannot pack (a committee, teacher representations, run.cold_users, the "
                   "local engine), the seeds run one after another")
    cold_users: int = opt(
        0, ge=0, help="also score every model on the test rows of cold users: users with at most this many rows in "
                      "the students' window (0 = off; needs a log with a user field; batch 1→N on Ray). The "
                      "teacher is scored there from its stored weights, so η and the transfer ratios get a cold "
                      "column when those are the weights the students' signals came from")
    bootstrap: int = opt(
        200, ge=0, help="Poisson-bootstrap replicates of the test rows per model (0: off): every AUC, difference "
                        "and η interval covers the test rows' noise as well as the seeds'")
    pairs: list[list[str]] = opt(
        default_factory=list, help="ablation pairs of student names, [[a, b], ...]: each gets its paired "
                                   "difference a − b (distilled AUC and η) with an interval, beside distilled − raw "
                                   "and every student against the first")
    serving: Literal["exported-program", "torchscript", "onnx", "off"] = opt(
        "exported-program", help="after the run, export each distilled student's serving tower in this format and "
                                 "measure its latency (p50/p99 at batch 1 and 512), throughput, bytes and parameters "
                                 "on CPU (and on a GPU when the cluster has one): results.json students[i].serving; "
                                 "off: skip")
    device: Literal["auto", "cpu", "cuda"] = opt(
        "auto", help="auto picks CUDA when present (the Ray engine: GPU workers when the cluster has GPUs; cuda "
                     "requires them and cpu keeps workers off them, as platform.use_gpu must agree)")
    engine: Literal["ray", "local"] = opt(
        "ray", help="ray: Ray Data → Ray Train teacher → signal hub → student groups (joins RAY_ADDRESS or starts "
                    "a local Ray); local: the same science in this process (the reference)")

    @property
    def out_dir(self) -> Path:
        return Path(self.dir) if self.dir else Path("runs") / self.name

    @property
    def seed_list(self) -> list[int]:
        """The seeds ``seeds`` names: N consecutive from ``seed``, or its list."""
        return list(self.seeds) if isinstance(self.seeds, list) else [self.seed + k for k in range(self.seeds)]


@dataclass
class ExperimentConfig:
    data: DataConfig = opt(default_factory=DataConfig, help="click log, preprocessing and splits")
    teacher: TeacherConfig = opt(default_factory=TeacherConfig, help="the teacher model")
    students: list[StudentConfig] = opt(default_factory=lambda: [StudentConfig()], help="the N students")
    distill: DistillConfig = opt(default_factory=DistillConfig, help="distillation loss and debias")
    committee: CommitteeConfig = opt(default_factory=CommitteeConfig,
                                     help="DiverseDistill: a committee of domain experts beside the teacher")
    stream: StreamConfig = opt(default_factory=StreamConfig, help="online (streaming) phase")
    transfer: TransferConfig = opt(default_factory=TransferConfig, help="cross-architecture transfer (CrossAdapt)")
    tune: TuneConfig = opt(default_factory=TuneConfig, help="Ray Tune sweeps")
    tracking: TrackingConfig = opt(default_factory=TrackingConfig, help="W&B and local logs")
    platform: PlatformConfig = opt(default_factory=PlatformConfig, help="Ray workers, signal store, fault tolerance")
    run: RunConfig = opt(default_factory=RunConfig, help="naming, outputs, seed, device")

    def trains_on_ray(self) -> bool:
        """Whether Ray Train workers train its models (on the device Ray gives them): the Ray
        engine, the online pipeline and the transfer stage; not the local engine."""
        return self.run.engine == "ray" or self.stream.enabled or self.transfer.enabled

    def check(self) -> None:
        self._expand_committee()
        names = [s.name for s in self.students]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"students: names must be unique, repeated: {dup}")
        # a Ray worker trains on the GPU Ray gives it (platform.use_gpu), so a device asked
        # for the other way round would be silently ignored
        clash = {("cpu", "yes"): "asks for GPU workers", ("cuda", "no"): "asks for CPU workers"}.get(
            (self.run.device, self.platform.use_gpu))
        if clash and self.trains_on_ray():
            raise ConfigError(f"run.device={self.run.device} and platform.use_gpu={self.platform.use_gpu}, which "
                              f"{clash}: set one of them to auto, or both the same way")
        if self.stream.enabled and self.stream.batch_windows >= self.stream.windows:
            raise ConfigError(f"stream.batch_windows={self.stream.batch_windows} must be below stream.windows="
                              f"{self.stream.windows}: no window would be left to stream")
        recent = [f"students.{i}.rows=recent" for i, s in enumerate(self.students) if s.rows == "recent"]
        if recent and (self.stream.enabled or self.transfer.enabled):
            raise ConfigError(f"{', '.join(recent)}: recent rows are a batch-experiment choice; the online pipeline "
                              f"samples every window and the transfer stage has transfer.sampling.strategy=recent")
        if signal_mode(self.teacher.signals)[0] != "forward" and (self.stream.enabled or self.transfer.enabled):
            raise ConfigError(f"teacher.signals={self.teacher.signals}: the "
                              f"{'online pipeline' if self.stream.enabled else 'transfer stage'} takes forward "
                              f"signals only (its teacher scores each window before it learns from it); crossfit "
                              f"and posthoc are modes of the batch 1→N experiment")
        unlabelled = [f"students.{i}.unlabelled.share" for i, s in enumerate(self.students) if s.unlabelled.share]
        if unlabelled and self.transfer.enabled:
            raise ConfigError(f"{', '.join(unlabelled)}: the transfer stage trains its own variants; its rows "
                              f"without labels are transfer.augment (made-up rows scored by the old model)")
        if not self.stream.enabled:
            room = 1.0 - self.teacher.history_fraction
            for i, s in enumerate(self.students):
                if s.sampling_ratio > room + 1e-9:
                    raise ConfigError(
                        f"students.{i}.sampling_ratio={s.sampling_ratio:g} asks for {s.sampling_ratio:.0%} of the train "
                        f"split's rows, but teacher.history_fraction={self.teacher.history_fraction:g} keeps the "
                        f"earliest {self.teacher.history_fraction:.0%} for the teacher alone: at most {room:g}")
        if isinstance(self.data.buckets, dict):
            bad = {k: v for k, v in self.data.buckets.items() if v < 2}
            if bad:
                raise ConfigError(f"data.buckets={bad}: a field needs at least 2 buckets (missing and one id)")
        seeds = self.run.seed_list
        if not seeds or len(set(seeds)) != len(seeds):
            raise ConfigError(f"run.seeds={self.run.seeds!r}: expected a positive count or a list of distinct seeds")
        if len(seeds) > 1 and (self.stream.enabled or self.transfer.enabled):
            raise ConfigError(f"run.seeds={self.run.seeds!r}: seeds are repeated for the batch 1→N experiment; "
                              f"run the {'online pipeline' if self.stream.enabled else 'transfer stage'} once per "
                              f"run.seed and compare the runs with `recdistill compare`")
        for j, pair in enumerate(self.run.pairs):
            unknown = [n for n in pair if n not in names]
            if len(pair) != 2 or unknown or pair[0] == pair[1]:
                raise ConfigError(f"run.pairs.{j}={pair!r}: expected two different student names of {names}"
                                  + (f"; unknown: {unknown}" if unknown else ""))
        self._check_representations()
        if self.run.cold_users and (self.stream.enabled or self.transfer.enabled or self.run.engine == "local"):
            raise ConfigError(f"run.cold_users={self.run.cold_users}: the cold-user slice is scored by the batch 1→N "
                              f"experiment on the Ray engine only")
        if self.transfer.enabled and self.stream.enabled:
            raise ConfigError("transfer.enabled and stream.enabled: the transfer stage is offline; run the online "
                              "pipeline as its own experiment")


    def _expand_committee(self) -> None:
        """With a committee and ``committee.baselines``: each student that distils from the
        teacher gets its committee variants, once (a resolved config already holds them)."""
        c = self.committee
        for i, s in enumerate(self.students):
            try:
                committee_source(s.distill_from, c.experts)
            except ConfigError as e:
                raise ConfigError(f"students.{i}.{e}") from None
        if not c.experts:
            return
        where = ("the online pipeline" if self.stream.enabled else "the transfer stage" if self.transfer.enabled
                 else "the local engine" if self.run.engine == "local" else None)
        if where:
            raise ConfigError(f"committee.experts={c.experts}: the committee runs in the batch 1→N experiment on the "
                              f"Ray engine, not in {where}")
        if self.teacher.negative_keep_rate != 1.0:
            raise ConfigError(f"committee.experts={c.experts} with teacher.negative_keep_rate="
                              f"{self.teacher.negative_keep_rate:g}: the experts train on the log as it is, and one "
                              f"sampling correction cannot debias a mean of logits made under two rates; set "
                              f"teacher.negative_keep_rate=1")
        readers = [f"students.{i}.representations" for i, s in enumerate(self.students)
                   if s.representations.use or s.representations.codes]
        if readers:
            raise ConfigError(f"committee.experts={c.experts} with {', '.join(readers)}: the experts read the log's own "
                              f"features, and a committee over students that read teacher representations is not "
                              f"built yet; run the two studies apart")
        if not c.baselines or any(s.distill_from != "teacher" for s in self.students):
            return
        expanded, pairs = [], []
        for s in self.students:
            expanded += [s] + [dataclasses.replace(s, name=n, distill_from=src, seed_name=s.seed_name or s.name)
                               for n, src in committee_variants(s.name, c.experts)]
            pairs += committee_pairs(s.name)
        self.students = expanded
        self.run.pairs = self.run.pairs + [p for p in pairs if p not in self.run.pairs]

    def _check_representations(self) -> None:
        readers = [f"students.{i}.representations.use" for i, s in enumerate(self.students) if s.representations.use]
        for i, s in enumerate(self.students):
            for key, allowed in (("use", REPRESENTATION_PARTS), ("codes", ("user", "item"))):
                parts = getattr(s.representations, key)
                bad = [p for p in parts if p not in allowed]
                if bad or len(set(parts)) != len(parts):
                    raise ConfigError(f"students.{i}.representations.{key}={parts}: expected distinct parts of "
                                      f"{list(allowed)}" + (f"; unknown: {bad}" if bad else ""))
            if s.representations.codes and not self.teacher.semantic_ids.levels:
                raise ConfigError(f"students.{i}.representations.codes={s.representations.codes}: the student reads "
                                  f"semantic IDs; set teacher.semantic_ids.levels (e.g. 3) so that the teacher's "
                                  f"representations are quantised")
            if s.representations.code_fields != "levels" and not s.representations.codes:
                raise ConfigError(f"students.{i}.representations.code_fields={s.representations.code_fields}: says "
                                  f"how semantic IDs enter, but the student reads none; set "
                                  f"students.{i}.representations.codes (e.g. [user, item])")
        readers += [f"students.{i}.representations.codes" for i, s in enumerate(self.students)
                    if s.representations.codes]
        if readers and not self.teacher.representations:
            raise ConfigError(f"{', '.join(readers)}: these students read the teacher's representations; set "
                              f"teacher.representations=true so that the teacher writes them")
        if not self.teacher.representations:
            return
        where = ("the transfer stage" if self.transfer.enabled else "the local engine" if self.run.engine == "local"
                 else None)
        if where:
            raise ConfigError(f"teacher.representations: written and read by the 1→N experiment on the Ray engine "
                              f"(batch or online), not by {where}")
        if self.stream.enabled and self.teacher.semantic_ids.levels:
            raise ConfigError(f"teacher.semantic_ids.levels={self.teacher.semantic_ids.levels}: semantic IDs are "
                              f"fitted once, after the teacher's batch pass; the online pipeline refreshes the dense "
                              f"representations per window but not the codebook (not built yet)")
        if signal_mode(self.teacher.signals)[0] != "forward":
            raise ConfigError(f"teacher.representations with teacher.signals={self.teacher.signals}: representations "
                              f"are written in the forward recording pass, stamped with the time the teacher had "
                              f"trained to, so that no row reads a representation of its own time or after")


# ------------------------------------------------------------------------ loader


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin is dict:
        k, v = typing.get_args(tp)
        return f"a mapping of {_describe(k)} to {_describe(v)}"
    if tp is type(None):
        return "null"
    if _is_dataclass_type(tp):
        return f"a mapping with keys {', '.join(f.name for f in dataclasses.fields(tp))}"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}={value!r}: expected {_describe(tp)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, bool):
            # YAML 1.1 reads a bare off/no/on/yes as a boolean: map it back to the option meant
            words = ("on", "yes", "true") if value else ("off", "no", "false")
            value = next((a for a in allowed if isinstance(a, str) and a in words), value)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r}: expected one of {', '.join(repr(a) for a in allowed)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}={value!r}: expected {_describe(tp)}")
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{key}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r}: expected {_describe(tp)}")
        k_tp, v_tp = typing.get_args(tp)
        return {_convert(k, k_tp, f"{key} key"): _convert(v, v_tp, f"{key}.{k}") for k, v in value.items()}
    if _is_dataclass_type(tp):
        return _build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r}: expected an integer")
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value!r}: expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r}: expected a string")
        return value
    raise TypeError(f"config type {tp!r} of {key} is not supported by the loader")


_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _check_bounds(value: Any, f: dataclasses.Field, key: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    m = f.metadata
    for name, ok, word in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                           ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")):
        bound = m.get(name)
        if bound is not None and not ok(value, bound):
            raise ConfigError(f"{key}={value!r}: must be {word} {bound} ({m['help']})")


def _build(cls: type, raw: Any, prefix: str) -> Any:
    where = prefix or "the config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}={raw!r}: expected {_describe(cls)}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"unknown key {_join(prefix, unknown[0])!r}; known keys"
                          f"{' under ' + prefix if prefix else ''}: {', '.join(known)}")
    kwargs = {}
    for name, value in raw.items():
        key = _join(prefix, name)
        converted = _convert(value, hints[name], key)
        _check_bounds(converted, known[name], key)
        kwargs[name] = converted
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if callable(check):
        check()
    return obj


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


def _field_type_at(path: list[str]) -> Any:
    """The declared type of a dotted path (list indices included), or ConfigError."""
    tp: Any = ExperimentConfig
    for depth, part in enumerate(path):
        here = ".".join(path[:depth]) or "the config"
        origin = typing.get_origin(tp)
        if origin in (Union, types.UnionType):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
            origin = typing.get_origin(tp)
        if origin is list:
            if not part.isdigit():
                raise ConfigError(f"{'.'.join(path)}: {here} is a list; expected an index, got {part!r}")
            tp = typing.get_args(tp)[0]
        elif _is_dataclass_type(tp):
            names = [f.name for f in dataclasses.fields(tp)]
            if part not in names:
                raise ConfigError(f"unknown key {'.'.join(path[:depth + 1])!r}; known keys under "
                                  f"{here}: {', '.join(names)}")
            tp = typing.get_type_hints(tp)[part]
        else:
            raise ConfigError(f"{'.'.join(path)}: {here} is a {_describe(tp)}, it has no key {part!r}")
    return tp


def apply_override(raw: dict, override: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) to a raw config dict in place."""
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. data.rows=200000")
    key, text = override.split("=", 1)
    path = key.strip().split(".")
    _field_type_at(path)
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {override!r}: value is not valid YAML ({e})") from e
    node: Any = raw
    for depth, part in enumerate(path[:-1]):
        if isinstance(node, list):
            idx = int(part)
            if idx == len(node):  # students.<N>.x=... appends a student with defaults
                item_tp = _field_type_at(path[:depth + 1])
                node.append(_defaults(item_tp))
            elif idx > len(node):
                raise ConfigError(f"{key}: index {idx} out of range; "
                                  f"{'.'.join(path[:depth])} has {len(node)} entries (use {len(node)} to append)")
            node = node[idx]
        else:
            if node.get(part) is None:
                node[part] = _defaults(_field_type_at(path[:depth + 1]))
            node = node[part]
    last = path[-1]
    if isinstance(node, list):
        idx = int(last)
        if idx > len(node):
            raise ConfigError(f"{key}: index {idx} out of range ({len(node)} entries)")
        if idx == len(node):
            node.append(value)
        else:
            node[idx] = value
    else:
        node[last] = value


def _defaults(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if _is_dataclass_type(tp):
        return to_dict(tp())
    return None


def to_dict(cfg: Any) -> Any:
    return dataclasses.asdict(cfg)


def _merge(base: Any, update: Any) -> Any:
    if isinstance(base, dict) and isinstance(update, dict):
        out = dict(base)
        for k, v in update.items():
            out[k] = _merge(base[k], v) if k in base else v
        return out
    return copy.deepcopy(update)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Defaults ← YAML file ← dotted overrides, validated into an ExperimentConfig."""
    raw: Any = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from e
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {str(p)!r}: expected a mapping at the top level")
    merged = _merge(to_dict(ExperimentConfig()), raw)
    for ov in overrides:
        apply_override(merged, ov)
    return _build(ExperimentConfig, merged, "")


def config_from_dict(raw: dict) -> ExperimentConfig:
    return _build(ExperimentConfig, _merge(to_dict(ExperimentConfig()), raw), "")


def dump_config(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
