"""Which model trains on which rows, from which initial weights: one plan for every engine.

The single-process experiment, the Ray Train teacher and the student groups all build
models and pick rows through these functions, so with the same config and seed they
train the same models on the same rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any, Collection

import numpy as np
import torch

from recdistill.config import ExperimentConfig, StudentConfig, TeacherConfig
from recdistill.data.sampling import model_sample_mask
from recdistill.data.tensors import TensorLog
from recdistill.distill.debias import SamplingCorrection
from recdistill.distill.objective import Objective
from recdistill.models import FeatureSpec, Ranker
from recdistill.models.features import prefix_buckets
from recdistill.signals.representations import code_columns, columns, group_sizes


def sample_index(data: TensorLog, ratio: float, negative_keep: float, seed: int) -> torch.Tensor:
    """Rows a model trains on: a uniform share, then extra negative down-sampling (row hashes)."""
    keep = model_sample_mask(data.row_id.numpy(), data.label.numpy(), ratio, negative_keep, seed)
    return torch.from_numpy(np.flatnonzero(keep))


def feature_spec(schema: Any, buckets: dict[str, int]) -> FeatureSpec:
    return FeatureSpec(buckets=tuple(buckets[c] for c in schema.categorical), num_dense=len(schema.dense),
                       sequence_fields=tuple(schema.categorical.index(src) for _, src in schema.sequences))


def build_model(spec: FeatureSpec, m: TeacherConfig | StudentConfig, towers: str, seed: int,
                sparse_embeddings: bool = True, rep_columns: tuple[tuple[int, int], ...] = (),
                code_columns: tuple[tuple[int, int], ...] = ()) -> Ranker:
    torch.manual_seed(seed)
    model = Ranker(spec, m.arch, m.embed_dim, m.depth, m.width, towers=towers,
                   tower_width=getattr(m, "tower_width", 0), sparse_embeddings=sparse_embeddings)
    model.rep_columns, model.code_columns = rep_columns, code_columns
    return model


def student_rep_columns(cfg: ExperimentConfig, i: int) -> tuple[tuple[int, int], ...]:
    """The slices of the joined teacher representations student ``i`` reads (LoopFM)."""
    r = cfg.students[i].representations
    return columns(r.use, r.history, cfg.teacher.embed_dim)


def student_code_columns(cfg: ExperimentConfig, i: int) -> tuple[tuple[int, int], ...]:
    """The slices of the joined semantic IDs student ``i`` reads (TokenMinds)."""
    return code_columns(cfg.students[i].representations.codes, cfg.teacher.semantic_ids.levels)


def student_spec(cfg: ExperimentConfig, spec: FeatureSpec, i: int) -> FeatureSpec:
    """Student ``i``'s input features: the log's, plus one input group per teacher
    representation it reads (and their staleness), and one categorical field per level of
    each semantic ID it reads: the level's code (codes + 1 buckets: 0 = none yet), or with
    ``representations.code_fields: prefix`` the codes up to that level as one token
    (``models.features.prefix_tokens``)."""
    cols, codes = student_rep_columns(cfg, i), student_code_columns(cfg, i)
    sid = cfg.teacher.semantic_ids
    if cfg.students[i].representations.code_fields == "prefix" and codes:
        return replace(spec, extra_dense=group_sizes(cols), code_prefix=(len(codes), sid.levels, sid.codes),
                       buckets=spec.buckets + prefix_buckets(sid.levels, sid.codes) * len(codes))
    fields = sum(b - a for a, b in codes)
    return replace(spec, extra_dense=group_sizes(cols), buckets=spec.buckets + (sid.codes + 1,) * fields)


def representation_baseline(cfg: ExperimentConfig, i: int) -> str | None:
    """For a student reading teacher representations, the first student that reads none and
    is otherwise the same (shape, rows, α): LoopFM's transfer ratios are over its raw AUC."""
    from recdistill.config import to_dict

    def rest(j: int) -> dict[str, Any]:
        return {k: v for k, v in to_dict(cfg.students[j]).items() if k not in ("name", "seed_name", "representations")}

    def reads(j: int) -> bool:
        return bool(cfg.students[j].representations.use or cfg.students[j].representations.codes)

    if not (cfg.students[i].representations.use or cfg.students[i].representations.codes):
        return None
    return next((s.name for j, s in enumerate(cfg.students) if not reads(j) and rest(j) == rest(i)), None)


def reads_representations(cfg: ExperimentConfig) -> bool:
    return any(s.representations.use or s.representations.codes for s in cfg.students)


def teacher_init_seed(cfg: ExperimentConfig) -> int:
    return cfg.run.seed


def teacher_sample_seed(cfg: ExperimentConfig) -> int:
    return cfg.run.seed * 1000 + 1


def expert_init_seed(cfg: ExperimentConfig, k: int) -> int:
    return (cfg.run.seed * 1_000_003 + 20 + _name_number(f"expert:{k}")) % (1 << 62)


def expert_sample_seed(cfg: ExperimentConfig, k: int) -> int:
    return (cfg.run.seed * 1000 + 200 + _name_number(f"expert-rows:{k}")) % (1 << 62)


def seed_name(cfg: ExperimentConfig, i: int) -> str:
    s = cfg.students[i]
    return s.name if s.seed_name is None else s.seed_name


def _name_number(name: str) -> int:
    # a stable number per name (Python's str hash is salted per process)
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def student_init_seed(cfg: ExperimentConfig, i: int) -> int:
    return (cfg.run.seed * 1_000_003 + 10 + _name_number(seed_name(cfg, i))) % (1 << 62)


def student_sample_seed(cfg: ExperimentConfig, i: int) -> int:
    return (cfg.run.seed * 1000 + 100 + _name_number("rows:" + seed_name(cfg, i))) % (1 << 62)


def _recent_cut(s: StudentConfig) -> float:
    # rounded so that ratios spelled differently (0.3, 1 - 0.7) share one cut
    return round(1.0 - s.sampling_ratio, 12)


def recent_cuts(cfg: ExperimentConfig) -> list[float]:
    """Where the students with ``rows: recent`` start, as shares of the train split in
    ascending order (one per distinct sampling_ratio): the tags ``windows.tag_history`` adds."""
    return sorted({_recent_cut(s) for s in cfg.students if s.rows == "recent"})


def student_rows(cfg: ExperimentConfig, i: int) -> tuple[float, int]:
    """How student ``i`` picks rows of the students' window: (the share of the window's rows
    it samples uniformly, the least ``recency`` tag its rows have).

    ``sampling_ratio`` is a share of the train split; the window is the split's rows after
    ``teacher.history_fraction``, so a random student samples ratio / (1 - history) of it and
    a recent one takes every row past its cut."""
    s = cfg.students[i]
    if s.rows == "recent":
        return 1.0, recent_cuts(cfg).index(_recent_cut(s)) + 1
    return min(1.0, s.sampling_ratio / (1.0 - cfg.teacher.history_fraction)), 0


def student_objective(cfg: ExperimentConfig, i: int, distilled: bool) -> Objective:
    if not distilled:
        return Objective(alpha=0.0)
    s, d = cfg.students[i], cfg.distill
    u = s.unlabelled
    return Objective(alpha=s.alpha, loss=d.loss, temperature=d.temperature, form=d.form, debias=d.debias,
                     debias_with=d.debias_with,
                     student_sampling=SamplingCorrection.from_negative_keep_rate(s.negative_keep_rate),
                     teacher_sampling=SamplingCorrection.from_negative_keep_rate(cfg.teacher.negative_keep_rate),
                     # its unlabelled rows are a uniform sample (rate 1): the correction each row gets is its own
                     unlabelled_alpha=(s.alpha if u.alpha is None else u.alpha) if u.share > 0 else None)


def sequence_length(cfg: ExperimentConfig) -> int:
    """Padded length of sequence features (0 = the longest in each block; padding is masked)."""
    return cfg.data.synthetic.history_length if cfg.data.source == "synthetic" else 0


def student_members(cfg: ExperimentConfig, spec: FeatureSpec, indices: list[int],
                    skip_raw: Collection[int] = (), experts: Collection[Ranker] = ()) -> list[Any]:
    """The raw and the distilled model of each student in ``indices``, same initial weights
    (no raw model for the students in ``skip_raw``: their raw result is already stored);
    a committee variant's distilled model learns from the committee's ``experts``."""
    from recdistill.train.group import Member

    members = []
    experts = list(experts or ())
    for i in indices:
        s = cfg.students[i]
        share, min_recency = student_rows(cfg, i)
        for kind, distilled in (("raw", False), ("distill", True)):
            if kind == "raw" and i in skip_raw:
                continue
            members.append(Member(
                name=f"{s.name}/{kind}", model=build_model(student_spec(cfg, spec, i), s, s.towers,
                                                           student_init_seed(cfg, i),
                                                           rep_columns=student_rep_columns(cfg, i),
                                                           code_columns=student_code_columns(cfg, i)),
                objective=student_objective(cfg, i, distilled), uses_teacher=distilled,
                ratio=share, min_recency=min_recency, negative_keep=s.negative_keep_rate,
                seed=student_sample_seed(cfg, i), unlabelled_share=s.unlabelled.share if distilled else 0.0,
                batch_size=s.batch_size, epochs=s.epochs, lr=s.lr, embedding_lr=s.embedding_lr,
                eval_every=s.eval_every, patience=s.patience))
            if distilled and s.distill_from != "teacher":
                from recdistill.train.committee import configure_member

                configure_member(members[-1], cfg, i, experts)
    return members


PACKED_SEEDS = "packed_seeds"  # loop-config: the seeds whose students share this group's pass


def seed_channel(seed: int) -> str:
    """The distill stream's column of seed ``seed``'s teacher logits in a packed run."""
    from recdistill.signals.kinds import LOGIT

    return f"{LOGIT}@seed{seed}"


def seed_prefix(seed: int) -> str:
    """The member-name prefix of seed ``seed``'s students in a packed group."""
    return f"seed-{seed}/"


def packed_members(cfg: ExperimentConfig, spec: FeatureSpec, indices: list[int], seeds: list[dict[str, Any]],
                   experts: Collection[Ranker] = ()) -> list[Any]:
    """``student_members`` of each packed seed (``{"seed", "skip_raw"}``): the models, rows
    and seeds each would have in its own run (``cfg`` with its ``run.seed``), named
    ``seed-<s>/<student>/<kind>`` and reading their own teacher's channel."""
    members = []
    for entry in seeds:
        seed = int(entry["seed"])
        own = replace(cfg, run=replace(cfg.run, seed=seed))
        for m in student_members(own, spec, indices, entry.get("skip_raw", ()), experts):
            m.name, m.channel = seed_prefix(seed) + m.name, seed_channel(seed)
            members.append(m)
    return members


def check_validation(cfg: ExperimentConfig, valid_rows: int) -> None:
    """Early stopping needs validation rows: fail before any training when there are none."""
    if valid_rows:
        return

    def set_by_hand(p: object) -> bool:  # patience auto is 0 without a valid split
        return isinstance(p, int) and p > 0

    stopping = ([f"teacher.patience={cfg.teacher.patience}"] if set_by_hand(cfg.teacher.patience) else []) + [
        f"students.{i}.patience={s.patience}" for i, s in enumerate(cfg.students) if set_by_hand(s.patience)]
    if stopping:
        raise ValueError(f"{', '.join(stopping)}: early stopping needs a validation split, but the valid split has "
                         f"no rows (data.splits={cfg.data.splits}); give it a share or set patience to 0")


def early_fields(summary: dict[str, Any], suffix: str = "") -> dict[str, Any]:
    """Where a model stopped and its validation curve, as results.json names them."""
    return {f"{k}{suffix}": summary[k] for k in ("stopped_epoch", "best_epoch", "valid_curve")}
