"""TokenMinds (issue 19): semantic IDs, the teacher's representations quantised into a few
discrete codes per entity by residual quantisation.

Level 1 runs k-means on the vectors; each later level runs k-means on what the levels before
it left (the residual), so an entity's code tuple (c1, ..., cL) spells its vector coarse to
fine. Plain torch (``torch.cdist``): ``scipy.cluster.vq`` runs one core and copies to
float64, too slow for millions of entities. The codebook is fitted on a bounded sample of
the values the teacher had written by the end of its history (``fit_sample``), so no
student-window label reaches the codes through the centroids; every stored value is then
encoded with it, keeping its (entity, time).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def kmeans(x: torch.Tensor, k: int, iters: int = 25, seed: int = 0) -> torch.Tensor:
    """``k`` centroids of the rows of ``x`` (n, d): k-means++ seeding, then Lloyd steps; a
    cluster left empty is re-seeded at the row farthest from its centroid."""
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    if n == 0:
        raise ValueError("kmeans: no vectors to fit")
    k = min(k, n)
    cent = x[torch.randint(n, (1,), generator=g)]
    d2 = torch.cdist(x, cent).squeeze(1).pow(2)
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1.0 / n)
        nxt = x[torch.multinomial(p, 1, generator=g)]
        cent = torch.cat([cent, nxt])
        d2 = torch.minimum(d2, torch.cdist(x, nxt).squeeze(1).pow(2))
    for _ in range(iters):
        dist = torch.cdist(x, cent)
        assign = dist.argmin(1)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(cent).index_add_(0, assign, x)
        new = sums / counts.clamp(min=1).unsqueeze(1).to(x.dtype)
        empty = counts == 0
        if empty.any():
            far = dist.gather(1, assign.unsqueeze(1)).squeeze(1).topk(int(empty.sum())).indices
            new[empty] = x[far]
        if torch.allclose(new, cent):
            cent = new
            break
        cent = new
    return cent


def fit(x: np.ndarray, levels: int, codes: int, seed: int = 0) -> list[np.ndarray]:
    """The codebooks (one (codes, d) array per level) of residual quantisation of ``x``."""
    r = torch.as_tensor(np.asarray(x, np.float32))
    books = []
    for level in range(levels):
        c = kmeans(r, codes, seed=seed + level)
        books.append(c.numpy())
        r = r - c[torch.cdist(r, c).argmin(1)]
    return books


def encode(x: np.ndarray, books: list[np.ndarray]) -> np.ndarray:
    """Each row's code per level (n, levels) int32."""
    r = torch.as_tensor(np.asarray(x, np.float32))
    out = np.zeros((r.shape[0], len(books)), np.int32)
    for level, b in enumerate(books):
        c = torch.as_tensor(b)
        idx = torch.cdist(r, c).argmin(1) if r.shape[0] else torch.zeros(0, dtype=torch.long)
        out[:, level] = idx.numpy()
        r = r - c[idx]
    return out


def quality(x: np.ndarray, books: list[np.ndarray]) -> list[dict[str, Any]]:
    """Per level: the relative reconstruction error ‖x − x̂‖² / ‖x‖² with the levels so far,
    the share of its codes in use and their perplexity (exp of the code distribution's
    entropy: how many codes the level effectively uses)."""
    x = np.asarray(x, np.float64)
    codes = encode(x, books)
    total = float((x ** 2).sum()) or 1.0
    approx = np.zeros_like(x)
    out = []
    for level, b in enumerate(books):
        approx += b[codes[:, level]]
        counts = np.bincount(codes[:, level], minlength=len(b))
        p = counts[counts > 0] / counts.sum()
        out.append({"level": level + 1, "relative_error": float(((x - approx) ** 2).sum() / total),
                    "codes_used": float((counts > 0).mean()), "perplexity": float(np.exp(-(p * np.log(p)).sum()))})
    return out


CODE_KIND = "code"
CODEBOOK = "semantic_ids.json"  # under the teacher's signal id in the store


def quantise_store(store_uri: str, signal_id: str, blocks: list[dict[str, Any]], history_to: int, levels: int,
                   codes: int, fit_rows: int, seed: int) -> dict[str, Any]:
    """Fit the codebook on a seeded sample of at most ``fit_rows`` of the representation values
    stamped by ``history_to`` (the end of the teacher's history), then write every embedding
    block's values as a ``code`` block of the same entities and times, one Ray task per block.
    Returns the codebook's quality per level (on the fitting sample) and the blocks written."""
    import ray

    fit_on = [b for b in blocks if b["time_max"] <= history_to]
    if not fit_on:
        raise ValueError(f"teacher.semantic_ids: no representation block was stamped by the end of the teacher's "
                         f"history (time {history_to}); the codebook is fitted on those only, so that no label of "
                         f"the students' window reaches it. Write smaller blocks (platform.signal_block_rows) or "
                         f"give the teacher a longer history (teacher.history_fraction)")
    books, stats = ray.get(ray.remote(_fit_task).remote(store_uri, fit_on, levels, codes, fit_rows, seed))
    ref = ray.put(books)
    written = ray.get([ray.remote(_encode_task).remote(store_uri, signal_id, b, ref) for b in blocks])
    from recdistill.signals.store import SignalStore

    store = SignalStore(store_uri)
    # beside the codes: what a serving system needs to give a new value its ID
    store.write_json(f"{store.root}/{signal_id}/{CODEBOOK}", {"levels": levels, "codes": codes,
                                                             "codebook": [b.tolist() for b in books]})
    return {"levels": levels, "codes": codes, "fitted_on": stats["rows"], "fit_blocks": len(fit_on),
            "history_to": history_to, "quality": stats["quality"], "blocks": len(written), "codebook": CODEBOOK}


def _fit_task(store_uri: str, blocks: list[dict[str, Any]], levels: int, codes: int, fit_rows: int,
              seed: int) -> tuple[list[np.ndarray], dict[str, Any]]:
    from recdistill.data.tensors import fixed_size_rows
    from recdistill.signals.blocks import read_block
    from recdistill.signals.kinds import signal_kind
    from recdistill.signals.store import SignalStore

    store = SignalStore(store_uri)
    rng = np.random.default_rng(seed)
    total = sum(b["rows"] for b in blocks)
    parts = []
    for b in blocks:  # a share of each block, so that the sample stays bounded however many there are
        values = fixed_size_rows(read_block(store.fs, b["path"], columns=[signal_kind("embedding").column]).column(0))
        take = min(len(values), max(1, round(fit_rows * len(values) / total)))
        parts.append(values[rng.choice(len(values), take, replace=False)])
    x = np.concatenate(parts)
    books = fit(x, levels, codes, seed)
    return books, {"rows": len(x), "quality": quality(x, books)}


def _encode_task(store_uri: str, signal_id: str, block: dict[str, Any], books: list[np.ndarray]) -> dict[str, Any]:
    import pyarrow as pa

    from recdistill.data.tensors import fixed_size_rows
    from recdistill.signals.blocks import PART, read_block
    from recdistill.signals.kinds import ENTITY_ID, TIME, signal_kind
    from recdistill.signals.store import SignalStore

    store = SignalStore(store_uri)
    t = read_block(store.fs, block["path"])
    c = encode(fixed_size_rows(t.column(signal_kind("embedding").column)), books)
    rank, seq = (int(g) for g in PART.search(block["path"]).groups())
    table = pa.table({ENTITY_ID: t.column(ENTITY_ID), TIME: t.column(TIME),
                      signal_kind(CODE_KIND).column: pa.FixedSizeListArray.from_arrays(pa.array(c.ravel()), c.shape[1])})
    return store.write_table(signal_id, CODE_KIND, block["version"], block["window"], rank, seq, table).to_dict()
