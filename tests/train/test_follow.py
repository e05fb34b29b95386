"""Students following a teacher still training (``train.follow``, ``engine.follow``): the
worker-side join waits for exactly the rows the teacher trains on, and no longer than the
teacher keeps publishing; which runs can follow. A real hub actor and a real Parquet store;
the teacher's publishing runs in a thread."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import ray

from recdistill.config import ConfigError, load_config
from recdistill.data.sampling import model_sample_mask
from recdistill.data.schema import LABEL, ROW_ID
from recdistill.data.windows import STUDENT_WINDOW
from recdistill.engine.follow import follow_refusal, room_refusal
from recdistill.train.follow import SignalFollower
from recdistill.signals.hub import get_hub, hub_name
from recdistill.signals.kinds import LOGIT
from recdistill.signals.publish import Publisher
from recdistill.signals.store import SignalStore

pytestmark = pytest.mark.timeout(120)

RATIO, KEEP, SEED = 0.5, 0.6, 11
KEY = "teacherkey/gen1"


def _window(n: int) -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table({ROW_ID: pa.array(np.arange(n) * 3 + 1000, pa.int64()),
                     LABEL: pa.array(rng.integers(0, 2, n).astype(np.float32))})


def _teacher_rows(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """The rows the teacher trains on (its sample) and the logits it records for them."""
    ids, labels = table.column(ROW_ID).to_numpy(), table.column(LABEL).to_numpy()
    keep = model_sample_mask(ids, labels, RATIO, KEEP, SEED)
    return ids[keep], (ids[keep] % 97).astype(np.float32) / 10


def _follower(tmp_path: Path, experiment: str, timeout_s: float = 60.0) -> tuple[SignalFollower, Publisher]:
    uri = str(tmp_path / "store")
    hub = get_hub(experiment, uri)
    follower = SignalFollower.from_config(SignalFollower.config(hub_name(experiment), uri, KEY, RATIO, KEEP, SEED,
                                                                timeout_s))
    follower.poll_s = 0.02
    return follower, Publisher(SignalStore(uri), hub, KEY)


def _publish_later(publisher: Publisher, ids: np.ndarray, z: np.ndarray, block: int, pause_s: float,
                   complete: bool = True) -> tuple[threading.Thread, list[float]]:
    """A teacher publishing ``block``-row blocks every ``pause_s``; the times it published."""
    times: list[float] = []

    def teach() -> None:
        for seq, start in enumerate(range(0, len(ids), block)):
            time.sleep(pause_s)
            publisher.publish([(0, STUDENT_WINDOW, seq, ids[start:start + block], z[start:start + block])])
            times.append(time.perf_counter())
        if complete:
            publisher.complete(0, STUDENT_WINDOW)

    thread = threading.Thread(target=teach)
    thread.start()
    return thread, times


def test_a_batch_waits_for_the_teachers_rows_and_then_equals_the_whole_join(tmp_path: Path, ray_local) -> None:
    table = _window(4000)
    ids, z = _teacher_rows(table)
    follower, publisher = _follower(tmp_path, "follow-wait")
    dataset = ray.data.from_arrow(table)
    thread, published = _publish_later(publisher, ids, z, 300, 0.3)
    first, handed = [], []
    try:
        for batch in follower.batches(dataset, 1000):
            first.append(batch)
            handed.append(time.perf_counter())
    finally:
        thread.join()
    joined = pa.concat_tables(first)
    got = joined.column(LOGIT).to_numpy(zero_copy_only=False)
    # every row the teacher trains on has its logit; no other row has one
    sampled = np.isin(joined.column(ROW_ID).to_numpy(), ids)
    assert joined.column(ROW_ID).to_pylist() == table.column(ROW_ID).to_pylist()
    assert np.isnan(got[~sampled]).all()
    np.testing.assert_array_equal(got[sampled], z)
    # no batch came before the block holding its last sampled row was published
    assert len(published) == -(-len(ids) // 300)
    for batch, at in zip(first, handed):
        last = np.flatnonzero(np.isin(ids, batch.column(ROW_ID).to_numpy())).max()
        assert at >= published[last // 300]
    assert follower.counts["wait_s"] > 0
    assert follower.counts == {**follower.counts, "rows": 4000, "with_signal": len(ids), "late": 0}
    # a second epoch reads the joined batches back, the same ones
    again = list(follower.batches(dataset, 1000))
    # a group with one epoch keeps nothing in the object store; a pass after it (a
    # restarted worker) joins the shard again
    single, _ = _follower(tmp_path, "follow-wait")
    once = list(single.batches(dataset, 1000, keep=False))
    assert not single._joined
    rejoined = list(single.batches(dataset, 1000, keep=False))
    for t, u, v in zip(first, once, rejoined):
        assert t.column(ROW_ID).equals(u.column(ROW_ID)) and t.column(ROW_ID).equals(v.column(ROW_ID))
    assert len(again) == len(first) == len(once) == len(rejoined)
    for t, u in zip(first, again):
        assert t.column(ROW_ID).equals(u.column(ROW_ID))
        np.testing.assert_array_equal(t.column(LOGIT).to_numpy(zero_copy_only=False),
                                      u.column(LOGIT).to_numpy(zero_copy_only=False))


def test_rows_whose_signal_never_comes_are_masked_once_the_teacher_goes_quiet(tmp_path: Path, ray_local) -> None:
    table = _window(2000)
    ids, z = _teacher_rows(table)
    follower, publisher = _follower(tmp_path, "follow-quiet", timeout_s=0.5)
    # the teacher publishes its first half and then nothing (it stalled; nothing marks the window)
    half = len(ids) // 2
    thread, _ = _publish_later(publisher, ids[:half], z[:half], 200, 0.05, complete=False)
    thread.join()
    joined = follower.join(table)
    got = joined.column(LOGIT).to_numpy(zero_copy_only=False)
    assert int((~np.isnan(got)).sum()) == half
    assert follower.counts["late"] == len(ids) - half
    # once the window is marked complete, a row with no signal is final: no waiting, not late
    publisher.complete(0, STUDENT_WINDOW)
    follower.refresh()
    t0 = time.perf_counter()
    follower.join(table)
    assert time.perf_counter() - t0 < 0.5 and follower.counts["late"] == len(ids) - half


def test_which_runs_can_follow_their_teacher() -> None:
    base = load_config(None, [])
    assert follow_refusal(base) is None
    for change, word in (("teacher.signals=posthoc", "posthoc"), ("teacher.signals=crossfit:3", "crossfit"),
                         ("run.cold_users=2", "cold_users"), ("committee.experts=2", "committee")):
        assert word in follow_refusal(load_config(None, [change])), change
    # a 2-CPU node holds a teacher worker and one group at half a CPU each, with one left for Ray Data
    assert room_refusal(load_config(None, ["platform.cpus_per_worker=0.5"]), 2, 0) is None
    assert "need 2 CPUs" in room_refusal(base, 2, 0)
    three = load_config(None, ["platform.cpus_per_worker=0.5", "platform.students_per_group=1",
                               "students.1.name=second", "students.2.name=third"])
    assert "3 student group(s)" in room_refusal(three, 2, 0) and room_refusal(three, 4, 0) is None
    # on GPUs each worker wants its share: 2 whole GPUs, or 1 shared in halves
    assert "GPU" in room_refusal(load_config(None, ["platform.gpus_per_worker=1"]), 8, 1)
    assert room_refusal(load_config(None, ["platform.gpus_per_worker=0.5"]), 8, 1) is None


def test_students_follow_yes_where_they_cannot_is_refused_by_name(ray_local) -> None:
    from recdistill.engine.follow import follows

    with pytest.raises(ConfigError, match="platform.students_follow=yes.*posthoc"):
        follows(load_config(None, ["platform.students_follow=yes", "teacher.signals=posthoc"]))
    assert not follows(load_config(None, ["teacher.signals=posthoc"]))  # auto: quietly after the teacher
    # auto on one CPU node: the groups would take the teacher's cores (slower, measured)
    assert not follows(load_config(None, ["platform.cpus_per_worker=0.5"]))
    assert follows(load_config(None, ["platform.cpus_per_worker=0.5", "platform.students_follow=yes"]))


def test_a_device_asked_for_is_never_silently_another(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ray worker trains on the GPU Ray gives it: run.device and platform.use_gpu that
    contradict each other, or run.device=cuda on a cluster without GPUs, are refused where
    Ray workers train; the local engine picks its own device."""
    import ray

    from recdistill.config import ConfigError
    from recdistill.engine.trainer import check_device, use_gpu

    for keys in (["run.device=cpu", "platform.use_gpu=yes"], ["run.device=cuda", "platform.use_gpu=no"]):
        with pytest.raises(ConfigError, match=r"run\.device=.* and platform\.use_gpu="):
            load_config(None, keys)
        load_config(None, [*keys, "run.engine=local"])
    cuda = load_config(None, ["run.device=cuda"])
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    with pytest.raises(ConfigError, match=r"run\.device=cuda, and the Ray cluster has no GPUs"):
        check_device(cuda)
    check_device(load_config(None, ["run.device=cuda", "run.engine=local"]))
    assert not use_gpu(load_config(None, [])) and not use_gpu(load_config(None, ["run.device=cpu"]))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 1.0})
    assert use_gpu(cuda) and use_gpu(load_config(None, [])) and not use_gpu(load_config(None, ["run.device=cpu"]))
