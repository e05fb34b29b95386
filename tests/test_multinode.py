"""The teacher as DDP over two Ray nodes (ray.cluster_utils.Cluster): each rank trains on
its own shard, writes its own signal blocks, and together they cover the window."""

from __future__ import annotations

from pathlib import Path

import pytest

from recdistill.config import load_config

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
        "run.serving=off", "data.rows=12000", "data.days=2", "data.synthetic.num_users=1000", "data.synthetic.max_cardinality=5000",
        "teacher.arch=dnn", "teacher.depth=1", "teacher.width=16", "teacher.embed_dim=4", "teacher.batch_size=512",
        "teacher.epochs=1", "students.0.epochs=1",
        # about ten DDP steps a worker: the rates this check was written with, not the defaults sized for real logs
        "teacher.lr=0.001", "teacher.embedding_lr=0.01",
        "students.0.embed_dim=4", "students.0.width=8", "students.0.depth=1", "students.0.batch_size=512",
        "platform.teacher_workers=2", "platform.cpus_per_worker=0.4", "platform.signal_block_rows=1024",
        f"platform.signal_store={tmp_path / 'store'}", f"run.dir={tmp_path / 'run'}"])
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
