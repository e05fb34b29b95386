"""The synthetic click log: determinism, the oracle ceiling, drift, sampling, shards."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recdistill.config import DataConfig, load_config
from recdistill.data.preprocess import build_preprocessor
from recdistill.data.schema import LogSchema
from recdistill.data.synthetic import HISTORY, ITEM, USER, generate, synthetic_schema
from recdistill.metrics import auc
from scipy.spatial.distance import jensenshannon


def _data(*overrides: str) -> DataConfig:
    return load_config(None, list(overrides)).data


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> tuple[DataConfig, pa.Table]:
    data = _data("data.rows=60000", "data.days=4", "data.shard_rows=25000")
    out = tmp_path_factory.mktemp("syn")
    generate(data, out)
    return data, pq.read_table(sorted(out.glob("part-*.parquet")))


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    small = ("data.rows=3000", "data.days=2", "data.synthetic.num_users=500",
             "data.synthetic.max_cardinality=5000")
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate(_data(*small), a)
    generate(_data(*small), b)
    generate(_data(*small, "data.seed=1"), c)
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir())
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "part-00000.parquet").read_bytes() != (c / "part-00000.parquet").read_bytes()


def test_shards_rows_order_and_schema(log: tuple[DataConfig, pa.Table]) -> None:
    data, t = log
    assert t.num_rows == 60000
    assert np.array_equal(t.column("row_id").to_numpy(), np.arange(60000))
    assert np.all(np.diff(t.column("ts").to_numpy()) >= 0)
    assert np.array_equal(np.unique(t.column("day").to_numpy()), np.arange(4))
    schema = LogSchema.from_arrow(t.schema)
    assert schema == synthetic_schema(data.synthetic)
    assert len(schema.dense) == 13 and len(schema.categorical) == 28
    cards = dict(zip(schema.categorical, schema.cardinalities))
    assert cards["C1"] == 10 and cards["C26"] == 1_000_000
    for name in schema.categorical:
        ids = t.column(name).to_numpy()
        assert ids.min() >= 0 and ids.max() < cards[name], name
    dense = np.stack([t.column(n).to_numpy() for n in schema.dense], 1)
    assert np.isnan(dense).any() and np.nanmin(dense) >= 0
    assert np.nanmax(dense) > 20 * np.nanmedian(dense)  # heavy-tailed counts


def test_zipf_ids_have_a_heavy_head(log: tuple[DataConfig, pa.Table]) -> None:
    _, t = log
    ids = t.column("C26").to_numpy()
    _, counts = np.unique(ids, return_counts=True)
    top = np.sort(counts)[::-1]
    assert top[:10].sum() > 0.05 * ids.size  # a few ids carry a large share
    assert (counts == 1).sum() > 0.3 * counts.size  # and a long tail of singletons


def test_sampling_is_recorded_and_ctr_matches_truth(log: tuple[DataConfig, pa.Table]) -> None:
    data, t = log
    y = t.column("label").to_numpy()
    rate = t.column("sample_rate").to_numpy()
    p = t.column("p_true").to_numpy().astype(np.float64)
    assert np.all(rate[y == 1] == 1.0) and np.allclose(rate[y == 0], data.synthetic.negative_keep_rate)
    # Expected label of a kept row is p / (p + (1 - p) r).
    expected = p / (p + (1 - p) * data.synthetic.negative_keep_rate)
    assert abs(y.mean() - expected.mean()) < 0.01
    # Undo the sampling with inverse keep rates: the mean click probability is the base CTR.
    w = 1.0 / rate
    assert abs((p * w).sum() / w.sum() - data.synthetic.base_ctr) < 0.006
    assert 0.18 < y.mean() < 0.35  # Criteo-like after down-sampling


def _logistic_regression_auc(t: pa.Table, data: DataConfig) -> tuple[float, float]:
    schema = LogSchema.from_arrow(t.schema)
    pre = build_preprocessor(schema, data)
    enc = pre(t)
    n_train = int(0.8 * t.num_rows)
    cats = torch.tensor(np.stack([enc.column(c).to_numpy() for c in schema.categorical], 1))
    dense = torch.tensor(np.stack([enc.column(c).to_numpy() for c in schema.dense], 1))
    y = torch.tensor(enc.column("label").to_numpy().astype(np.float32))
    sizes = [pre.buckets[c] for c in schema.categorical]
    offsets = torch.tensor(np.cumsum([0] + sizes[:-1]))
    total = int(sum(sizes))
    torch.manual_seed(0)
    w = torch.nn.Embedding(total, 1)
    torch.nn.init.zeros_(w.weight)
    lin = torch.nn.Linear(len(schema.dense), 1)
    opt = torch.optim.Adam([*w.parameters(), *lin.parameters()], lr=0.05)

    def logits(sl: slice) -> torch.Tensor:
        return w(cats[sl] + offsets).sum((1, 2)) + lin(dense[sl]).squeeze(1)

    for _ in range(3):
        for i in range(0, n_train, 2048):
            sl = slice(i, min(i + 2048, n_train))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits(sl), y[sl]) \
                + 1e-6 * w(cats[sl] + offsets).pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    test = slice(n_train, t.num_rows)
    with torch.no_grad():
        lr_auc = auc(y[test].numpy(), logits(test).numpy())
    oracle = auc(y[test].numpy(), t.column("p_true").to_numpy()[n_train:])
    return lr_auc, oracle


def test_oracle_beats_logistic_regression(log: tuple[DataConfig, pa.Table]) -> None:
    data, t = log
    lr_auc, oracle = _logistic_regression_auc(t, data)
    print(f"test rows: logistic regression AUC {lr_auc:.4f}, oracle AUC {oracle:.4f}")
    assert lr_auc > 0.6, "the log must carry learnable first-order signal"
    assert oracle > lr_auc + 0.03, (oracle, lr_auc)


def test_history_holds_only_earlier_clicks_of_the_same_user(tmp_path: Path) -> None:
    data = _data("data.rows=20000", "data.days=2", "data.synthetic.warmup_days=0",
                 "data.synthetic.num_users=300")
    generate(data, tmp_path)
    t = pq.read_table(tmp_path / "part-00000.parquet")
    users = t.column(USER).to_numpy()
    items = t.column(ITEM).to_numpy()
    y = t.column("label").to_numpy()
    hists = t.column(HISTORY).to_pylist()
    assert max(len(h) for h in hists) == data.synthetic.history_length
    clicked: dict[int, list[int]] = {}
    for u, it, lab, h in zip(users, items, y, hists):
        seen = clicked.get(int(u), [])
        assert all(x in seen for x in h)
        if lab:
            clicked.setdefault(int(u), []).append(int(it))


def _day_freq(t: pa.Table, field: str, day: int, vocab: np.ndarray) -> np.ndarray:
    ids = t.column(field).to_numpy()[t.column("day").to_numpy() == day]
    return np.array([(ids == v).sum() for v in vocab], dtype=np.float64) + 1.0


def _drift_js(data: DataConfig, tmp: Path) -> float:
    generate(data, tmp)
    t = pq.read_table(sorted(tmp.glob("part-*.parquet")))
    vocab = np.unique(t.column(ITEM).to_numpy(), return_counts=True)
    top = vocab[0][np.argsort(vocab[1])[::-1][:200]]
    return float(jensenshannon(_day_freq(t, ITEM, 0, top), _day_freq(t, ITEM, data.days - 1, top)))


def test_popularity_drift_moves_the_item_distribution(tmp_path: Path) -> None:
    base = ("data.rows=20000", "data.days=4", "data.synthetic.num_items=2000")
    still = _drift_js(_data(*base), tmp_path / "still")
    moving = _drift_js(_data(*base, "data.synthetic.drift.popularity_shift_per_day=0.01"), tmp_path / "moving")
    assert moving > 2 * still, (still, moving)


def test_shift_event_moves_ctr_and_features_on_its_day(tmp_path: Path) -> None:
    """Same seed with and without a shift on day 2: days 0-1 are identical, day 2 is not."""
    base = ("data.rows=40000", "data.days=4", "data.synthetic.drift.rotation_per_day=0")

    def run(*extra: str, out: Path) -> tuple[pa.Table, list[float]]:
        s = generate(_data(*base, *extra), out)
        return pq.read_table(sorted(out.glob("part-*.parquet"))), s.ctr_by_day

    quiet, quiet_ctr = run(out=tmp_path / "quiet")
    shifted, shift_ctr = run("data.synthetic.drift.shift_days=[2]", out=tmp_path / "shift")
    assert quiet_ctr[:2] == shift_ctr[:2]
    n2 = int((quiet.column("day").to_numpy() == 2).sum())
    p = quiet_ctr[2]
    three_se = 3 * np.sqrt(2 * p * (1 - p) / n2)  # of a difference of two day-2 CTRs
    assert abs(shift_ctr[2] - quiet_ctr[2]) > three_se, (quiet_ctr, shift_ctr, three_se)

    field = "C20"  # a context field
    ids, counts = np.unique(quiet.column(field).to_numpy(), return_counts=True)
    top = ids[np.argsort(counts)[::-1][:100]]
    js_quiet = jensenshannon(_day_freq(quiet, field, 1, top), _day_freq(quiet, field, 2, top))
    js_shift = jensenshannon(_day_freq(shifted, field, 1, top), _day_freq(shifted, field, 2, top))
    print(f"day-2 CTR quiet {quiet_ctr[2]:.4f} shifted {shift_ctr[2]:.4f} (3 s.e. {three_se:.4f}); "
          f"JS({field}) day1→day2 quiet {js_quiet:.3f} shifted {js_shift:.3f}")
    assert js_shift > 3 * js_quiet, (js_quiet, js_shift)


def test_shards_hold_exactly_shard_rows_even_when_a_chunk_spans_several(tmp_path: Path) -> None:
    data = _data("data.rows=5500", "data.days=1", "data.shard_rows=1000", "data.synthetic.num_users=500",
                 "data.synthetic.max_cardinality=5000")
    summary = generate(data, tmp_path)
    sizes = [pq.read_metadata(tmp_path / f).num_rows for f in summary.files]
    assert sizes == [1000] * 5 + [500]


SMALL = ("data.rows=3000", "data.days=2", "data.shard_rows=1000", "data.synthetic.num_users=500",
         "data.synthetic.num_items=500", "data.synthetic.max_cardinality=5000", "data.synthetic.warmup_days=0")


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_a_crash_mid_write_leaves_the_earlier_log_whole_and_the_rerun_regenerates(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from recdistill.data import synthetic
    from recdistill.data.log import ensure_synthetic

    out = tmp_path / "data"
    a, b = _data(*SMALL), _data(*SMALL, "data.seed=1")
    generate(a, out)
    log_a = _files(out)
    real_next = synthetic._ShardWriter._next

    def dies_at_the_second_shard(self) -> None:  # a crash (disk full, kill) mid-log
        if len(self.files) == 1:
            raise OSError("injected: no space left on device")
        real_next(self)

    monkeypatch.setattr(synthetic._ShardWriter, "_next", dies_at_the_second_shard)
    with pytest.raises(OSError, match="injected"):
        generate(b, out)
    monkeypatch.undo()
    # no partial shard of b next to a's manifest: a is there, whole, and nothing else
    assert _files(out) == log_a and synthetic.manifest_problem(out) is None
    assert [p.name for p in tmp_path.iterdir()] == ["data"]
    assert ensure_synthetic(a, out) is False  # a is what it says it is
    assert ensure_synthetic(b, out) is True  # b was never finished: generated now
    assert synthetic.manifest_problem(out) is None
    assert pq.read_table(out).num_rows == 3000 and _files(out) != log_a


def test_the_manifest_lists_every_shard_and_a_mismatch_is_named(tmp_path: Path) -> None:
    import json
    import shutil

    from recdistill.data.synthetic import MANIFEST, manifest_problem, verified_manifest

    out = tmp_path / "data"
    generate(_data(*SMALL), out)
    listed = verified_manifest(out)["files"]
    assert [f["name"] for f in listed] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert [f["rows"] for f in listed] == [1000, 1000, 1000]
    assert all(f["bytes"] == (out / f["name"]).stat().st_size for f in listed)

    shutil.copy(out / "part-00000.parquet", out / "part-00003.parquet")  # a shard the manifest does not list
    assert "part-00003.parquet" in manifest_problem(out) and verified_manifest(out) is None
    (out / "part-00003.parquet").unlink()
    shard = out / "part-00001.parquet"
    whole = shard.read_bytes()
    shard.write_bytes(whole[: len(whole) // 2])  # a shard cut short
    assert "part-00001.parquet" in manifest_problem(out)
    shard.unlink()  # a shard gone
    assert "lacks ['part-00001.parquet']" in manifest_problem(out)
    shard.write_bytes(whole)
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["files"][2]["rows"] = 999  # same bytes, other rows: the manifest is what is wrong
    (out / MANIFEST).write_text(json.dumps(manifest))
    assert "999" in manifest_problem(out)
    del manifest["files"]  # written before manifests listed files
    (out / MANIFEST).write_text(json.dumps(manifest))
    assert "lists no files" in manifest_problem(out)


def test_generate_refuses_a_directory_that_holds_more_than_a_log(tmp_path: Path) -> None:
    from recdistill.data.rejects import DataError

    (tmp_path / "results.json").write_text("{}")  # e.g. --out pointed at a run directory
    with pytest.raises(DataError, match=r"results\.json.*not part of a synthetic log"):
        generate(_data(*SMALL), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_segments_have_their_own_click_model_at_the_same_scale(tmp_path: Path) -> None:
    """data.synthetic.segments: the same impressions scored as if in another segment get
    another logit (by segment_strength), the parts keep their scale, and the log carries the
    segment as a categorical column; without segments the log is the one it always was."""
    from recdistill.data.synthetic import SEGMENT, ClickModel

    small = ("data.synthetic.num_users=500", "data.synthetic.max_cardinality=5000")
    rng = np.random.default_rng(0)
    day = rng.uniform(0, 1, 4000)
    for strength, differs in ((0.0, False), (0.7, True)):
        model = ClickModel(_data(*small, "data.synthetic.segments=3",
                                 f"data.synthetic.segment_strength={strength}").synthetic, 0)
        ids = model.draw(np.random.default_rng(1), day)
        dense, hist = model.dense(rng, ids), np.full((4000, 1), -1)
        logits = []
        for s in range(3):
            comps = model.components({**ids, SEGMENT: np.full(4000, s)}, dense, hist, day)
            logits.append(model.logit(comps))
        gap = np.abs(logits[0] - logits[1]).mean()
        assert (gap > 0.1) if differs else gap < 1e-5, (strength, gap)
        assert 0.8 < np.std(logits[0]) / np.std(logits[2]) < 1.25
    plain = ClickModel(_data(*small).synthetic, 0)
    assert SEGMENT not in plain.draw(np.random.default_rng(1), day)
    data = _data("data.rows=3000", "data.days=2", *small, "data.synthetic.segments=4")
    generate(data, tmp_path / "seg")
    t = pq.read_table(tmp_path / "seg")
    schema = LogSchema.from_arrow(t.schema)
    assert schema.categorical[-1] == SEGMENT and schema.cardinalities[-1] == 4
    counts = np.bincount(t.column(SEGMENT).to_numpy(), minlength=4)
    assert counts.min() > 0.15 * 3000  # drawn uniformly per impression


def test_scenarios_show_their_own_catalogues_to_the_same_users(tmp_path: Path) -> None:
    """data.synthetic.scenarios: each row's item comes from its scenario's block of item ids,
    users (and their histories) cross the scenarios, the log carries the scenario as a
    categorical column; without scenarios the draws are those of a log before they existed."""
    from recdistill.config import ConfigError
    from recdistill.data.synthetic import SCENARIO, ClickModel

    small = ("data.synthetic.num_users=300", "data.synthetic.num_items=2000", "data.synthetic.max_cardinality=5000")
    data = _data("data.rows=4000", "data.days=2", *small, "data.synthetic.scenarios=2")
    generate(data, tmp_path / "two")
    t = pq.read_table(tmp_path / "two")
    schema = LogSchema.from_arrow(t.schema)
    assert schema.categorical[-1] == SCENARIO and schema.cardinalities[-1] == 2
    scenario, items, users = (t.column(c).to_numpy() for c in (SCENARIO, ITEM, USER))
    assert np.bincount(scenario, minlength=2).min() > 0.4 * 4000  # drawn uniformly per impression
    assert items[scenario == 0].max() < 1000 <= items[scenario == 1].min()  # 2000 items, two catalogues
    both = set(users[scenario == 0]) & set(users[scenario == 1])
    assert len(both) > 0.5 * len(set(users))
    hist = t.column(HISTORY).combine_chunks()
    mixed = [set(np.asarray(h) // 1000) for h in hist.to_pylist() if h]
    assert any(len(m) == 2 for m in mixed)  # a user's clicks on either surface are one history
    # without scenarios: the users and items drawn as before scenarios existed (the same
    # uniforms through the same popularity laws, over the whole catalogue)
    day = np.random.default_rng(0).uniform(0, 1, 500)
    model = ClickModel(_data(*small).synthetic, 0)
    drawn = model.draw(np.random.default_rng(1), day)
    assert SCENARIO not in drawn
    u = np.random.default_rng(1).random((2, 500))
    slide = np.floor(model.cfg.drift.popularity_shift_per_day * day * 2000).astype(np.int64)
    assert np.array_equal(drawn[USER], model.zipf[USER].ranks(u[0]))
    assert np.array_equal(drawn[ITEM], (model.zipf[ITEM].ranks(u[1]) + slide) % 2000)
    with pytest.raises(ConfigError, match="scenarios=1"):
        _data("data.synthetic.scenarios=1")
