"""A committee of teachers end to end on Ray (DiverseDistill): experts trained once on
their slices of the history and kept in the store, the five variants of a student trained
in one group, their passes counted, and a second run that reuses teacher, experts and raw
student."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recdistill.config import load_config
from recdistill.signals.store import SignalStore
from recdistill.train.keys import experts_key

TINY = ["data.rows=12000", "data.days=2", "data.synthetic.num_users=1000", "data.synthetic.max_cardinality=5000",
        "data.synthetic.segments=3", "teacher.depth=1", "teacher.width=16", "teacher.embed_dim=4",
        "teacher.batch_size=512", "teacher.epochs=1", "teacher.patience=0", "platform.signal_block_rows=2048",
        "run.serving=off", "tracking.wandb=disabled", "platform.cpus_per_worker=0.5",
        "students.0.embed_dim=4", "students.0.width=8", "students.0.depth=1", "students.0.batch_size=256",
        "students.0.epochs=1", "students.0.patience=0", "students.0.sampling_ratio=0.25", "students.0.name=s",
        "committee.experts=3", "committee.slice_by=field:segment", "committee.threshold=0.99",
        # the big teacher shows its stored representations to the committee as its states
        "teacher.representations=true"]


@pytest.fixture(scope="module")
def committee_run(tmp_path_factory: pytest.TempPathFactory, ray_local) -> tuple[Path, list[str]]:
    from recdistill.experiment import run_experiment

    tmp = tmp_path_factory.mktemp("committee")
    over = [*TINY, f"data.path={tmp / 'data'}", f"platform.signal_store={tmp / 'store'}", f"run.dir={tmp / 'run'}"]
    run_experiment(load_config(None, over), log=lambda _: None)
    return tmp, over


def test_experts_and_the_five_variants_of_a_student(committee_run: tuple[Path, list[str]]) -> None:
    tmp, over = committee_run
    r = json.loads((tmp / "run" / "results.json").read_text())
    c = r["committee"]
    assert not c["reused"] and [e["name"] for e in c["experts"]] == ["expert0", "expert1", "expert2"]
    # one segment per expert: the field's three values packed one per group
    assert c["slices"]["packed_values"] == 3 and sum(e["rows"] for e in c["experts"]) == sum(c["slices"]["packed_rows"])
    assert all(0.3 < e["auc"] < 1 for e in c["experts"])
    # each expert also on its own segment's test rows, beside the teacher there
    assert sum(e["slice_test_rows"] for e in c["experts"]) == r["teacher"]["test_rows"]
    assert all(0 < e["auc_own_slice"] < 1 and 0 < e["teacher_auc_own_slice"] < 1 for e in c["experts"])
    store = SignalStore(str(tmp / "store"))
    assert store.experts_info(c["key"])["experts"] == c["experts"]
    # the key is the resolved config's (auto schedules sized by the log), not the raw one's
    assert c["key"] == experts_key(load_config(tmp / "run" / "config.yaml"))
    s = {x["name"]: x for x in r["students"]}
    assert list(s) == ["s", "s-expert0", "s-expert1", "s-expert2", "s-average", "s-committee", "s-filtered"]
    assert len({x["auc_raw"] for x in s.values()}) == 1, "every variant shares the one raw student"
    assert len({x["params"] for x in s.values()}) == 1, "the module is dropped: no variant grows"
    assert "committee" not in s["s"]
    assert r["platform"]["representations"]["user"]["found"] > 0.5  # the stream joined the big teacher's states
    rows = s["s"]["rows"]
    ran = {n: x["committee"] for n, x in s.items() if n != "s"}
    assert ran["s-expert1"]["distill_from"] == "expert" and ran["s-expert1"]["expert_passes"] == rows
    assert ran["s-average"]["expert_passes"] == ran["s-committee"]["expert_passes"] == 3 * rows
    f = ran["s-filtered"]
    assert f["expert_passes_possible"] == 3 * rows and f["expert_passes"] < f["expert_passes_possible"]
    assert 0 < f["teacher_uses_saved"] < 1
    diffs = {d["name"] for d in r["summary"]["differences"]}
    for a, b in (("s-average", "s"), ("s-committee", "s-average"), ("s-filtered", "s-committee")):
        assert f"{a} − {b}: η" in diffs
    report = (tmp / "run" / "report.md").read_text()
    assert "## Committee (DiverseDistill)" in report and "| s-filtered | filtered |" in report
    models = tmp / "run" / "models"
    plain, committee = (json.loads((models / n / "distill" / "model.json").read_text()) for n in ("s", "s-committee"))
    assert committee == plain, "the same model: the module is not in the artifact"
    assert (models / "s-committee" / "distill" / "weights.safetensors").stat().st_size == \
        (models / "s" / "distill" / "weights.safetensors").stat().st_size


def test_a_second_run_reuses_teacher_experts_and_raw_student(committee_run: tuple[Path, list[str]]) -> None:
    from recdistill.experiment import run_experiment

    import threading

    from recdistill.signals.lease import try_acquire
    from recdistill.signals.store import EXPERTS_DIR

    tmp, over = committee_run
    out = tmp / "again"
    # Another run is training these experts right now: their info is not committed yet and
    # it holds their lease. This run waits, then reuses what that run commits.
    key = json.loads((tmp / "run" / "results.json").read_text())["committee"]["key"]
    info = tmp / "store" / EXPERTS_DIR / key / "info.json"
    held = info.with_name("held.json")
    info.rename(held)
    lease = try_acquire(SignalStore(str(tmp / "store")), f"{EXPERTS_DIR}/{key}", "another-run", ttl_s=60)
    assert lease is not None, "the first run left its lease on the experts"

    waiting = threading.Event()
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        if "[experts]" in line and "being trained by another-run" in line:
            waiting.set()

    def commit() -> None:  # once the run waits (not after a fixed sleep: a loaded machine is slower)
        waiting.wait(timeout=300)
        held.rename(info)
        lease.release()

    threading.Thread(target=commit).start()
    # one variant by hand, without the baselines: the filtered committee alone
    r = run_experiment(load_config(None, [*over, "committee.baselines=false", "students.0.distill_from=filtered",
                                          f"run.dir={out}", "platform.lease_poll_s=0.5"]), log=log)
    assert any("[experts]" in x and "being trained by another-run" in x for x in lines), lines
    assert r["committee"]["reused"] and r["platform"]["teacher_reused"]
    assert [x["name"] for x in r["students"]] == ["s"] and r["students"][0]["raw_reused"]
    assert r["students"][0]["committee"]["distill_from"] == "filtered"
    assert "experts_s" not in r["platform"]
