"""The cost of LoopFM's representation join and TokenMinds' semantic IDs, each next to the
plain distill join (a row's teacher logit by row id) in the same process.

    .venv/bin/python benchmarks/bench_representations.py [--rows 65536] [--users 10000,100000] [--windows 4,16]

For each (users, windows) a store is written as the teacher writes it: per window (one
signal block), the embedding-table rows of the users and items its rows met, stamped with the
window's end. Then one stream batch of ``--rows`` rows (each with a user, a shown item and
10 history items, in the last window) is joined:
- the plain logit join (``signals.join``): the baseline;
- the representation join (user, item, history; ``signals.representations``);
- the semantic-ID join (user and item codes of 3 levels).
Printed per cell: bytes stored per (entity, time) value and per window, and each join's
seconds per million rows with its ratio to the logit join. How both grow with users ×
windows is read off the table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
from bench_data import _best  # the scripts' shared timer (best of n)

DIM, HISTORY, LEVELS, ITEMS = 16, 10, 3, 50_000


def cell(users: int, windows: int, rows: int, root: Path, repeats: int) -> dict:
    from recdistill.signals.join import join_signals
    from recdistill.signals.representations import KIND, Layout, entity_block, join_representations
    from recdistill.signals.semantic_ids import CODE_KIND
    from recdistill.signals.store import SignalStore

    rng = np.random.default_rng(0)
    store = SignalStore(str(root / f"u{users}-w{windows}"))
    sid = "k/g"
    per_window = max(rows, users // windows)  # rows a window's block covers
    emb, codes, logits = [], [], []
    for w in range(windows):
        u = rng.integers(0, users, per_window)
        i = rng.integers(0, ITEMS, per_window)
        ent = np.unique(np.concatenate([u, users + i]))
        t_end = (w + 1) * per_window
        emb.append(store.write_table(sid, KIND, 0, 0, 0, w, entity_block(
            ent, rng.normal(size=(len(ent), DIM)).astype(np.float32), t_end)).to_dict())
        codes.append(store.write_table(sid, CODE_KIND, 0, 0, 0, w, pa.table({
            "entity_id": pa.array(ent), "time": pa.array(np.full(len(ent), t_end, np.int64)),
            "teacher_code": pa.FixedSizeListArray.from_arrays(
                pa.array(rng.integers(0, 64, len(ent) * LEVELS).astype(np.int32)), LEVELS)})).to_dict())
        ids = np.arange(w * per_window, t_end, dtype=np.int64)
        logits.append(store.write_block(sid, 0, 1, 0, w, ids, rng.normal(size=len(ids)).astype(np.float32)).to_dict())
    # the stream batch: the last window's first rows
    lo = (windows - 1) * per_window
    row_ids = np.arange(lo, lo + rows, dtype=np.int64)
    hist = rng.integers(1, ITEMS, (rows, HISTORY))
    batch = pa.table({"row_id": pa.array(row_ids), "ts": pa.array(row_ids), "u": pa.array(rng.integers(0, users, rows)),
                      "i": pa.array(rng.integers(0, ITEMS, rows)),
                      "h": pa.array(list(hist), pa.list_(pa.int64()))})
    lay = Layout(DIM, "ts", "u", 0, "i", users, "h", HISTORY, LEVELS).__dict__
    base = _best(lambda: join_signals(batch, store.uri, logits), repeats)
    rep = _best(lambda: join_representations(batch, store.uri, emb, lay), repeats)
    both = _best(lambda: join_representations(batch, store.uri, emb, lay, codes), repeats)
    values = sum(b["rows"] for b in emb)

    def size(kind_dir: str) -> int:
        return sum(p.stat().st_size for p in (Path(store.root) / sid / kind_dir).rglob("*.parquet"))

    per_m = 1e6 / rows
    return {"users": users, "windows": windows, "values": values,
            "bytes_per_value": size(f"{KIND}/teacher") / values,
            "code_bytes_per_value": size(f"{CODE_KIND}/teacher") / values,
            "store_mb": (size(f"{KIND}/teacher") + size(f"{CODE_KIND}/teacher")) / 1e6,
            "logit_join_s_per_m": base * per_m, "rep_join_s_per_m": rep * per_m,
            "rep_codes_join_s_per_m": both * per_m, "rep_ratio": rep / base, "rep_codes_ratio": both / base}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=65_536, help="rows of the joined stream batch (a signal block)")
    ap.add_argument("--users", default="10000,100000", help="comma-separated user counts")
    ap.add_argument("--windows", default="4,16", help="comma-separated window (block) counts")
    ap.add_argument("--repeats", type=int, default=3, help="timings per join; the best is kept")
    ap.add_argument("--json", help="also write the cells to this JSON file")
    args = ap.parse_args()
    cells = []
    with tempfile.TemporaryDirectory(prefix="bench-rep-") as d:
        for users in (int(x) for x in args.users.split(",")):
            for windows in (int(x) for x in args.windows.split(",")):
                c = cell(users, windows, args.rows, Path(d), args.repeats)
                cells.append(c)
                print(f"users {users:>9,} windows {windows:>3}: {c['values']:>10,} values, "
                      f"{c['bytes_per_value']:.1f} B/value (+{c['code_bytes_per_value']:.1f} codes), "
                      f"{c['store_mb']:.1f} MB; s per 1M rows: logit {c['logit_join_s_per_m']:.2f}, "
                      f"representations {c['rep_join_s_per_m']:.2f} ({c['rep_ratio']:.1f}×), "
                      f"+ semantic IDs {c['rep_codes_join_s_per_m']:.2f} ({c['rep_codes_ratio']:.1f}×)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(cells, indent=2))


if __name__ == "__main__":
    main()
