"""Dimension-adaptive projection of an old model's embedding table into a new one (no training).

CrossAdapt warm-starts a new model from an old one whose embedding dim may differ. Per
categorical field the old rows E (n, d_t) become rows of the new dim d_s:

* ``d_s == d_t``: copied as they are ("identity").
* ``d_s <  d_t``: centred PCA onto the top d_s directions ("pca"). It is the best rank-d_s
  fit of the centred rows, in both reconstruction and Gram (inner-product) error, so it
  loses the least of what the old model learned; the errors it does make are reported.
* ``d_s >  d_t``: E·W with W (d_t, d_s) having orthonormal rows ("qr"), so every inner
  product and norm is kept exactly and the extra directions start empty.

Old and new vocabularies may differ per field; :func:`map_rows` carries projected old rows
over to new codes through observed (new code, old code, count) pairs. Only the categorical
table is transferred: the dense-feature projection (``FeatureEmbedding.dense``) and all
backbone layers belong to one architecture and are left to their usual init.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol, Sequence

import torch
from torch import Tensor

RESERVED_ROWS = 2  # code 0 = missing, code 1 = OOV in every field

Pairs = tuple[Tensor, Tensor, Tensor]  # (student_codes, teacher_codes, weights), one entry per observed pair


class _Spec(Protocol):
    buckets: tuple[int, ...]


class EmbeddingLike(Protocol):
    """What :func:`project_table` needs of a model's feature embedding (``FeatureEmbedding`` fits)."""

    spec: _Spec
    table: torch.nn.Embedding
    offsets: Tensor


@dataclass
class ProjectionResult:
    """Projected rows of one field and how much of the old geometry they keep."""

    weight: Tensor  # (n, d_s)
    method: str  # "identity" | "pca" | "qr"
    rel_recon_error: float  # ||X - X_hat||_F / ||X||_F (centred X for pca)
    gram_distortion: float  # ||G - G_S||_F / ||G||_F on at most gram_sample rows
    energy_kept: float  # fraction of sum(sigma^2) kept


@dataclass
class FieldReport:
    """Per-field outcome of :func:`project_table`; ``rows`` counts the old (teacher) rows."""

    field: int
    method: str
    d_t: int
    d_s: int
    rows: int
    rel_recon_error: float
    gram_distortion: float
    energy_kept: float
    mapped: int  # student rows set from teacher rows (reserved rows included)
    unmapped: int  # student rows left at their init

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def grow_matrix(d_t: int, d_s: int, generator: torch.Generator, *, dtype: torch.dtype = torch.float64) -> Tensor:
    """W (d_t, d_s) with W Wᵀ = I: E·W keeps every inner product of E exactly.

    The first d_t rows of a random orthogonal Q (QR of a Gaussian matrix) are drawn rather
    than a fixed [I | 0] so the new coordinates carry no axis the old model never used.
    Returned on the generator's device so the draw is the same wherever the tables live.
    """
    if not 0 < d_t <= d_s:
        raise ValueError(f"grow_matrix needs 0 < d_t <= d_s, got d_t={d_t}, d_s={d_s}")
    g = torch.randn(d_s, d_s, generator=generator, device=generator.device, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    # sign fix makes Q Haar-distributed (and unique given the draw) instead of depending on the QR routine
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1.0
    q = q * signs
    return q[:d_t].to(dtype)


def shrink_pca(x: Tensor, d_s: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Centred PCA of x (n, d_t) onto its top d_s directions.

    Returns ``(projected (n, d_s), components (d_t, k), mean (d_t,), singular values)`` with
    ``projected = (x - mean) @ components`` in its first k columns, k = min(d_s, rank). Columns
    past k are zero: a field with fewer rows or directions than d_s has nothing to put there.
    An exact SVD is used because one field's rows are a modest matrix (cost O(n·d_t²)).
    The singular values are all min(n, d_t) of the centred matrix, for error accounting.
    """
    n, d_t = x.shape
    if not 0 < d_s <= d_t:
        raise ValueError(f"shrink_pca needs 0 < d_s <= d_t, got d_s={d_s}, d_t={d_t}")
    mean = x.mean(0) if n else torch.zeros(d_t, dtype=x.dtype, device=x.device)
    xc = x - mean
    if n == 0:
        empty = torch.zeros(0, dtype=x.dtype, device=x.device)
        return x.new_zeros(0, d_s), x.new_zeros(d_t, 0), mean, empty
    _, s, vh = torch.linalg.svd(xc, full_matrices=False)
    # numpy's matrix_rank tolerance: directions below it are round-off, not learned structure
    tol = s.max() * max(n, d_t) * torch.finfo(s.dtype).eps
    rank = int((s > tol).sum())
    k = min(d_s, rank)
    v = vh[:k].T  # (d_t, k)
    # SVD signs are arbitrary: pin each component so its largest-magnitude entry is positive,
    # so the same table gives the same rows on any device or library build
    if k:
        idx = v.abs().argmax(0)
        flip = torch.sign(v.gather(0, idx.unsqueeze(0))).squeeze(0)
        flip[flip == 0] = 1.0
        v = v * flip
    projected = x.new_zeros(n, d_s)
    projected[:, :k] = xc @ v
    return projected, v, mean, s


def _rel(num: Tensor, den: Tensor) -> float:
    den_f = float(den)
    return float(num) / den_f if den_f > 0 else 0.0


def _gram_distortion(a: Tensor, b: Tensor, gram_sample: int, generator: torch.Generator) -> float:
    """||A Aᵀ - B Bᵀ||_F / ||A Aᵀ||_F on at most gram_sample rows, so no n×n matrix for big tables."""
    n = a.shape[0]
    if n > gram_sample:
        idx = torch.randperm(n, generator=generator, device=generator.device)[:gram_sample].to(a.device)
        a, b = a[idx], b[idx]
    ga, gb = a @ a.T, b @ b.T
    return _rel(torch.linalg.matrix_norm(ga - gb), torch.linalg.matrix_norm(ga))


def project_rows(x: Tensor, d_s: int, generator: torch.Generator, gram_sample: int = 2048) -> ProjectionResult:
    """Project one field's rows x (n, d_t) to d_s columns: identity, centred PCA or QR growth.

    PCA output is centred: the field mean is dropped on purpose. The new model's layers
    only see directions between rows (its own biases cover any constant offset), and adding
    the old mean back would need a d_s-dim image of it that PCA does not define. Errors for
    PCA are therefore measured on the centred rows (centred Gram); for QR/identity on raw rows.
    For QR, W is drawn before any Gram sample, so a fresh generator with one seed gives
    every field the same W, which also keeps inner products *between* fields.
    """
    n, d_t = x.shape
    if d_s <= 0:
        raise ValueError(f"d_s must be positive, got {d_s}")
    if d_s == d_t:
        w = x.clone()
        return ProjectionResult(w, "identity", 0.0, _gram_distortion(x, w, gram_sample, generator), 1.0)
    if d_s > d_t:
        mat = grow_matrix(d_t, d_s, generator).to(device=x.device, dtype=x.dtype)
        w = x @ mat
        recon = _rel(torch.linalg.matrix_norm(x - w @ mat.T), torch.linalg.matrix_norm(x))
        return ProjectionResult(w, "qr", recon, _gram_distortion(x, w, gram_sample, generator), 1.0)
    projected, comps, mean, s = shrink_pca(x, d_s)
    xc = x - mean
    k = comps.shape[1]
    recon = _rel(torch.linalg.matrix_norm(xc - projected[:, :k] @ comps.T), torch.linalg.matrix_norm(xc))
    s2 = s.square()
    energy = _rel(s2[:k].sum(), s2.sum()) if float(s2.sum()) > 0 else 1.0
    return ProjectionResult(projected, "pca", recon, _gram_distortion(xc, projected, gram_sample, generator), energy)


def identity_pairs(n: int, device: torch.device | str | None = None) -> Pairs:
    """Code i of the new vocabulary is code i of the old one, weight 1 (same vocabulary on both sides)."""
    codes = torch.arange(n, device=device)
    return codes, codes.clone(), torch.ones(n, device=device)


def map_rows(projected_teacher_rows: Tensor, student_init_rows: Tensor, pairs: Pairs) -> tuple[Tensor, int, int]:
    """Student rows from projected teacher rows through observed (student, teacher, weight) pairs.

    A student row with pairs of positive total weight becomes the weighted mean of the
    teacher rows it was seen with (a hashed id that merged several old ids gets their
    blend); one without keeps its init and counts as unmapped. Rows 0 and 1 (missing, OOV)
    always take teacher rows 0 and 1, overriding any pairs for them. Pairs that send a
    student id to the teacher's OOV row are kept: that is how the old model saw that id.
    Returns ``(rows, mapped_count, unmapped_count)``; the inputs are not modified.
    """
    n_t, d_s = projected_teacher_rows.shape
    n_s = student_init_rows.shape[0]
    if student_init_rows.shape[1] != d_s:
        raise ValueError(f"student rows have dim {student_init_rows.shape[1]}, projected teacher rows {d_s}")
    dev, dt = projected_teacher_rows.device, projected_teacher_rows.dtype
    s_codes, t_codes, weights = (p.reshape(-1).to(dev) for p in pairs)
    if not (s_codes.numel() == t_codes.numel() == weights.numel()):
        raise ValueError("pairs must be three 1-D tensors of one length")
    s_codes, t_codes, weights = s_codes.long(), t_codes.long(), weights.to(dt)
    if s_codes.numel():
        if int(s_codes.min()) < 0 or int(s_codes.max()) >= n_s:
            raise ValueError(f"student codes must lie in [0, {n_s})")
        if int(t_codes.min()) < 0 or int(t_codes.max()) >= n_t:
            raise ValueError(f"teacher codes must lie in [0, {n_t})")
        if bool((weights < 0).any()):
            raise ValueError("pair weights must be non-negative")
    contrib = weights.unsqueeze(1) * projected_teacher_rows[t_codes]
    num = torch.zeros(n_s, d_s, dtype=dt, device=dev).index_add_(0, s_codes, contrib)
    den = torch.zeros(n_s, dtype=dt, device=dev).index_add_(0, s_codes, weights)
    mapped = den > 0
    rows = student_init_rows.to(device=dev, dtype=dt).clone()
    rows[mapped] = num[mapped] / den[mapped].unsqueeze(1)
    r = min(RESERVED_ROWS, n_s, n_t)
    rows[:r] = projected_teacher_rows[:r]
    mapped[:r] = True
    m = int(mapped.sum())
    return rows, m, n_s - m


def project_table(teacher: EmbeddingLike, student: EmbeddingLike, pairs_per_field: Sequence[Pairs | None] | None,
                  seed: int, gram_sample: int = 2048) -> list[FieldReport]:
    """Write the teacher's categorical rows, projected to the student dim, into ``student.table`` in place.

    Per field: the teacher's slice -> :func:`project_rows` (PCA over all of the field's rows,
    not only those the data uses: simple, and the unused rows are few after hashing) ->
    :func:`map_rows` into the student's slice. ``pairs_per_field`` None (or a None entry)
    means the identity mapping, which needs equal bucket counts. Each field gets a fresh CPU
    generator seeded with ``seed``, so results do not depend on the device and growth uses
    one W for the whole table. Sequence columns share their field's rows, so they come along.
    Not transferred: ``.dense`` and anything past the categorical rows. Build the student's
    optimizer after this call, since it rewrites parameters in place.
    """
    t_buckets, s_buckets = tuple(teacher.spec.buckets), tuple(student.spec.buckets)
    if len(t_buckets) != len(s_buckets):
        raise ValueError(f"teacher has {len(t_buckets)} categorical fields, student {len(s_buckets)}")
    if pairs_per_field is not None and len(pairs_per_field) != len(t_buckets):
        raise ValueError(f"pairs_per_field has {len(pairs_per_field)} entries for {len(t_buckets)} fields")
    t_weight, s_weight = teacher.table.weight, student.table.weight
    d_t, d_s = int(t_weight.shape[1]), int(s_weight.shape[1])
    if t_weight.shape[0] < sum(t_buckets) or s_weight.shape[0] < sum(s_buckets):
        raise ValueError("a table has fewer rows than its spec's buckets")
    t_off = [int(o) for o in teacher.offsets.tolist()]
    s_off = [int(o) for o in student.offsets.tolist()]
    reports: list[FieldReport] = []
    with torch.no_grad():
        for f, (n_t, n_s) in enumerate(zip(t_buckets, s_buckets)):
            pairs = pairs_per_field[f] if pairs_per_field is not None else None
            if pairs is None:
                if n_t != n_s:
                    raise ValueError(f"field {f}: teacher has {n_t} buckets, student {n_s}; "
                                     f"identity mapping needs equal sizes, pass pairs for this field")
                pairs = identity_pairs(n_s)
            x = t_weight[t_off[f]:t_off[f] + n_t].detach()
            res = project_rows(x, d_s, torch.Generator().manual_seed(seed), gram_sample)
            dst = s_weight[s_off[f]:s_off[f] + n_s]
            rows, mapped, unmapped = map_rows(res.weight, dst.detach(), pairs)
            dst.copy_(rows)
            reports.append(FieldReport(f, res.method, d_t, d_s, n_t, res.rel_recon_error,
                                       res.gram_distortion, res.energy_kept, mapped, unmapped))
    return reports
