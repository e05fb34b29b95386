"""The same DeepFM, side by side: recdistill (Ray and local engines), DeepCTR-Torch and inline
PyTorch loops, on the same Criteo-format rows, with the same model size, batch and epochs.

    .venv/bin/python benchmarks/bench_peers.py [--rows 1000000] [--test-rows 200000] [--runs 2]
        [--systems inline,inline-ours,deepctr,local,ray[,ray-followed]] [--out .tmp/bench_peers]

DeepCTR-Torch is a bench-only extra, never a runtime dependency: ``pip install -e '.[bench]'``
(the system is skipped, and says so, without it).

The log is written once (cached under ``--out``): Criteo's layout (label, 13 counts, 26
categorical strings, tab-separated, some fields blank) from a planted click model with
Zipf-distributed ids, a first-order weight per id and rank-4 pairwise interactions, so that
every model here can learn it and none is favoured by construction. Train, valid (50k) and
test rows are separate files.

Systems, each in a fresh process (the figures of one never share a process's warm caches
with another's), ``--runs`` times, in turn:

- ``inline``: read and encode the TSV with pyarrow (a vocabulary over all three files, as
  peers' preprocessing does; log1p dense), then a plain PyTorch loop over a textbook DeepFM
  (Guo et al. 2017: first-order weights + FM sum + MLP, summed into one logit).
- ``inline-ours``: the same reading and loop over the platform's own ``Ranker("deepfm")``
  (the FM's pairwise vector into a learned head beside the MLP; no first-order weight; dense
  features as one more field token): what the model's shape alone changes.
- ``deepctr``: DeepCTR-Torch's ``DeepFM`` on the same encoded arrays, with its own defaults
  (Adam 1e-3 on every parameter, init 1e-4).
- ``local`` / ``ray``: ``recdistill run`` on the TSV files (its own reader, hashing and
  ``run.engine``), teacher = the same DeepFM shape, its samples/s from results.json.
- ``ray-streamed``: ``ray`` with ``platform.hold_log=no``: every pass parses the files again
  (what ``ray`` did before the log was held), the baseline of the hold's effect.
- ``ray-followed``: ``ray`` with its students following the teacher
  (``platform.students_follow=yes``; half a CPU per Train worker, so both runs fit on 2
  CPUs with one left for Ray Data); ``ray`` is its baseline.

Figures: training samples/s (the loop alone), its ratio to ``inline`` measured in the same
bench run, test AUC, and the process wall (preprocessing included). The inline loops use the
platform's optimizer setting (SparseAdam 1e-2 on embeddings, Adam 1e-3 on the rest).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

DENSE, CATS = 13, 26
CARDS = [int(x) for x in np.geomspace(8, 400_000, CATS).round()]
EMBED, HIDDEN, DEPTH, BATCH = 16, 400, 3, 4096
SYSTEMS = ("inline", "inline-ours", "deepctr", "local", "ray", "ray-streamed", "ray-followed")


def _columns() -> list[str]:
    return ["label", *(f"I{i}" for i in range(1, DENSE + 1)), *(f"C{i}" for i in range(1, CATS + 1))]


def write_log(out: Path, rows: int, test_rows: int, valid_rows: int = 50_000, seed: int = 0) -> None:
    """train.txt, valid.txt, test.txt in Criteo's layout from one planted click model."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    stamp = out / "log.json"
    want = {"rows": rows, "test_rows": test_rows, "valid_rows": valid_rows, "seed": seed, "version": 1}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        return
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    first = [rng.normal(0, 0.4, c) for c in CARDS]
    factors = [rng.normal(0, 0.12, (c, 4)) for c in CARDS]
    dense_w = rng.normal(0, 0.08, DENSE)
    for name, n in (("train", rows), ("valid", valid_rows), ("test", test_rows)):
        with pcsv.CSVWriter(str(out / f"{name}.txt"), pa.schema([(c, pa.string()) for c in _columns()]),
                            write_options=pcsv.WriteOptions(include_header=False, delimiter="\t",
                                                            quoting_style="none")) as w:
            for s in range(0, n, 200_000):
                m = min(200_000, n - s)
                ids = [(rng.zipf(1.25, m) - 1) % c for c in CARDS]
                counts = rng.poisson(rng.gamma(1.0, 20.0, (m, DENSE)))
                z = -1.6 + sum(f[i] for f, i in zip(first, ids)) * 0.35 + np.log1p(counts) @ dense_w
                v = sum(f[i] for f, i in zip(factors, ids))  # Σ_f v_f; pairwise = (|Σv|² − Σ|v|²)/2
                z = z + 0.5 * ((v ** 2).sum(1) - sum((f[i] ** 2).sum(1) for f, i in zip(factors, ids)))
                label = rng.random(m) < 1 / (1 + np.exp(-z))
                cols = [pa.array(label.astype(np.int8)).cast(pa.string())]
                for d in range(DENSE):
                    x = pa.array(counts[:, d]).cast(pa.string())
                    cols.append(pc.if_else(pa.array(rng.random(m) < 0.1), pa.scalar(None, pa.string()), x))
                for k, i in enumerate(ids):
                    x = pc.binary_join_element_wise(pa.scalar(f"{k:02x}"), pa.array(i).cast(pa.string()), "")
                    cols.append(pc.if_else(pa.array(rng.random(m) < 0.03), pa.scalar(None, pa.string()), x))
                w.write_table(pa.table(cols, names=_columns()))
    stamp.write_text(json.dumps(want))


def load_encoded(data: Path) -> dict[str, Any]:
    """The three files read with pyarrow and encoded: per field a vocabulary over all rows
    (code 0 = blank), dense sign·log1p(|x|) with blanks 0. Returns arrays per split."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    types = {"label": pa.int8(), **{f"I{i}": pa.int64() for i in range(1, DENSE + 1)},
             **{f"C{i}": pa.string() for i in range(1, CATS + 1)}}
    tables = {s: pcsv.read_csv(str(data / f"{s}.txt"), read_options=pcsv.ReadOptions(column_names=_columns()),
                               parse_options=pcsv.ParseOptions(delimiter="\t"),
                               convert_options=pcsv.ConvertOptions(column_types=types))
              for s in ("train", "valid", "test")}
    sizes = [t.num_rows for t in tables.values()]
    cat, vocab = [], []
    for i in range(1, CATS + 1):
        col = pa.chunked_array([c for t in tables.values() for c in t.column(f"C{i}").chunks])
        enc = pc.dictionary_encode(col).combine_chunks()
        codes = pc.fill_null(pc.add(enc.indices.cast(pa.int64()), 1), 0).to_numpy()
        cat.append(codes)
        vocab.append(len(enc.dictionary) + 1)
    cat_all = np.stack(cat, 1)
    out: dict[str, Any] = {"vocab": vocab}
    start = 0
    for (split, t), n in zip(tables.items(), sizes):
        dense = np.stack([pc.fill_null(t.column(f"I{i}"), 0).to_numpy() for i in range(1, DENSE + 1)], 1)
        out[split] = {"cat": cat_all[start:start + n], "dense": (np.sign(dense) * np.log1p(np.abs(dense))).astype(np.float32),
                      "label": t.column("label").to_numpy().astype(np.float32)}
        start += n
    return out


def textbook_deepfm(vocab: list[int]) -> Any:
    """DeepFM as Guo et al. (2017) and DeepCTR build it: first-order + FM sum + MLP, one logit."""
    import torch
    from torch import nn

    from recdistill.models.backbones import mlp

    class DeepFM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("offsets", torch.tensor(np.concatenate([[0], np.cumsum(vocab)[:-1]])), persistent=False)
            self.table = nn.Embedding(int(sum(vocab)), EMBED, sparse=True)
            self.first = nn.Embedding(int(sum(vocab)), 1, sparse=True)
            nn.init.normal_(self.table.weight, std=1e-4)
            nn.init.zeros_(self.first.weight)
            self.dense_first = nn.Linear(DENSE, 1)
            self.dnn = nn.Sequential(mlp(CATS * EMBED + DENSE, HIDDEN, DEPTH), nn.Linear(HIDDEN, 1))

        def forward(self, cat: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
            ids = cat + self.offsets
            v = self.table(ids)
            fm = 0.5 * (v.sum(1).pow(2) - v.pow(2).sum(1)).sum(1)
            linear = self.first(ids).sum((1, 2)) + self.dense_first(dense).squeeze(-1)
            return linear + fm + self.dnn(torch.cat([v.flatten(1), dense], 1)).squeeze(-1)

        def sparse_params(self) -> list[nn.Parameter]:
            return [self.table.weight, self.first.weight]

    return DeepFM()


def ours_deepfm(vocab: list[int]) -> Any:
    import torch

    from recdistill.models import FeatureSpec, Ranker

    r = Ranker(FeatureSpec(tuple(vocab), DENSE), "deepfm", EMBED, DEPTH, HIDDEN)

    class Ours(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.r = r

        def forward(self, cat: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
            return self.r(cat, dense)[0]

        def sparse_params(self) -> list[torch.nn.Parameter]:
            return self.r.embedding_params()

    return Ours()


def inline(data: Path, shape: str) -> dict[str, Any]:
    import torch

    from recdistill.metrics import auc

    t_pre = time.perf_counter()
    enc = load_encoded(data)
    pre_s = time.perf_counter() - t_pre
    torch.manual_seed(0)
    model = textbook_deepfm(enc["vocab"]) if shape == "textbook" else ours_deepfm(enc["vocab"])
    sparse = {id(p) for p in model.sparse_params()}
    opts = [torch.optim.SparseAdam(model.sparse_params(), lr=1e-2),
            torch.optim.Adam([p for p in model.parameters() if id(p) not in sparse], lr=1e-3)]
    tr = {k: torch.from_numpy(v) for k, v in enc["train"].items()}
    n = len(tr["label"])
    t = time.perf_counter()
    model.train()
    for s in range(0, n, BATCH):
        z = model(tr["cat"][s:s + BATCH], tr["dense"][s:s + BATCH])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, tr["label"][s:s + BATCH])
        for o in opts:
            o.zero_grad(set_to_none=True)
        loss.backward()
        for o in opts:
            o.step()
    train_s = time.perf_counter() - t
    model.eval()
    te = {k: torch.from_numpy(v) for k, v in enc["test"].items()}
    with torch.no_grad():
        z = torch.cat([model(te["cat"][s:s + 65536], te["dense"][s:s + 65536]) for s in range(0, len(te["label"]), 65536)])
    return {"samples_per_s": n / train_s, "auc": auc(te["label"].numpy(), z.numpy()), "preprocess_s": pre_s,
            "train_s": train_s}


def deepctr(data: Path) -> dict[str, Any]:
    try:
        from deepctr_torch.inputs import DenseFeat, SparseFeat
        from deepctr_torch.models import DeepFM
    except ImportError:
        return {"skipped": "deepctr-torch is not installed (pip install -e '.[bench]')"}
    import torch

    from recdistill.metrics import auc

    t_pre = time.perf_counter()
    enc = load_encoded(data)
    pre_s = time.perf_counter() - t_pre
    torch.manual_seed(0)
    feats = ([SparseFeat(f"C{i}", v, embedding_dim=EMBED) for i, v in enumerate(enc["vocab"])]
             + [DenseFeat(f"I{i}", 1) for i in range(DENSE)])

    def inputs(split: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {**{f"C{i}": split["cat"][:, i] for i in range(CATS)}, **{f"I{i}": split["dense"][:, i] for i in range(DENSE)}}

    model = DeepFM(feats, feats, dnn_hidden_units=(HIDDEN,) * DEPTH, task="binary", device="cpu", seed=0)
    model.compile("adam", "binary_crossentropy")
    x = inputs(enc["train"])
    t = time.perf_counter()
    model.fit(x, enc["train"]["label"], batch_size=BATCH, epochs=1, verbose=0)
    train_s = time.perf_counter() - t
    z = model.predict(inputs(enc["test"]), batch_size=65536).ravel()
    return {"samples_per_s": len(enc["train"]["label"]) / train_s, "auc": auc(enc["test"]["label"], z),
            "preprocess_s": pre_s, "train_s": train_s}


def platform(data: Path, engine: str, out: Path, extra: tuple[str, ...] = (), name: str = "") -> dict[str, Any]:
    run_dir = out / f"run-{name or engine}"
    cmd = [str(Path(sys.executable).with_name("recdistill")), "run", "--overwrite",
           "data.source=criteo", f"data.path={data / 'train.txt'}", f"data.valid_path={data / 'valid.txt'}",
           f"data.test_path={data / 'test.txt'}", f"run.engine={engine}", f"run.dir={run_dir}",
           f"platform.signal_store={run_dir / 'store'}", "platform.reuse_signals=false", "tracking.wandb=disabled",
           "run.serving=off", "teacher.arch=deepfm", f"teacher.embed_dim={EMBED}", f"teacher.depth={DEPTH}",
           f"teacher.width={HIDDEN}", f"teacher.batch_size={BATCH}", "teacher.epochs=1", "teacher.lr=0.001",
           "teacher.embedding_lr=0.01", "teacher.patience=0", "teacher.eval_every=0", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"recdistill run ({engine}) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    results = json.loads((run_dir / "results.json").read_text())
    t = results["teacher"]
    return {"samples_per_s": t["samples_per_s"], "auc": t["auc"], "train_s": t.get("train_seconds"),
            "phases_s": {k: v for k, v in results.get("platform", {}).items() if k.endswith("_s") and isinstance(v, float)},
            "run_s": results.get("seconds"), "hold": results.get("data", {}).get("hold")}


def child(system: str, data: Path, out: Path) -> dict[str, Any]:
    if system in ("inline", "inline-ours"):
        return inline(data, "textbook" if system == "inline" else "ours")
    if system == "deepctr":
        return deepctr(data)
    if system == "ray-streamed":
        return platform(data, "ray", out, ("platform.hold_log=no",), name=system)
    if system == "ray-followed":
        return platform(data, "ray", out, ("platform.students_follow=yes", "platform.cpus_per_worker=0.5"), name=system)
    return platform(data, system, out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="train rows")
    p.add_argument("--test-rows", type=int, default=200_000)
    p.add_argument("--runs", type=int, default=2, help="runs of each system, in turn")
    p.add_argument("--systems", default=",".join(s for s in SYSTEMS if s not in ("ray-streamed", "ray-followed")),
                   help=f"comma-separated, of {', '.join(SYSTEMS)} (default: all but ray-streamed and ray-followed)")
    p.add_argument("--out", type=Path, default=Path(".tmp/bench_peers"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    data = args.out / "data"
    if args.child:
        print("RESULT " + json.dumps(child(args.child, data, args.out)))
        return
    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        p.error(f"--systems: unknown {sorted(unknown)}; expected some of {', '.join(SYSTEMS)}")
    print(f"[data] {args.rows:,} train / {args.test_rows:,} test rows in Criteo's layout → {data}", flush=True)
    write_log(data, args.rows, args.test_rows)
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    for r in range(args.runs):
        for s in systems:
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--child", s, "--out", str(args.out)],
                                  capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            wall = time.perf_counter() - t
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                raise RuntimeError(f"{s} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
            got = {**json.loads(line[7:]), "wall_s": wall}
            results[s].append(got)
            print(f"[run {r + 1}/{args.runs}] {s}: " + (got["skipped"] if "skipped" in got else
                  f"{got['samples_per_s']:,.0f} samples/s, AUC {got['auc']:.4f}, wall {wall:.1f} s"), flush=True)
    base = [x["samples_per_s"] for x in results.get("inline", [])]
    print("\n| system | samples/s | vs inline (same run) | test AUC | process wall s |\n|---|---|---|---|---|")
    for s, rs in results.items():
        rs = [x for x in rs if "skipped" not in x]
        if not rs:
            print(f"| {s} | skipped | | | |")
            continue
        sps = [x["samples_per_s"] for x in rs]
        ratio = "–".join(f"{a / b:.2f}" for a, b in zip(sps, base)) if base else "n/a"
        aucs = "–".join(f"{x['auc']:.4f}" for x in rs)
        walls = "–".join(f"{x['wall_s']:.0f}" for x in rs)
        print(f"| {s} | {statistics.median(sps):,.0f} | {ratio} | {aucs} | {walls} |")
    (args.out / "bench_peers.json").write_text(json.dumps(results, indent=1))
    print(f"\nfigures: {args.out / 'bench_peers.json'}")


if __name__ == "__main__":
    main()
