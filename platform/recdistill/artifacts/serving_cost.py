"""What a student costs to serve, measured: its artifact's serving tower exported
(``run.serving``) and timed after a warm-up at batch 1 and 512 on CPU with one thread
(and eager on a GPU when the cluster has one), beside the artifact's bytes and its dense
and embedding parameters. Each measurement runs as a Ray task, on a node of the cluster
rather than the driver, and gets the artifact's files through the object store."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

from recdistill.artifacts.score import artifact_files

BATCH_SIZES = (1, 512)
THREADS = 1  # one intra-op thread: a serving replica per core is the common CPU deployment


def measure_files(files: dict[str, bytes], fmt: str, device: str = "cpu") -> dict[str, Any]:
    """One artifact's serving cost, from its files (runs inside a Ray task)."""
    import torch

    from recdistill.artifacts.export_dir import random_batch
    from recdistill.artifacts.model_dir import load_artifact, unpacked
    from recdistill.serving.export import MainTower, export, load
    from recdistill.serving.latency import file_bytes, measure, param_counts

    with unpacked(files) as src, tempfile.TemporaryDirectory() as d:
        art = load_artifact(src)
        out: dict[str, Any] = {"format": fmt, "artifact_bytes": file_bytes(src), "params": param_counts(art.model)}
        if device == "cpu":
            path = export(art.model, random_batch(art, 8), fmt, Path(d, "export"))
            out["exported_bytes"] = file_bytes(path)
            fn = load(path, fmt, threads=THREADS) if fmt == "onnx" else load(path, fmt)
            out["measured"] = [measure(fn, lambda n: random_batch(art, n, seed=n), BATCH_SIZES, threads=THREADS)]
        else:  # the eager serving tower on the GPU: what a GPU server runs (exports are CPU-traced)
            tower = MainTower(art.model).to(device).eval()

            def fn(cat: Any, dense: Any, seq: Any) -> Any:
                return tower(cat, dense, seq)

            out["measured"] = [measure(fn, lambda n: tuple(t.to(device) for t in random_batch(art, n, seed=n)),
                                       BATCH_SIZES, threads=THREADS, device=torch.device(device))]
        return out


def measure_run_students(run_dir: Path, results: dict[str, Any], fmt: str,
                         log: Callable[[str], None] = print) -> None:
    """``students[i].serving`` of a run's results, for every distilled student with an
    artifact: CPU always, plus a GPU measurement when the cluster has GPUs."""
    import ray

    if fmt == "off":
        return
    written = (results.get("models") or {}).get("written", {})
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    gpus = ray.cluster_resources().get("GPU", 0) > 0
    # outside any placement group: inside a sweep trial the run's driver holds a sliver of a
    # CPU in its trial's group, which a timing task must not be squeezed into
    free = PlacementGroupSchedulingStrategy(placement_group=None)
    cpu_task = ray.remote(num_cpus=THREADS, scheduling_strategy=free)(measure_files)
    gpu_task = ray.remote(num_cpus=1, num_gpus=1, scheduling_strategy=free)(measure_files) if gpus else None
    pending = {}
    for s in results["students"]:
        rel = written.get(f"{s['name']}/distill")
        if rel is None:
            continue
        files = ray.put(artifact_files(run_dir / rel))
        pending[s["name"]] = (cpu_task.remote(files, fmt), gpu_task.remote(files, fmt, "cuda") if gpu_task else None)
    for s in results["students"]:
        if s["name"] not in pending:
            continue
        cpu, gpu = pending[s["name"]]
        try:
            serving = ray.get(cpu)
            if gpu is not None:
                serving["measured"] += ray.get(gpu)["measured"]
        except Exception as e:  # noqa: BLE001 - a format that cannot export this model is reported, not fatal
            s["serving"] = {"format": fmt, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
            log(f"[serving {s['name']}] not measured: {s['serving']['error']}")
            continue
        s["serving"] = serving
        b = serving["measured"][0]["batch"]
        log(f"[serving {s['name']}] {fmt} on CPU, {THREADS} thread: batch 1 p50 {b['1']['p50_ms']:.3f} ms "
            f"(p99 {b['1']['p99_ms']:.3f}), batch 512 {b['512']['rows_per_s']:,.0f} rows/s; "
            f"{serving['artifact_bytes']:,} artifact bytes, {serving['params']['dense']:,} dense + "
            f"{serving['params']['embedding']:,} embedding parameters")
