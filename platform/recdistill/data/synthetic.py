"""The built-in synthetic click log: a Criteo-like log whose true click probability is known.

The ground truth is a logit built from five parts, each scaled to a configurable standard
deviation on day 0 so that the ``*_scale`` knobs mean what they say:

    logit = b0 + first-order per-id effects
               + FM-style pairwise interactions of per-id latent factors
               + a random MLP over the field factors (higher order: beyond FM and LR)
               + affinity between the item and the user's click history
               + dense-feature effects

b0 is solved so that the mean click probability on day 0 equals ``base_ctr``.

Fields come in three roles: user-side (fixed per user), item-side (fixed per item) and
context (drawn per impression). Drift acts on those roles differently: user- and
context-side factors rotate slowly, so user-item affinities change while every vector's
norm stays put; item popularity can slide; shift events replace part of the first-order
weights and user factors, make new ids popular and move the click odds, all at once. Rows are generated day by day in chunks and written as
Parquet shards, so memory stays bounded by the chunk and the model's parameter tables.

A log is written into a temporary directory beside its target and renamed into place
only when complete, with ``_manifest.json`` listing every shard (name, bytes, rows):
a crash leaves the target as it was, and ``verified_manifest`` accepts a log only when
the files there are exactly the listed ones.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.optimize import brentq

from recdistill.config import DataConfig, SyntheticConfig, to_dict
from recdistill.data.rejects import DataError
from recdistill.data.schema import DAY, LABEL, P_TRUE, ROW_ID, SAMPLE_RATE, TS, LogSchema
from recdistill.metrics import StreamingAUC

START_TS = 1_767_225_600  # 2026-01-01 00:00 UTC: a fixed origin keeps output byte-identical
DAY_S = 86_400
USER, ITEM, HISTORY = "user_id", "item_id", "hist_item_id"
SEGMENT = "segment"  # with ``segments``: the impression's segment, a categorical column
SCENARIO = "scenario"  # with ``scenarios``: the impression's item surface, a categorical column
_CHUNK_ROWS = 65_536
MANIFEST = "_manifest.json"
_HIDDEN = 32


class _Zipf:
    """Zipf-like ranks 0..n-1 (rank 0 most popular) by the inverse CDF of a power law.

    The discretised continuous power law on [1, n+1) keeps the head/tail shape of a
    discrete Zipf law at O(1) per draw, where a CDF search would cost a cache miss per level
    on million-id fields.
    """

    def __init__(self, n: int, exponent: float) -> None:
        self.n = n
        self.s = exponent

    def ranks(self, u: np.ndarray) -> np.ndarray:
        n, s = self.n, self.s
        if abs(s - 1.0) < 1e-9:
            x = np.power(n + 1.0, u)
        else:
            a = 1.0 - s
            x = np.power(1.0 + u * ((n + 1.0) ** a - 1.0), 1.0 / a)
        return np.minimum(x.astype(np.int64) - 1, n - 1)


_GROUP = {"user": "user", USER: "user", "item": "item", ITEM: "item", "context": "context"}


@dataclass(frozen=True)
class _Field:
    name: str
    cardinality: int
    role: str  # "user", "item", "context" (attribute fields), or USER / ITEM themselves


class ClickModel:
    """Ground-truth parameters, deterministic from the seed. Mutated only by shift events."""

    def __init__(self, cfg: SyntheticConfig, seed: int) -> None:
        self.cfg = cfg
        self.seed = seed
        rng = np.random.default_rng([seed, 0])
        n_c = cfg.num_categorical
        roles = (["user"] * cfg.user_side_fields + ["item"] * cfg.item_side_fields
                 + ["context"] * (n_c - cfg.user_side_fields - cfg.item_side_fields) + [USER, ITEM])
        self.fields = [_Field(name, card, role) for (name, card), role in zip(_field_layout(cfg), roles)]
        self.dense_names = [f"I{j + 1}" for j in range(cfg.num_dense)]
        self.zipf = {f.name: _Zipf(f.cardinality, cfg.zipf_exponent) for f in self.fields}
        k = cfg.latent_dim
        # Attribute fields are fixed per user / item: drawn once from the field's Zipf law.
        owners = {"user": cfg.num_users, "item": cfg.num_items}
        self.attr = {f.name: self.zipf[f.name].ranks(rng.random(owners[f.role]))
                     for f in self.fields if f.role in owners}
        self.w = {f.name: rng.standard_normal(f.cardinality, dtype=np.float32) for f in self.fields}
        self.v = {f.name: rng.standard_normal((f.cardinality, k), dtype=np.float32) / np.float32(math.sqrt(k))
                  for f in self.fields}
        self.sqn = {name: np.einsum("ij,ij->i", v, v) for name, v in self.v.items()}
        # id = (popularity rank + offset) mod cardinality; shift events move the offsets
        self.rank_offset = {f.name: 0 for f in self.fields}
        self.item_mu = self.v[ITEM][self.zipf[ITEM].ranks(rng.random(200_000))].mean(0)
        # Rotating roles: user- and context-side factors turn, item-side ones do not, so
        # the drift changes user-item affinities and not merely every vector at once.
        self.rotating = {f.name for f in self.fields if f.role in ("user", USER, "context")}
        self.mlp_w1 = (rng.standard_normal((3 * k, _HIDDEN)) / math.sqrt(k)).astype(np.float32)
        self.mlp_b1 = (rng.standard_normal(_HIDDEN) * 0.5).astype(np.float32)
        self.mlp_w2 = (rng.standard_normal(_HIDDEN) / math.sqrt(_HIDDEN)).astype(np.float32)
        nd = cfg.num_dense
        self.dense_loc = rng.uniform(0.0, 4.0, nd).astype(np.float32)
        self.dense_sigma = rng.uniform(0.6, 1.6, nd).astype(np.float32)
        # dense counts depend on the item's factors, so they carry signal
        self.dense_link = rng.standard_normal((nd, k)).astype(np.float32)
        self.dense_beta = rng.standard_normal(nd).astype(np.float32)
        self.dense_missing = np.linspace(0.0, cfg.dense_missing_rate, nd) if nd else np.zeros(0)
        self._segment_parts(cfg, seed)
        # each scenario's own catalogue: a block of item ids with its own popularity order
        self.scenarios = cfg.scenarios
        self.catalogue = cfg.num_items // cfg.scenarios if cfg.scenarios else cfg.num_items
        if cfg.scenarios:
            self.zipf_catalogue = _Zipf(self.catalogue, cfg.zipf_exponent)
        self.norm = {"first": 1.0, "pair": 1.0, "high": 1.0, "seq": 1.0, "dense": 1.0}
        self.b0 = 0.0
        self._calibrate()

    def _segment_parts(self, cfg: SyntheticConfig, seed: int) -> None:
        """Each segment's own first-order weights and MLP (a stream of their own, so a log
        without segments keeps its bytes). A segment's weights are ``keep``·shared +
        ``strength``·own, with keep² + strength² = 1, so the parts' scales do not move."""
        self.segments = cfg.segments
        if not cfg.segments:
            return
        rng = np.random.default_rng([seed, 3])
        s, k = cfg.segments, cfg.latent_dim
        self.seg_strength = np.float32(cfg.segment_strength)
        self.seg_keep = np.float32(math.sqrt(1.0 - cfg.segment_strength ** 2))
        self.w_own = {f.name: rng.standard_normal((s, f.cardinality), dtype=np.float32) for f in self.fields}
        self.mlp_w1_own = (rng.standard_normal((s, 3 * k, _HIDDEN)) / math.sqrt(k)).astype(np.float32)
        self.mlp_w2_own = (rng.standard_normal((s, _HIDDEN)) / math.sqrt(_HIDDEN)).astype(np.float32)

    # -- drawing impressions -------------------------------------------------------

    def draw(self, rng: np.random.Generator, day_pos: np.ndarray) -> dict[str, np.ndarray]:
        """Categorical ids for impressions at continuous day positions ``day_pos``."""
        n = day_pos.size
        cfg = self.cfg
        users = self.zipf[USER].ranks(rng.random(n))
        if self.scenarios:  # (a log without scenarios draws exactly as before they existed)
            item_rank = self.zipf_catalogue.ranks(rng.random(n))
            scenario = rng.integers(self.scenarios, size=n)
        else:
            item_rank = self.zipf[ITEM].ranks(rng.random(n))
        m = self.catalogue
        slide = np.floor(cfg.drift.popularity_shift_per_day * day_pos * m).astype(np.int64)
        items = (item_rank + slide + self.rank_offset[ITEM]) % m
        ids = {USER: users, ITEM: items}
        if self.scenarios:
            ids[ITEM] = items = scenario * m + items
            ids[SCENARIO] = scenario
        for f in self.fields:
            if f.role == "user":
                ids[f.name] = self.attr[f.name][users]
            elif f.role == "item":
                ids[f.name] = self.attr[f.name][items]
            elif f.role == "context":
                ranks = self.zipf[f.name].ranks(rng.random(n))
                ids[f.name] = (ranks + self.rank_offset[f.name]) % f.cardinality
        if self.segments:  # drawn last: the other fields' draws are those of a log without segments
            ids[SEGMENT] = rng.integers(self.segments, size=n)
        return ids

    def dense(self, rng: np.random.Generator, ids: dict[str, np.ndarray]) -> np.ndarray:
        """Heavy-tailed counts (log-normal, floored), informative of the item; shape (n, nd)."""
        n = ids[USER].size
        if not self.cfg.num_dense:
            return np.zeros((n, 0))
        item_v = self.v[ITEM][ids[ITEM]]
        log_mean = self.dense_loc + 0.5 * item_v @ self.dense_link.T
        noise = rng.standard_normal((n, self.cfg.num_dense), dtype=np.float32) * self.dense_sigma
        return np.floor(np.expm1(np.maximum(log_mean + noise, 0.0))).astype(np.float32)

    # -- the ground-truth logit ----------------------------------------------------

    def components(self, ids: dict[str, np.ndarray], dense: np.ndarray, history: np.ndarray,
                   day_pos: np.ndarray) -> dict[str, np.ndarray]:
        k = self.cfg.latent_dim
        n = day_pos.size
        first = np.zeros(n, dtype=np.float32)
        sq = np.zeros(n, dtype=np.float32)
        sums = {g: np.zeros((n, k), dtype=np.float32) for g in ("user", "item", "context")}
        buf = np.empty((n, k), dtype=np.float32)
        seg = ids.get(SEGMENT)
        for f in self.fields:
            idx = ids[f.name]
            if seg is None:
                first += self.w[f.name][idx]
            else:
                first += self.seg_keep * self.w[f.name][idx] + self.seg_strength * self.w_own[f.name][seg, idx]
            sq += self.sqn[f.name][idx]
            # take(out=) is several times faster than fancy indexing for row gathers
            np.take(self.v[f.name], idx, axis=0, out=buf)
            np.add(sums[_GROUP[f.role]], buf, out=sums[_GROUP[f.role]])
        s_rot, s_item, s_ctx = sums["user"], sums["item"], sums["context"]
        angle = self.cfg.drift.rotation_per_day * day_pos
        s_rot = _rotate(s_rot, angle)
        s_ctx = _rotate(s_ctx, angle)
        total = s_rot + s_item + s_ctx
        pair = 0.5 * (np.einsum("ij,ij->i", total, total) - sq)
        z = np.concatenate([s_rot, s_item, s_ctx], axis=1)
        high = self._higher_order(z, seg)
        # Padding ids are -1, which take() maps to the appended zero row. The shown item is
        # masked out of its own history: popular items recur in both, and <v, v> > 0 would
        # make CTR climb as histories fill, a trend that is not drift.
        hist = np.where(history == ids[ITEM][:, None], -1, history)
        item_pad = np.vstack([self.v[ITEM], np.zeros((1, k), dtype=np.float32)])
        hist_sum = np.take(item_pad, hist.ravel(), axis=0).reshape(*hist.shape, k).sum(1)
        hist_n = (hist >= 0).sum(1, keepdims=True)
        # Centred on the mean shown item: head items dominate both histories and
        # impressions, and an uncentred dot product would reward popularity, not taste.
        hist_mean = (hist_sum - hist_n * self.item_mu) / np.maximum(hist_n, 1)
        item_v = np.take(self.v[ITEM], ids[ITEM], axis=0) - self.item_mu
        seq = np.einsum("ij,ij->i", hist_mean, item_v) * math.sqrt(k)
        # log1p(count) ≈ dense_loc on average: centre the effect there
        dens = (np.log1p(dense) - self.dense_loc) @ self.dense_beta if dense.shape[1] else np.zeros(n)
        return {"first": first, "pair": pair, "high": high, "seq": seq, "dense": dens}

    def _higher_order(self, z: np.ndarray, seg: np.ndarray | None) -> np.ndarray:
        """The random MLP over the field factors; with segments, each segment's own mix."""
        if seg is None:
            return np.tanh(z @ self.mlp_w1 + self.mlp_b1) @ self.mlp_w2
        high = np.empty(z.shape[0], dtype=np.float32)
        for s in range(self.segments):
            rows = np.flatnonzero(seg == s)
            w1 = self.seg_keep * self.mlp_w1 + self.seg_strength * self.mlp_w1_own[s]
            w2 = self.seg_keep * self.mlp_w2 + self.seg_strength * self.mlp_w2_own[s]
            high[rows] = np.tanh(z[rows] @ w1 + self.mlp_b1) @ w2
        return high

    def logit(self, comps: dict[str, np.ndarray]) -> np.ndarray:
        c = self.cfg
        scales = {"first": c.first_order_scale, "pair": c.pairwise_scale, "high": c.higher_order_scale,
                  "seq": c.sequence_scale, "dense": c.dense_scale}
        out = np.full(comps["first"].shape, self.b0)
        for name, arr in comps.items():
            out += scales[name] * (arr - self.norm_mean[name]) / self.norm[name]
        return out

    def _calibrate(self, histories: "_Histories | None" = None) -> None:
        """Scale each part to unit std and solve b0 so that day-0 CTR is ``base_ctr``.

        Called once with random histories (before any click exists) to fix the scales,
        then again after the warm-up with the users' real histories to re-solve b0 only.
        """
        rng = np.random.default_rng([self.seed, 1])
        n = 50_000
        day_pos = np.zeros(n)
        ids = self.draw(rng, day_pos)
        dense = self.dense(rng, ids)
        if histories is not None:
            hist = histories.lookup(ids[USER])
        elif self.cfg.history_length:
            hist = self.zipf[ITEM].ranks(rng.random((n, self.cfg.history_length)))
        else:
            hist = np.full((n, 1), -1, dtype=np.int64)
        comps = self.components(ids, dense, hist, day_pos)
        if histories is None:
            self.norm_mean = {k: float(v.mean()) for k, v in comps.items()}
            self.norm = {k: float(v.std()) or 1.0 for k, v in comps.items()}
        base = self.logit(comps) - self.b0

        def gap(b: float) -> float:
            return float(np.mean(1.0 / (1.0 + np.exp(-(base + b))))) - self.cfg.base_ctr

        self.b0 = brentq(gap, -40.0, 40.0, xtol=1e-6)

    def apply_shift(self, event: int, magnitude: float, ctr_jump: float) -> None:
        """A regime change: part of the first-order weights and user factors are redrawn,
        and for a ``magnitude`` share of the item and context fields a new set of ids
        becomes popular (the label rate and the feature frequencies both move)."""
        rng = np.random.default_rng([self.seed, 2, event])
        keep = math.sqrt(1.0 - magnitude ** 2)
        for f in self.fields:
            self.w[f.name] = (keep * self.w[f.name]
                              + magnitude * rng.standard_normal(f.cardinality)).astype(np.float32)
            if f.role in ("user", USER):
                noise = rng.standard_normal(self.v[f.name].shape) / math.sqrt(self.cfg.latent_dim)
                self.v[f.name] = (keep * self.v[f.name] + magnitude * noise).astype(np.float32)
                self.sqn[f.name] = np.einsum("ij,ij->i", self.v[f.name], self.v[f.name])
            if f.role in ("context", ITEM) and rng.random() < magnitude:
                self.rank_offset[f.name] = int(rng.integers(f.cardinality))
        self.b0 += (1 if rng.random() < 0.5 else -1) * math.log1p(ctr_jump)


def _rotate(s: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotate consecutive coordinate pairs by a per-row angle (norm-preserving)."""
    out = s.copy()
    c, si = np.cos(angle)[:, None], np.sin(angle)[:, None]
    pairs = s.shape[1] // 2 * 2
    a, b = s[:, 0:pairs:2], s[:, 1:pairs:2]
    out[:, 0:pairs:2] = c * a - si * b
    out[:, 1:pairs:2] = si * a + c * b
    return out


class _Histories:
    """Each user's last L clicked items, left-padded with -1; updated after each chunk."""

    def __init__(self, num_users: int, length: int) -> None:
        self.length = length
        self.h = np.full((num_users, length), -1, dtype=np.int64)

    def lookup(self, users: np.ndarray) -> np.ndarray:
        return self.h[users]

    def update(self, users: np.ndarray, items: np.ndarray) -> None:
        """Append clicks (given in time order); keep the most recent L per user."""
        L = self.length
        if L == 0 or users.size == 0:
            return
        order = np.argsort(users, kind="stable")
        u, it = users[order], items[order]
        uniq, start, counts = np.unique(u, return_index=True, return_counts=True)
        pos = np.arange(u.size) - np.repeat(start, counts)
        from_end = np.repeat(counts, counts) - 1 - pos
        keep = from_end < L
        kept_counts = np.minimum(counts, L)
        group = np.repeat(np.arange(uniq.size), counts)[keep]
        q = (pos - (np.repeat(counts, counts) - np.repeat(kept_counts, counts)))[keep]
        comb = np.full((uniq.size, 2 * L), -1, dtype=np.int64)
        comb[:, :L] = self.h[uniq]
        comb[group, L + q] = it[keep]
        take = kept_counts[:, None] + np.arange(L)
        self.h[uniq] = np.take_along_axis(comb, take, axis=1)


def synthetic_schema(cfg: SyntheticConfig) -> LogSchema:
    model_fields = (_field_layout(cfg) + ([(SEGMENT, cfg.segments)] if cfg.segments else [])
                    + ([(SCENARIO, cfg.scenarios)] if cfg.scenarios else []))
    seq = ((HISTORY, ITEM),) if cfg.history_length else ()
    return LogSchema(
        dense=tuple(f"I{j + 1}" for j in range(cfg.num_dense)),
        categorical=tuple(name for name, _ in model_fields),
        sequences=seq,
        cardinalities=tuple(card for _, card in model_fields),
        categorical_type="int64",
        has_ts=True,
        user_field=USER,
        item_field=ITEM,
        extras=(P_TRUE, SAMPLE_RATE, DAY),
        source="synthetic",
    )


def _field_layout(cfg: SyntheticConfig) -> list[tuple[str, int]]:
    cards = np.geomspace(cfg.min_cardinality, cfg.max_cardinality, cfg.num_categorical).round().astype(np.int64)
    return ([(f"C{i + 1}", int(c)) for i, c in enumerate(cards)]
            + [(USER, cfg.num_users), (ITEM, cfg.num_items)])


@dataclass
class SynthSummary:
    rows: int
    positives: int
    ctr: float
    ctr_by_day: list[float]
    rows_by_day: list[int]
    oracle_auc: float
    oracle_logloss: float
    mean_p_true: float
    negative_keep_rate: float
    files: list[str]
    seconds: float

    def lines(self) -> list[str]:
        out = [
            f"rows            {self.rows:,}",
            f"CTR             {self.ctr:.4f}  (before down-sampling: mean p_true {self.mean_p_true:.4f}; "
            f"negative keep rate {self.negative_keep_rate:g})",
            f"oracle AUC      {self.oracle_auc:.4f}   oracle LogLoss {self.oracle_logloss:.4f}  "
            f"(true p, corrected for down-sampling: the ceiling)",
            f"shards          {len(self.files)}   {self.rows / max(self.seconds, 1e-9):,.0f} rows/s",
            "CTR by day      " + "  ".join(f"d{d}:{c:.4f}" for d, c in enumerate(self.ctr_by_day)),
        ]
        return out


def generate(data: DataConfig, out_dir: str | Path,
             progress: Callable[[int], None] | None = None) -> SynthSummary:
    """Write ``data.rows`` rows of the synthetic log as Parquet shards under ``out_dir``,
    replacing the log there only once the new one is complete."""
    out = Path(out_dir).resolve()  # a linked data dir: replace what it points to, not the link
    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_partials(out)
    partial = out.parent / f"{_partial_prefix(out)}{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        summary = _write_log(data, partial, progress)
        _swap_in(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return summary


def _write_log(data: DataConfig, out: Path, progress: Callable[[int], None] | None) -> SynthSummary:
    t0 = time.perf_counter()
    cfg = data.synthetic
    schema = synthetic_schema(cfg)
    arrow_schema = schema.arrow_schema()
    model = ClickModel(cfg, data.seed)
    oracle = StreamingAUC()
    days = data.days
    pos_by_day = np.zeros(days, dtype=np.int64)
    rows_by_day = np.zeros(days, dtype=np.int64)
    p_sum = 0.0
    w_sum = 0.0
    shards = _ShardWriter(out, arrow_schema, data.shard_rows)
    for chunk in _chunks(model, data):
        table = pa.Table.from_arrays(chunk.columns, schema=arrow_schema)
        shards.write(table)
        y = table.column(LABEL).to_numpy()
        p = table.column(P_TRUE).to_numpy().astype(np.float64)
        rate = table.column(SAMPLE_RATE).to_numpy()
        # On the down-sampled log the best possible prediction is p corrected by the keep rate.
        p_sampled = p / (p + (1.0 - p) * cfg.negative_keep_rate)
        oracle.update(y, p_sampled)
        day = table.column(DAY).to_numpy()
        np.add.at(pos_by_day, day, y)
        np.add.at(rows_by_day, day, 1)
        p_sum += float((p / rate).sum())
        w_sum += float((1.0 / rate).sum())  # impressions before down-sampling
        if progress is not None:
            progress(table.num_rows)
    listed = shards.close()
    files = [f["name"] for f in listed]
    rows = int(rows_by_day.sum())
    summary = SynthSummary(
        rows=rows,
        positives=int(pos_by_day.sum()),
        ctr=float(pos_by_day.sum() / max(rows, 1)),
        ctr_by_day=[float(p / r) if r else float("nan") for p, r in zip(pos_by_day, rows_by_day)],
        rows_by_day=[int(r) for r in rows_by_day],
        oracle_auc=oracle.auc(),
        oracle_logloss=oracle.log_loss(),
        mean_p_true=p_sum / w_sum if w_sum else float("nan"),
        negative_keep_rate=cfg.negative_keep_rate,
        files=files,
        seconds=time.perf_counter() - t0,
    )
    manifest = {"schema": json.loads(schema.to_json()), "data": to_dict(data), "files": listed,
                "summary": {k: v for k, v in summary.__dict__.items() if k != "seconds"}}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return summary


def manifest_problem(out: Path) -> str | None:
    """Why the synthetic log in ``out`` cannot be trusted, or None when its manifest lists
    exactly the files there, with their sizes and Parquet row counts."""
    path = out / MANIFEST
    if not path.is_file():
        return f"{path} does not exist"
    try:
        listed = json.loads(path.read_text()).get("files")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return f"{path} is not valid JSON ({e})"
    if not isinstance(listed, list):
        return f"{path} lists no files (written before manifests did)"
    want = {f["name"]: f for f in listed}
    have = {p.name for p in out.iterdir() if p.name != MANIFEST}
    if have != set(want):
        return (f"{out} holds {sorted(have - set(want))} not in {MANIFEST} and lacks {sorted(set(want) - have)} "
                f"that it lists")
    for name, f in want.items():
        p = out / name
        if p.stat().st_size != f["bytes"]:
            return f"{p}: {p.stat().st_size} bytes, {MANIFEST} says {f['bytes']}"
        try:
            rows = pq.read_metadata(p).num_rows
        except (OSError, pa.ArrowInvalid) as e:
            return f"{p}: not a readable Parquet file ({e})"
        if rows != f["rows"]:
            return f"{p}: {rows} rows, {MANIFEST} says {f['rows']}"
    return None


def verified_manifest(out: Path) -> dict | None:
    """The manifest of the log in ``out`` when ``manifest_problem`` finds none, else None."""
    return None if manifest_problem(out) else json.loads((out / MANIFEST).read_text())


def _check_replaceable(out: Path) -> None:
    # The whole directory is replaced: refuse one that holds anything but a synthetic log.
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: a file, not a directory; the synthetic log needs a directory of its own")
    foreign = sorted(p.name for p in out.iterdir() if p.name != MANIFEST and not
                     (p.name.startswith("part-") and p.name.endswith(".parquet"))) if out.is_dir() else []
    if foreign:
        raise DataError(f"{out}: holds {foreign[:5]}, which are not part of a synthetic log; writing the log "
                        f"replaces the whole directory, so remove them or choose a directory of its own "
                        f"(data.path, or --out for recdistill synth)")


def _partial_prefix(out: Path) -> str:
    return f".{out.name}.partial-"


def _remove_dead_partials(out: Path) -> None:
    """Temporary logs of generations killed on this host (their process is gone)."""
    host = socket.gethostname()
    for p in out.parent.glob(f"{_partial_prefix(out)}{host}-*"):
        pid = p.name.rsplit("-", 1)[-1].removesuffix(".old")
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _swap_in(partial: Path, out: Path) -> None:
    """Rename the complete log into place. A crash between the two renames leaves no log
    at ``out`` (the next run regenerates), never a mix of old and new shards."""
    if out.exists():
        old = partial.with_name(partial.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        partial.rename(out)
        shutil.rmtree(old)
    else:
        partial.rename(out)


class _ShardWriter:
    """Parquet shards of exactly ``shard_rows`` rows (the last may be shorter), so shard
    boundaries depend on row counts only, never on how generation was chunked."""

    def __init__(self, out: Path, schema: pa.Schema, shard_rows: int) -> None:
        self.out, self.schema, self.shard_rows = out, schema, shard_rows
        self.files: list[str] = []
        self.counts: list[int] = []
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        while table.num_rows:
            if self.writer is None or self.rows >= self.shard_rows:
                self._next()
            take = min(self.shard_rows - self.rows, table.num_rows)
            self.writer.write_table(table.slice(0, take))
            self.rows += take
            self.counts[-1] += take
            table = table.slice(take)

    def _next(self) -> None:
        if self.writer is not None:
            self.writer.close()
        name = f"part-{len(self.files):05d}.parquet"
        self.files.append(name)
        self.counts.append(0)
        self.writer = pq.ParquetWriter(self.out / name, self.schema, compression="zstd")
        self.rows = 0

    def close(self) -> list[dict[str, int | str]]:
        """The shards written: name, bytes and rows of each (the manifest's file list)."""
        if self.writer is not None:
            self.writer.close()
        return [{"name": n, "bytes": (self.out / n).stat().st_size, "rows": r} for n, r in zip(self.files, self.counts)]


def _chunks(model: ClickModel, data: DataConfig) -> Iterator[pa.Table]:
    """Tables of output rows in time order, chunk by chunk, day by day."""
    cfg = model.cfg
    hist = _Histories(cfg.num_users, cfg.history_length)
    per_day = np.full(data.days, data.rows // data.days, dtype=np.int64)
    per_day[: data.rows % data.days] += 1
    shift_events = sorted(set(cfg.drift.shift_days))
    # Warm-up: users arrive with click histories from before the log starts, so day 0
    # is not a cold start; its rows are generated and thrown away, then b0 is re-solved
    # on the warm histories so that day-0 CTR is still ``base_ctr``.
    for w in range(cfg.warmup_days):
        n_w = int(per_day[0])
        for c, lo_i in enumerate(range(0, n_w, _CHUNK_ROWS)):
            n = min(_CHUNK_ROWS, n_w - lo_i)
            start = -cfg.warmup_days + w
            _make_chunk(model, data, hist, -(1 + w * 10_000 + c), n,
                        start + lo_i / n_w, start + (lo_i + n) / n_w, 0, 0)
    if cfg.warmup_days:
        model._calibrate(hist)
    row0 = 0
    chunk_index = 0
    for day in range(data.days):
        if day in shift_events:
            model.apply_shift(shift_events.index(day), cfg.drift.shift_magnitude, cfg.drift.shift_ctr_jump)
        n_day = int(per_day[day])
        done = 0
        while done < n_day:
            n = min(_CHUNK_ROWS, n_day - done)
            lo, hi = day + done / n_day, day + (done + n) / n_day
            table = _make_chunk(model, data, hist, chunk_index, n, lo, hi, row0, day)
            yield table
            row0 += n
            done += n
            chunk_index += 1


def _make_chunk(model: ClickModel, data: DataConfig, hist: _Histories, chunk_index: int,
                n: int, lo: float, hi: float, row0: int, day: int) -> pa.Table:
    cfg = model.cfg
    keep_neg = cfg.negative_keep_rate
    parts: list[dict[str, np.ndarray]] = []
    kept = 0
    attempt = 0
    while kept < n:
        rng = np.random.default_rng([data.seed, 10, chunk_index & 0xFFFFFFFF, attempt])
        # Expected keep share is ctr + (1-ctr)·r; draw enough impressions for n rows.
        m = int(math.ceil((n - kept) / (cfg.base_ctr + (1 - cfg.base_ctr) * keep_neg) * 1.1)) + 64
        day_pos = np.sort(rng.uniform(lo, hi, m))
        ids = model.draw(rng, day_pos)
        dense = model.dense(rng, ids)
        history = hist.lookup(ids[USER])
        logit = model.logit(model.components(ids, dense, history, day_pos))
        p = 1.0 / (1.0 + np.exp(-logit))
        y = rng.random(m) < p
        keep = y | (rng.random(m) < keep_neg)
        missing = rng.random(dense.shape) < model.dense_missing
        dense = np.where(missing, np.nan, dense)
        sel = np.flatnonzero(keep)
        part = {"day_pos": day_pos[sel], "p": p[sel], "y": y[sel], "dense": dense[sel],
                "history": history[sel], **{k: v[sel] for k, v in ids.items()}}
        parts.append(part)
        kept += sel.size
        attempt += 1
    merged = {k: np.concatenate([pt[k] for pt in parts]) for k in parts[0]}
    rng = np.random.default_rng([data.seed, 11, chunk_index & 0xFFFFFFFF])
    # Thin to exactly n rows uniformly: positives and negatives alike, so the recorded
    # relative keep rate (what debiasing needs) stays exact.
    pick = np.sort(rng.choice(merged["y"].size, size=n, replace=False))
    pick = pick[np.argsort(merged["day_pos"][pick], kind="stable")]
    rows = {k: v[pick] for k, v in merged.items()}
    y = rows["y"]
    hist.update(rows[USER][y], rows[ITEM][y])
    return _to_table(model, rows, row0, day, keep_neg)


def _to_table(model: ClickModel, rows: dict[str, np.ndarray], row0: int, day: int,
              keep_neg: float) -> pa.Table:
    n = rows["y"].size
    cols: dict[str, pa.Array] = {
        ROW_ID: pa.array(np.arange(row0, row0 + n, dtype=np.int64)),
        LABEL: pa.array(rows["y"].astype(np.int8)),
    }
    for j, name in enumerate(model.dense_names):
        cols[name] = pa.array(rows["dense"][:, j].astype(np.float32))
    for f in model.fields:
        cols[f.name] = pa.array(rows[f.name].astype(np.int64))
    if model.segments:
        cols[SEGMENT] = pa.array(rows[SEGMENT].astype(np.int64))
    if model.scenarios:
        cols[SCENARIO] = pa.array(rows[SCENARIO].astype(np.int64))
    if model.cfg.history_length:
        h = rows["history"]
        valid = h >= 0
        offsets = np.concatenate([[0], np.cumsum(valid.sum(1))]).astype(np.int32)
        cols[HISTORY] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(h[valid].astype(np.int64)))
    cols[TS] = pa.array((START_TS + rows["day_pos"] * DAY_S).astype(np.int64))
    cols[P_TRUE] = pa.array(rows["p"].astype(np.float32))
    cols[SAMPLE_RATE] = pa.array(np.where(rows["y"], 1.0, keep_neg).astype(np.float32))
    cols[DAY] = pa.array(np.full(n, day, dtype=np.int16))
    return pa.table(cols)

