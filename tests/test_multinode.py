"""The teacher as DDP over two Ray nodes (ray.cluster_utils.Cluster): each rank trains on
its own shard, writes its own signal blocks, and together they cover the window. The same
run carries the teacher's representations (issue 19, LoopFM), written by both ranks and
stamped with the time both had trained to, and a student that reads them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recdistill.config import load_config
from recdistill.signals.representations import KIND, META

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def two_nodes(no_local_ray: None):
    import ray
    from ray.cluster_utils import Cluster

    from recdistill.ray_env import ensure_ray

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head": 1}})
    cluster.add_node(num_cpus=1, resources={"worker_node": 1})
    cluster.wait_for_nodes()
    import os

    os.environ["RAY_ADDRESS"] = cluster.address
    try:
        ensure_ray()
        yield cluster
    finally:
        del os.environ["RAY_ADDRESS"]
        ray.shutdown()
        cluster.shutdown()


def test_ddp_teacher_across_two_nodes(two_nodes, tmp_path: Path) -> None:
    import ray

    from recdistill.experiment import run_experiment
    from recdistill.signals.store import SignalStore

    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    cfg = load_config(None, [
        "run.serving=off", "tracking.wandb=disabled", "data.rows=12000", "data.days=2", "data.synthetic.num_users=1000", "data.synthetic.max_cardinality=5000",
        "teacher.arch=dnn", "teacher.depth=1", "teacher.width=16", "teacher.embed_dim=4", "teacher.batch_size=512",
        "teacher.epochs=1", "students.0.epochs=1",
        # about ten DDP steps a worker: the rates this check was written with, not the defaults sized for real logs
        "teacher.lr=0.001", "teacher.embedding_lr=0.01",
        *(f"students.{i}.{kv}" for i in (0, 1) for kv in STUDENT),
        "platform.teacher_workers=2", "platform.cpus_per_worker=0.4", "platform.signal_block_rows=1024",
        f"platform.signal_store={tmp_path / 'store'}", f"run.dir={tmp_path / 'run'}",
        # LoopFM: the teacher writes its representations; "reads" takes them, "plain" does not
        "teacher.representations=true", "students.0.name=plain", "students.1.name=reads",
        "students.1.representations.use=[user,item,history]", "students.1.representations.history=attention"])
    r = run_experiment(cfg, log=print)
    blocks, complete = SignalStore(str(tmp_path / "store")).scan(r["platform"]["signal_id"])
    ranks = {Path(b.path).name.split("-")[1] for b in blocks}
    assert ranks == {"r0000", "r0001"}  # both DDP ranks wrote signals
    p = r["platform"]
    # streaming_split(equal=True) may hold back fewer rows than there are workers
    assert p["stream_rows"] - p["stream_rows_with_signal"] < 2
    assert 0.5 < r["teacher"]["auc"] < 1 and r["teacher"]["rows"] > 0
    # GAUC on DDP: each worker read the whole test split and scored its own users' rows,
    # so every test row was counted once and every user's rows were ranked together
    assert r["teacher"]["test_rows"] == 1200 and 0.4 < r["teacher"]["gauc"] < 1
    assert len(r["teacher"]["auc_boot"]) == 200
    _check_representations(r, tmp_path)


STUDENT = ["embed_dim=4", "width=8", "depth=1", "batch_size=512", "epochs=1", "sampling_ratio=0.25"]


def _check_representations(r: dict, tmp_path: Path) -> None:
    from recdistill.signals.store import SignalStore

    store, run = SignalStore(str(tmp_path / "store")), tmp_path / "run"
    blocks, complete = store.scan(r["platform"]["signal_id"], KIND)
    assert complete == [(0, 0)] and {Path(b.path).name.split("-")[1] for b in blocks} == {"r0000", "r0001"}
    # both ranks' block of one signal block carry one stamp: the latest time either had
    # trained to. Ray Data hands the ranks contiguous ranges (here rank 0 the history, rank 1
    # the window), so the stamps run ahead of rank 0's rows: conservative, never leaky.
    stamps: dict[str, set[int]] = {}
    for b in blocks:
        stamps.setdefault(Path(b.path).name.split("-")[2], set()).add(b.time_max)
    assert len(stamps) > 2 and all(len(v) == 1 for v in stamps.values())
    assert sorted(min(v) for v in stamps.values()) == [min(stamps[k]) for k in sorted(stamps)]  # rising
    stale = r["platform"]["representations"]
    assert 0 < stale["user"]["found"] <= 1 and stale["user"]["mean_age"] > 0
    s = {x["name"]: x for x in r["students"]}
    assert s["reads"]["representations"] == ["user", "item", "history"] and s["reads"]["baseline"] == "plain"
    t = r["summary"]["transfer_ratio"]["reads"]
    base, teacher = s["plain"]["auc_raw"], r["teacher"]["auc"]
    assert t["representations_only"]["mean"] == pytest.approx((s["reads"]["auc_raw"] - base) / (teacher - base))
    assert t["kd"]["mean"] == pytest.approx(s["plain"]["eta"])
    model = json.loads((run / "models" / "reads" / "raw" / "model.json").read_text())
    assert model["representations"]["use"] == ["user", "item", "history"]
    assert model["spec"]["extra_dense"] == [4, 4, 4, META]
