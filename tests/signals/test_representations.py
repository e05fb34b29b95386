"""LoopFM (issue 19): the teacher's representations written as (entity, time) values and
joined to student rows strictly before each row's time; the student's extra input groups;
the config rules and keys; and one run on Ray from the teacher's blocks to the transfer ratios."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from recdistill.config import ConfigError, load_config
from recdistill.data.schema import LogSchema
from recdistill.data.tensors import REP, from_table
from recdistill.models import FeatureSpec, Ranker
from recdistill.signals import semantic_ids
from recdistill.signals.representations import (KIND, META, Layout, code_columns, columns, entity_block, group_sizes,
                                                layout, representations, table_rows)
from recdistill.signals.representations import semantic_ids as semantic_ids_join
from recdistill.signals.store import SignalStore
from recdistill.train.keys import raw_student_key, teacher_key

D = 2
LAY = Layout(dim=D, order_column="ts", user_column="u", user_offset=0, item_column="i", item_offset=10,
             history_column="h", history_length=3)


def _store(tmp_path: Path) -> tuple[SignalStore, list]:
    """User 1 (table row 1) at times 10 and 20; item 5 (row 15) at 10; item 6 (row 16) at 20."""
    store = SignalStore(str(tmp_path / "store"))
    blocks = [store.write_table("k/g", KIND, 0, 0, 0, 0, entity_block(
                  np.array([1, 15]), np.array([[1.0, 0.0], [0.0, 1.0]]), 10)),
              store.write_table("k/g", KIND, 0, 0, 0, 1, entity_block(
                  np.array([1, 16]), np.array([[2.0, 0.0], [3.0, 4.0]]), 20))]
    return store, blocks


def _rows(ts: list[int], users: list[int], items: list[int], hist: list[list[int]]) -> pa.Table:
    return pa.table({"ts": pa.array(ts, pa.int64()), "u": pa.array(users, pa.int64()), "i": pa.array(items, pa.int64()),
                     "h": pa.array(hist, pa.list_(pa.int64()))})


def test_a_row_reads_only_values_stamped_strictly_before_its_time(tmp_path: Path) -> None:
    store, blocks = _store(tmp_path)
    # times 10, 11, 20, 21: a value stamped at a row's own time was made by a teacher that
    # trained on that row, so the row at 10 sees nothing and the one at 20 sees time 10's
    rows = _rows([10, 11, 20, 21], [1, 1, 1, 1], [5, 5, 6, 6], [[], [], [], []])
    rep = np.asarray(representations(rows, store, blocks, LAY).flatten()).reshape(4, LAY.width)
    user, item, meta = rep[:, :D], rep[:, D:2 * D], rep[:, 4 * D:]
    assert user.tolist() == [[0, 0], [1, 0], [1, 0], [2, 0]]
    assert item.tolist() == [[0, 0], [0, 1], [0, 0], [3, 4]]  # item 6 exists from time 20 only
    assert meta[:, 2].tolist() == [0, 1, 1, 1] and meta[:, 3].tolist() == [0, 1, 0, 1]  # has user / item
    # staleness: log1p of the age in the log's time (11 − 10, 20 − 10, 21 − 20)
    assert np.allclose(meta[:, 0], np.log1p([0, 1, 10, 1]))
    assert np.allclose(meta[:, 1], np.log1p([0, 1, 0, 1]))


def test_history_items_pool_by_mean_and_by_affinity_with_the_shown_item(tmp_path: Path) -> None:
    store, blocks = _store(tmp_path)
    # at time 30: items 5 and 6 both known; 7 never was; 0 is padding
    rows = _rows([30, 30], [1, 1], [6, 6], [[5, 6, 7], [0]])
    rep = np.asarray(representations(rows, store, blocks, LAY).flatten()).reshape(2, LAY.width)
    h5, h6, item = np.array([0.0, 1.0]), np.array([3.0, 4.0]), np.array([3.0, 4.0])
    assert np.allclose(rep[0, 2 * D:3 * D], (h5 + h6) / 2)
    w = np.exp([h5 @ item / math.sqrt(D), h6 @ item / math.sqrt(D)])
    assert np.allclose(rep[0, 3 * D:4 * D], (w[0] * h5 + w[1] * h6) / w.sum(), atol=1e-6)
    assert np.isclose(rep[0, 4 * D + 4], 2 / 3)  # share of the history that had a value
    assert np.allclose(rep[1, 2 * D:4 * D], 0) and rep[1, 4 * D + 4] == 0  # an empty history


def test_the_teacher_writes_every_entity_its_rows_name() -> None:
    rows = _rows([1, 2], [3, 3], [4, 5], [[4, 0, 6], []])
    assert table_rows(rows, LAY).tolist() == [3, 14, 15, 16]
    schema = LogSchema(dense=(), categorical=("ctx", "user_id", "item_id"), sequences=(("hist", "item_id"),),
                       user_field="user_id", item_field="item_id", has_ts=True)
    lay = layout(schema, FeatureSpec((7, 100, 50), 0, (2,)), 4, 0)
    assert (lay.user_offset, lay.item_offset, lay.history_column, lay.order_column) == (7, 107, "hist", "ts")
    with pytest.raises(ValueError, match="no user or item field"):
        layout(LogSchema(dense=(), categorical=("c",)), FeatureSpec((7,), 0), 4, 0)


def test_a_student_reads_its_parts_as_input_groups_of_their_own() -> None:
    cols = columns(["history", "user"], "attention", 4)
    assert cols == ((0, 4), (12, 16), (16, 16 + META))  # user, history by attention, staleness
    assert columns([], "mean", 4) == ()
    spec = FeatureSpec((5, 6), 3, (), group_sizes(cols))
    model = Ranker(spec, "dcnv2", 8, 1, 8)
    assert spec.dense_width == 3 + 4 + 4 + META and spec.num_tokens == 2 + 1 + 3
    rows = pa.table({"row_id": pa.array([0, 1], pa.int64()), "label": pa.array([0, 1], pa.int8()),
                     "c0": pa.array([1, 2], pa.int64()), "c1": pa.array([3, 4], pa.int64()),
                     **{f"d{j}": pa.array([0.5, 1.0], pa.float32()) for j in range(3)},
                     REP: pa.FixedSizeListArray.from_arrays(pa.array(np.arange(2 * (16 + META), dtype=np.float32)),
                                                            16 + META)})
    b = from_table(rows, LogSchema(dense=("d0", "d1", "d2"), categorical=("c0", "c1")))
    x = b.with_representations(cols)
    assert x.dense.shape == (2, spec.dense_width)
    assert torch.equal(x.dense[:, 3:7], b.rep[:, 0:4]) and torch.equal(x.dense[:, 7:11], b.rep[:, 12:16])
    assert model(x.cat, x.dense, x.seq)[0].shape == (2,)
    assert b.with_representations(()) is b
    with pytest.raises(ValueError, match="not joined"):
        from_table(rows.drop_columns([REP]), LogSchema(dense=("d0", "d1", "d2"), categorical=("c0", "c1"))
                   ).with_representations(cols)
    # a model that reads none keeps the parameter names stored models have
    plain = Ranker(FeatureSpec((5, 6), 3), "dcnv2", 8, 1, 8)
    assert not any(k.startswith("features.extra") for k in plain.state_dict())


def test_residual_quantisation_spells_each_vector_coarse_to_fine() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 3)) * 5
    x = np.concatenate([c + rng.normal(scale=0.1, size=(50, 3)) for c in centres])
    books = semantic_ids.fit(x, levels=2, codes=4)
    codes = semantic_ids.encode(x, books)
    assert codes.shape == (200, 2) and codes.dtype == np.int32
    # level 1 finds the four clusters: one code per cluster, each cluster's own
    assert [len(set(codes[i * 50:(i + 1) * 50, 0])) for i in range(4)] == [1, 1, 1, 1]
    assert len(set(codes[:, 0])) == 4
    q = semantic_ids.quality(x, books)
    assert [r["level"] for r in q] == [1, 2]
    assert q[0]["relative_error"] < 0.01 and q[1]["relative_error"] < q[0]["relative_error"]
    assert q[0]["codes_used"] == 1.0 and q[0]["perplexity"] == pytest.approx(4.0, rel=1e-6)
    # the decoded vector is the sum of each level's centroid, naively
    naive = books[0][codes[:, 0]] + books[1][codes[:, 1]]
    err = ((x - naive) ** 2).sum() / (x ** 2).sum()
    assert q[1]["relative_error"] == pytest.approx(err, rel=1e-6)
    with pytest.raises(ValueError, match="no vectors"):
        semantic_ids.kmeans(torch.zeros(0, 3), 2)


def test_semantic_ids_are_joined_as_of_strictly_before_the_rows_time(tmp_path: Path) -> None:
    store = SignalStore(str(tmp_path / "store"))
    code = semantic_ids.CODE_KIND

    def block(seq: int, rows: list[int], values: list[list[int]], t: int):
        return store.write_table("k/g", code, 0, 0, 0, seq, pa.table({
            "entity_id": pa.array(rows, pa.int64()), "time": pa.array([t] * len(rows), pa.int64()),
            "teacher_code": pa.FixedSizeListArray.from_arrays(pa.array(np.ravel(values), pa.int32()), 2)}))

    blocks = [block(0, [1, 15], [[3, 0], [7, 7]], 10), block(1, [1], [[4, 1]], 20)]
    lay = Layout(**{**LAY.__dict__, "levels": 2})
    rows = _rows([10, 11, 21], [1, 1, 1], [5, 5, 5], [[], [], []])
    got = np.asarray(semantic_ids_join(rows, store, blocks, lay).flatten()).reshape(3, 4)
    # code + 1 (0 = none yet): user 1 then item 5 (table row 15)
    assert got.tolist() == [[0, 0, 0, 0], [4, 1, 8, 8], [5, 2, 8, 8]]
    assert code_columns(["item"], 2) == ((2, 4),) and code_columns(["user", "item"], 3) == ((0, 3), (3, 6))


def test_representations_are_checked_and_keyed() -> None:
    on = ["teacher.representations=true"]
    reads = [*on, "students.0.representations.use=[user,history]"]
    with pytest.raises(ConfigError, match="teacher.representations=true"):
        load_config(None, ["students.0.representations.use=[user]"])
    with pytest.raises(ConfigError, match="teacher.semantic_ids.levels"):
        load_config(None, [*on, "students.0.representations.codes=[user]"])
    with pytest.raises(ConfigError, match="set teacher.representations=true too"):
        load_config(None, ["teacher.semantic_ids.levels=2"])
    with pytest.raises(ConfigError, match="unknown: \\['history'\\]"):
        load_config(None, [*on, "teacher.semantic_ids.levels=2", "students.0.representations.codes=[history]"])
    assert teacher_key(load_config(None, [*on, "teacher.semantic_ids.levels=2"])) != teacher_key(load_config(None, on))
    with pytest.raises(ConfigError, match="unknown: \\['users'\\]"):
        load_config(None, [*on, "students.0.representations.use=[users]"])
    for bad, why in (("run.engine=local", "local engine"), ("teacher.signals=crossfit:2", "forward recording pass"),
                     ("transfer.enabled=true", "transfer stage")):
        with pytest.raises(ConfigError, match=why):
            load_config(None, [*reads, bad])
    with pytest.raises(ConfigError, match="refreshes the dense representations per window but not the codebook"):
        load_config(None, [*reads, "teacher.semantic_ids.levels=2", "stream.enabled=true"])
    assert load_config(None, [*reads, "stream.enabled=true"]).teacher.representations  # refreshed per window
    base = load_config(None, [])
    assert teacher_key(load_config(None, ["teacher.representations=false"])) == teacher_key(base)
    assert teacher_key(load_config(None, on)) != teacher_key(base)
    # a raw student reading nothing keeps its key; one reading representations depends on the teacher
    assert raw_student_key(load_config(None, on), 0) == raw_student_key(base, 0)
    r = load_config(None, reads)
    assert raw_student_key(r, 0) != raw_student_key(base, 0)
    assert raw_student_key(r, 0) != raw_student_key(load_config(None, [*reads, "teacher.width=8"]), 0)
    codes = [*on, "teacher.semantic_ids.levels=2", "students.0.representations.codes=[user]"]
    with pytest.raises(ConfigError, match="code_fields=prefix: says how semantic IDs enter, but the student reads"):
        load_config(None, [*on, "teacher.semantic_ids.levels=2", "students.0.representations.code_fields=prefix"])
    assert raw_student_key(load_config(None, [*codes, "students.0.representations.code_fields=prefix"]), 0) \
        != raw_student_key(load_config(None, codes), 0)


TINY = ["data.rows=12000", "data.days=2", "data.synthetic.num_users=1000", "data.synthetic.max_cardinality=5000",
        "teacher.depth=1", "teacher.width=16", "teacher.embed_dim=4", "teacher.batch_size=512", "teacher.epochs=1",
        "teacher.patience=0", "teacher.representations=true", "platform.signal_block_rows=2048",
        "teacher.semantic_ids.levels=2", "teacher.semantic_ids.codes=8",
        "run.serving=off", "tracking.wandb=disabled", "platform.cpus_per_worker=0.5", "run.cold_users=2"]
STUDENT = ["embed_dim=4", "width=8", "depth=1", "batch_size=512", "epochs=1", "sampling_ratio=0.25"]


@pytest.fixture(scope="module")
def loopfm_run(tmp_path_factory: pytest.TempPathFactory, ray_local) -> Path:
    from recdistill.experiment import run_experiment

    tmp = tmp_path_factory.mktemp("loopfm")
    students = [f"students.{i}.{kv}" for i in (0, 1, 2, 3) for kv in STUDENT]
    run_experiment(load_config(None, [
        *TINY, *students, "students.0.name=plain", "students.1.name=reads", "students.2.name=codes",
        "students.1.representations.use=[user,item,history]", "students.1.representations.history=attention",
        "students.2.representations.codes=[user,item]", "students.3.name=prefix",
        "students.3.representations.codes=[user,item]", "students.3.representations.code_fields=prefix",
        f"data.path={tmp / 'data'}", f"platform.signal_store={tmp / 'store'}", f"run.dir={tmp / 'run'}"]),
        log=lambda _: None)
    return tmp


def test_a_run_joins_representations_and_semantic_ids_and_scores_cold_users(loopfm_run: Path) -> None:
    r = json.loads((loopfm_run / "run" / "results.json").read_text())
    store = SignalStore(str(loopfm_run / "store"))
    blocks, complete = store.scan(r["platform"]["signal_id"], KIND)
    assert complete == [(0, 0)] and len(blocks) > 2  # one per signal block of the recording pass
    times = sorted({b.time_max for b in blocks})
    assert len(times) == len(blocks)  # each block stamped with the time trained to by then, rising
    stale = r["platform"]["representations"]
    assert 0.5 < stale["user"]["found"] <= 1 and stale["user"]["mean_age"] > 0
    s = {x["name"]: x for x in r["students"]}
    assert s["reads"]["representations"] == ["user", "item", "history"] and s["reads"]["baseline"] == "plain"
    assert "representations" not in s["plain"]
    t = r["summary"]["transfer_ratio"]["reads"]
    base, teacher = s["plain"]["auc_raw"], r["teacher"]["auc"]
    assert t["representations_only"]["mean"] == pytest.approx((s["reads"]["auc_raw"] - base) / (teacher - base))
    assert t["kd_representations"]["mean"] == pytest.approx((s["reads"]["auc_distill"] - base) / (teacher - base))
    assert t["kd"]["mean"] == pytest.approx(s["plain"]["eta"])
    report = (loopfm_run / "run" / "report.md").read_text()
    assert "Teacher representations (LoopFM)" in report and "Semantic IDs (TokenMinds)" in report
    # semantic IDs: a codebook fitted on the history's values only, every block encoded
    sem = r["teacher"]["semantic_ids"]
    code_blocks, code_complete = store.scan(r["platform"]["signal_id"], semantic_ids.CODE_KIND)
    assert code_complete == [(0, 0)] and len(code_blocks) == len(blocks) == sem["blocks"]
    assert 0 < sem["fit_blocks"] < len(blocks) and all(b.time_max <= sem["history_to"] for b in
                                                        sorted(blocks, key=lambda b: b.time_max)[:sem["fit_blocks"]])
    assert [q["level"] for q in sem["quality"]] == [1, 2]
    assert sem["quality"][1]["relative_error"] < sem["quality"][0]["relative_error"] < 1
    assert s["codes"]["representations"] == ["user codes", "item codes"] and s["codes"]["baseline"] == "plain"
    assert "codes" in r["summary"]["transfer_ratio"]
    # every model also on the cold users' test rows, the teacher from its stored weights
    cold = r["teacher"]["cold"]
    assert cold["threshold"] == 2 and 0 < cold["rows"] < r["teacher"]["test_rows"] and cold["is_signals_teacher"]
    assert all(x["cold"][k]["rows"] == cold["rows"] for x in r["students"] for k in ("raw", "distill"))
    assert t["kd_cold"]["mean"] == pytest.approx(r["summary"]["eta"]["plain@cold"]["mean"])
    assert "Cold users:" in report and not (loopfm_run / "store" / "cold_users").exists() or \
        not any((loopfm_run / "store" / "cold_users").iterdir())
    codes_model = json.loads((loopfm_run / "run" / "models" / "codes" / "raw" / "model.json").read_text())
    assert codes_model["spec"]["buckets"][-4:] == [9, 9, 9, 9] and "extra_dense" not in codes_model["spec"]
    # the prefix tokens: level 2's field holds the pair (c1, c2), 9 × 9 tuples of 8 codes and none
    prefix_dir = loopfm_run / "run" / "models" / "prefix" / "distill"
    prefix_model = json.loads((prefix_dir / "model.json").read_text())
    assert prefix_model["spec"]["buckets"][-4:] == [9, 81, 9, 81] and prefix_model["spec"]["code_prefix"] == [2, 2, 8]
    assert 0.4 < s["prefix"]["auc_distill"] < 1 and s["prefix"]["baseline"] == "plain"
    # the artifact says what it reads, and scoring a plain log with it is refused by name
    model = json.loads((loopfm_run / "run" / "models" / "reads" / "raw" / "model.json").read_text())
    assert model["representations"]["use"] == ["user", "item", "history"]
    assert model["spec"]["extra_dense"] == [4, 4, 4, META]
    from recdistill.artifacts.model_dir import load_artifact
    from recdistill.artifacts.score import ScoreError, check_fields

    assert load_artifact(prefix_dir).model.features.spec.code_prefix == (2, 2, 8)  # the weights fit the spec
    art = load_artifact(loopfm_run / "run" / "models" / "reads" / "raw")
    with pytest.raises(ScoreError, match="reads the teacher's stored representations"):
        check_fields(art, art.preprocessor.schema, "log.parquet")


def test_a_history_shorter_than_a_block_fails_before_the_teacher_trains() -> None:
    """The codebook is fitted on blocks that end inside the history: a history shorter than a
    block is refused when the rows are counted, with a block size that fits, not after training."""
    from recdistill.sizing import check_codebook_history

    cfg = load_config(None, ["teacher.representations=true", "teacher.semantic_ids.levels=2"])
    check_codebook_history(cfg, 400_000, 1024)  # 200k history rows: three 64k-row blocks end inside
    with pytest.raises(ConfigError, match="about 30,000 rows per worker.*signal_block_rows=7168"):
        check_codebook_history(cfg, 60_000, 1024)
    check_codebook_history(load_config(None, []), 10, 1024)  # no semantic IDs: nothing to check
