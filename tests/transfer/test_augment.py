"""Unclicked-sample augmentation as a batch function, and the teacher scoring its rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from recdistill.config import TeacherConfig, to_dict
from recdistill.data.schema import LABEL, ROW_ID, LogSchema
from recdistill.signals.kinds import LOGIT
from recdistill.train.plan import build_model, feature_spec
from recdistill.transfer.augment import AUGMENTED, TeacherScorer, augment_batch

ITEM_COLS = ["item", "I1"]


def _batch(n: int = 4000, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    items = np.minimum(rng.zipf(1.6, n), 200).astype(np.int64) + 1  # a popular head and a long tail
    return pa.table({
        ROW_ID: np.arange(n, dtype=np.int64) * 3 + 7,
        LABEL: (rng.random(n) < 0.1).astype(np.int8),
        "user": rng.integers(2, 300, n),
        "item": items,
        "I1": items.astype(np.float32) / 10,  # the item's own dense count
        "ctx": rng.integers(2, 5, n),
        LOGIT: rng.normal(size=n).astype(np.float32),
    })


@pytest.mark.parametrize("generator", ["random", "popularity", "session"])
def test_augmented_rows_swap_only_the_item_side(generator: str) -> None:
    b = _batch()
    out = augment_batch(b, 0.5, generator, ITEM_COLS, "user", seed=3)
    flag = out.column(AUGMENTED).to_numpy() == 1
    real, made = out.filter(pa.array(~flag)), out.filter(pa.array(flag))
    assert real.drop_columns([AUGMENTED]).equals(b)  # every real row, untouched, in order
    assert abs(made.num_rows - 0.5 * b.num_rows) < 0.1 * b.num_rows  # minus pairs with their own item
    assert (made.column(LABEL).to_numpy() == 0).all() and np.isnan(made.column(LOGIT).to_numpy()).all()
    base = {int(r): i for i, r in enumerate(b.column(ROW_ID).to_numpy())}
    idx = np.array([base[int(r)] for r in made.column(ROW_ID).to_numpy()])
    for c in ("user", "ctx"):  # the user and context side come from the row the pair was made from
        assert (made.column(c).to_numpy() == b.column(c).to_numpy()[idx]).all()
    assert (made.column("item").to_numpy() != b.column("item").to_numpy()[idx]).all()  # never its own item
    # the item side moves together: the donor's item with the donor's dense count
    assert np.allclose(made.column("I1").to_numpy(), made.column("item").to_numpy() / 10)
    rid = out.column(ROW_ID).to_numpy()
    assert (np.diff(rid) >= 0).all()  # next to the row each pair was made from
    if generator == "session":
        # same-user donors: the pair's item is one the user was shown in the batch
        shown = set(zip(b.column("user").to_pylist(), b.column("item").to_pylist()))
        pairs = list(zip(made.column("user").to_pylist(), made.column("item").to_pylist()))
        assert np.mean([p in shown for p in pairs]) > 0.9  # users with one impression fall back


def test_random_generator_flattens_popularity() -> None:
    b = _batch(20_000)
    head = int(np.bincount(b.column("item").to_numpy()).argmax())
    share = {g: np.mean(augment_batch(b, 1.0, g, ITEM_COLS, "user", 1).filter(
        pa.compute.equal(pa.compute.field(AUGMENTED), 1)).column("item").to_numpy() == head)
        for g in ("random", "popularity")}
    assert share["popularity"] > 0.2 and share["random"] < 0.02


def test_pairs_per_row_do_not_depend_on_the_batching() -> None:
    b = _batch(3000)
    whole = augment_batch(b, 1.5, "popularity", ITEM_COLS, "user", 5)
    parts = pa.concat_tables([augment_batch(b.slice(i, 500), 1.5, "popularity", ITEM_COLS, "user", 5)
                              for i in range(0, 3000, 500)])

    def per_row(t: pa.Table) -> np.ndarray:
        aug = t.filter(pa.compute.equal(pa.compute.field(AUGMENTED), 1))
        return np.bincount(aug.column(ROW_ID).to_numpy(), minlength=10_000)

    # a pair is dropped when its donor is its own item, which depends on the batch; the
    # asked-for count per row (1 or 2) does not
    a, c = per_row(whole), per_row(parts)
    assert set(np.unique(a)) <= {0, 1, 2} and np.abs(a - c).max() <= 2 and abs(a.sum() - c.sum()) < 0.05 * a.sum()
    assert augment_batch(b, 0.0, "popularity", ITEM_COLS, "user", 5).num_rows == b.num_rows


def test_bad_arguments_name_what_is_wrong() -> None:
    b = _batch(100)
    with pytest.raises(ValueError, match="generator"):
        augment_batch(b, 1.0, "nearest", ITEM_COLS, "user", 0)
    with pytest.raises(ValueError, match="price"):
        augment_batch(b, 1.0, "random", ["price"], "user", 0)
    with pytest.raises(ValueError, match="user field"):
        augment_batch(b, 1.0, "session", ITEM_COLS, None, 0)


def test_teacher_scores_augmented_rows_only(tmp_path) -> None:
    schema = LogSchema(dense=("I1",), categorical=("user", "item", "ctx"), categorical_type="int64",
                       user_field="user", item_field="item")
    buckets = {"user": 300, "item": 202, "ctx": 5}
    t = TeacherConfig(arch="dnn", embed_dim=4, depth=1, width=8)
    model = build_model(feature_spec(schema, buckets), t, "single", 0, sparse_embeddings=False)
    torch.save({"model": model.state_dict()}, tmp_path / "state.pt")
    out = augment_batch(_batch(500), 1.0, "popularity", ITEM_COLS, "user", 2)
    scored = TeacherScorer(str(tmp_path), to_dict(t), schema, buckets, 0)(out)
    flag = out.column(AUGMENTED).to_numpy() == 1
    z = scored.column(LOGIT).to_numpy()
    assert np.array_equal(z[~flag], out.column(LOGIT).to_numpy()[~flag])
    from recdistill.data.tensors import from_table

    rows = from_table(out.filter(pa.array(flag)), schema)
    with torch.no_grad():
        want = model.eval()(rows.cat, rows.dense, rows.seq)[0].numpy()
    assert np.allclose(z[flag], want, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="gone"):
        TeacherScorer(str(tmp_path / "nope"), to_dict(t), schema, buckets, 0)
