"""Intervals over seeds and test rows: the Poisson bootstrap of the test rows, the joint
draws, their coverage, and the summary a run writes (no Ray)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recdistill.intervals import Figures, draws, excludes_zero, interval, ratio, spread
from recdistill.metrics import BootstrapAUC, ResampleRows, auc, group_auc, poisson_weights
from recdistill.summary import over_seeds, summarize
from recdistill.train.evaluate import Evaluator, evaluate, user_shard


def test_poisson_weights_are_a_function_of_row_and_replicate() -> None:
    ids = np.arange(50_000, dtype=np.int64) * 7 + 3
    w = poisson_weights(ids, 20)
    assert w.shape == (20, 50_000)
    assert w.mean() == pytest.approx(1.0, abs=0.01) and w.var() == pytest.approx(1.0, abs=0.02)
    assert (w == 0).mean() == pytest.approx(math.exp(-1), abs=0.01)
    # the same row gets the same weights in any batch, and a shorter run's replicates are a prefix
    assert np.array_equal(poisson_weights(ids[::-1], 20)[:, ::-1], w)
    assert np.array_equal(poisson_weights(ids, 5), w[:5])
    # replicates are not copies of one another
    assert abs(np.corrcoef(w[0], w[1])[0, 1]) < 0.02


def _naive_weighted_auc(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> float:
    """Σ over positive-negative pairs of w_i·w_j·[s_i > s_j] (ties ½), over Σw_pos·Σw_neg."""
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    num = sum(w[i] * w[j] * (1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0) for i in pos for j in neg)
    return num / (w[pos].sum() * w[neg].sum())


def test_bootstrap_auc_replicates_match_the_weighted_pair_count() -> None:
    rng = np.random.default_rng(0)
    n = 300
    y = rng.random(n) < 0.3
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + y)))
    ids = np.arange(n) + 1000
    boot = BootstrapAUC(6, bins=1 << 16)
    boot.update(y[:170], p[:170], ids[:170])  # in two chunks: the histograms add
    boot.update(y[170:], p[170:], ids[170:])
    got = boot.aucs()
    w = poisson_weights(ids, 6)
    for k in range(6):
        assert got[k] == pytest.approx(_naive_weighted_auc(y, p, w[k]), abs=2e-4)
    assert got[-1] == pytest.approx(auc(y, p), abs=2e-4)
    assert boot.deviations() == pytest.approx((got[:-1] - got[-1]).tolist())


def test_bootstrap_histograms_are_each_replicates_weights_summed_per_bin() -> None:
    """Pinned to the definition, bin by bin: hist[label, r, bin] = the sum of replicate r's
    Poisson weights over the rows of that label whose logit falls in that bin (the last
    replicate: every weight 1), the same whether the rows' weights come prepared
    (``ResampleRows``, shared by the models scored on a batch) or not."""
    rng = np.random.default_rng(4)
    n, reps, bins = 700, 5, 64
    y = rng.random(n) < 0.25
    p = 1 / (1 + np.exp(-3 * rng.normal(size=n)))
    p[:3] = [0.0, 1.0, 0.5]  # clipped to the first and last bins, and the middle
    ids = rng.integers(0, 1 << 40, n)
    w = np.vstack([poisson_weights(ids, reps), np.ones((1, n), np.float32)])
    z = np.log(np.clip(p, 1e-12, 1 - 1e-12)) - np.log1p(-np.clip(p, 1e-12, 1 - 1e-12))
    at = np.clip(np.floor((z + 16) / 32 * bins).astype(int), 0, bins - 1)
    want = np.zeros((2, reps + 1, bins))
    for i in range(n):
        for r in range(reps + 1):
            want[0 if y[i] else 1, r, at[i]] += w[r, i]
    plain, shared = BootstrapAUC(reps, bins), BootstrapAUC(reps, bins)
    plain.update(y[:400], p[:400], ids[:400])
    plain.update(y[400:], p[400:], ids[400:])
    for part in (slice(0, 400), slice(400, None)):
        shared.update(y[part], p[part], ids[part], ResampleRows(y[part], ids[part], reps))
    assert np.array_equal(plain.hist, want) and np.array_equal(shared.hist, want)
    only_negatives = BootstrapAUC(reps, bins)
    only_negatives.update(np.zeros(4, bool), p[:4], ids[:4])  # no positive rows: nothing to add there
    assert only_negatives.hist[0].sum() == 0 and only_negatives.hist[1, -1].sum() == 4
    with pytest.raises(ValueError, match="other rows"):  # other labels
        shared.update(~y[:400], p[:400], ids[:400], ResampleRows(y[:400], ids[:400], reps))
    with pytest.raises(ValueError, match="other rows"):  # the same labels, other rows
        shared.update(y[:400], p[:400], ids[:400] + 1, ResampleRows(y[:400], ids[:400], reps))
    ev = Evaluator(["a"], {}, replicates=reps)  # the same tensor of ids with other labels: drawn again
    t_ids, t_y = torch.from_numpy(ids[:400]), torch.from_numpy(y[:400]).float()
    ev.update("a", torch.zeros(400), t_y, t_ids)
    ev.update("a", torch.zeros(400), 1 - t_y, t_ids)
    assert ev.boot["a"].hist[:, -1].sum(1).tolist() == [400.0, 400.0]
    with pytest.raises(ValueError, match=r"shape \(5, 3\), expected \(5, 4\)"):
        ResampleRows(y[:4], ids[:4], reps, poisson_weights(ids[:3], reps))


def test_bootstrap_spread_matches_resampling_rows() -> None:
    """The replicates' spread is the AUC's sampling spread (checked against drawing the rows
    with replacement, the classic bootstrap, on exact AUCs)."""
    rng = np.random.default_rng(1)
    n = 4000
    y = rng.random(n) < 0.2
    p = 1 / (1 + np.exp(-(0.8 * rng.normal(size=n) + y)))
    boot = BootstrapAUC(400)
    boot.update(y, p, np.arange(n))
    classic = [auc(y[i], p[i]) for i in (rng.integers(n, size=n) for _ in range(400))]
    assert np.std(boot.deviations()) == pytest.approx(np.std(classic), rel=0.2)


def test_evaluator_merged_across_workers_equals_one_pass() -> None:
    """Two workers holding whole users: AUC, GAUC and the bootstrap histograms add up to
    what one worker scoring every row computes."""
    g = torch.Generator().manual_seed(0)
    n = 5000
    users = torch.randint(0, 300, (n,), generator=g)
    y = (torch.rand(n, generator=g) < 0.3).float()
    z = torch.randn(n, generator=g) + y
    ids = torch.arange(n) * 3
    one = Evaluator(["m"], {}, replicates=50, by_user=True)
    one.update("m", z, y, ids, users)
    parts = []
    for rank in range(2):
        mine = user_shard(users, rank, 2)
        ev = Evaluator(["m"], {}, replicates=50, by_user=True)
        ev.update("m", z[mine], y[mine], ids[mine], users[mine])
        parts.append(ev.pack())
    merged = Evaluator(["m"], {}, replicates=50, by_user=True)
    merged.unpack(parts[0] + parts[1])
    a, b = one.metrics("m"), merged.metrics("m")
    assert b["auc"] == pytest.approx(a["auc"]) and b["rows"] == n
    assert b["gauc"] == pytest.approx(a["gauc"]) == pytest.approx(group_auc(y.numpy(), z.numpy(), users.numpy()))
    assert b["auc_boot"] == pytest.approx(a["auc_boot"])
    # the in-memory evaluation (the local engine) gives the same deviations
    from recdistill.data.tensors import TensorLog

    log = TensorLog(cat=users[:, None], dense=torch.zeros(n, 0), seq=torch.zeros(n, 0, 1, dtype=torch.long),
                    label=y, sample_rate=torch.ones(n), row_id=ids)
    local = evaluate(z, log, 1.0, user_col=0, replicates=50)
    assert local["auc_boot"] == pytest.approx(a["auc_boot"], abs=1e-9)
    assert local["gauc"] == pytest.approx(a["gauc"])


def _coverage(method: str, seeds: int, trials: int = 300) -> float:
    rng = np.random.default_rng(7)
    hit = 0
    for t in range(trials):
        x = 0.7 + 0.01 * rng.normal(size=seeds)
        if method == "draws":
            f = Figures.of({"m": x.tolist()})
            ci = interval(lambda d: d["m"], f, draws(f, 2000, seed=t))["ci"]
        else:
            from scipy.stats import bootstrap

            res = bootstrap((x,), np.mean, n_resamples=2000, method="percentile", random_state=t)
            ci = [res.confidence_interval.low, res.confidence_interval.high]
        hit += ci[0] <= 0.7 <= ci[1]
    return hit / trials


def test_three_seed_intervals_cover_at_their_level_and_resampling_does_not() -> None:
    """With 3 seeds, the t-scaled draws cover the true mean about 95% of the time; a
    percentile bootstrap that resamples the 3 seeds covers far less (why intervals.py does
    not use it)."""
    assert 0.91 <= _coverage("draws", 3) <= 0.99
    assert _coverage("scipy", 3) < 0.85


def test_spread_is_the_student_t_interval() -> None:
    from scipy.stats import t

    x = [0.71, 0.73, 0.70, 0.74]
    s = spread(x)
    lo, hi = t.interval(0.95, 3, loc=np.mean(x), scale=np.std(x, ddof=1) / 2)
    assert s["ci"] == pytest.approx([lo, hi]) and s["std"] == pytest.approx(np.std(x, ddof=1))
    assert math.isnan(spread([0.7])["std"])


def test_ratio_interval_is_undefined_where_the_teacher_has_no_gain() -> None:
    f = Figures.of({"t": [0.75, 0.76, 0.75], "r": [0.70, 0.71, 0.70], "d": [0.73, 0.735, 0.73]})
    got = interval(ratio("d", "r", "t", "r"), f, draws(f))
    assert got["mean"] == pytest.approx((0.73167 - 0.70333) / (0.75333 - 0.70333), abs=1e-3)
    assert got["ci"][0] < got["mean"] < got["ci"][1] and "undefined_share" not in got
    flat = Figures.of({"t": [0.70, 0.71, 0.70], "r": [0.70, 0.71, 0.70], "d": [0.73, 0.735, 0.73]})
    assert interval(ratio("d", "r", "t", "r"), flat, draws(flat))["undefined_share"] > 0.3
    assert excludes_zero([0.1, 0.2]) and excludes_zero([-0.2, -0.1]) and not excludes_zero([-0.1, 0.1])
    assert not excludes_zero([math.nan, math.nan])


def _seed_results(seed: int, gain: float, noise: float, boot: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    raw = 0.70 + 0.004 * rng.normal()
    dev = (0.002 * rng.normal(size=20)).tolist() if boot else None

    def student(name: str, g: float) -> dict:
        return {"name": name, "arch": "dnn", "towers": "single", "params": 10, "auc_raw": raw,
                "auc_distill": raw + g + noise * rng.normal(), "logloss_raw": 0.5, "logloss_distill": 0.49,
                "auc_boot_raw": dev, "auc_boot_distill": dev, "eta": 0.5, "valid_curve_raw": [{"auc": 0.7}]}
    return {"engine": "local", "teacher": {"arch": "dcnv2", "params": 100, "auc": 0.75, "logloss": 0.45,
                                           "calibration": 0.01, "auc_boot": dev},
            "students": [student("a", gain), student("b", 0.0)], "data": {"rows": 1}}


def test_summary_calls_a_consistent_gain_a_finding_and_noise_within_noise() -> None:
    per = [_seed_results(s, 0.01, 0.0005) for s in range(3)]
    s = summarize(per, [["b", "a"]])
    assert s["seeds"] == 3 and s["replicates"] == 20 and s["noise"] == "seeds and test rows"
    diffs = {d["name"]: d for d in s["differences"]}
    assert diffs["a: distilled − raw"]["finding"] and diffs["a: distilled − raw"]["mean"] == pytest.approx(0.01, abs=1e-3)
    assert not diffs["b: distilled − raw"]["finding"]  # gain 0: only noise
    assert diffs["b − a: distilled AUC"]["finding"] and diffs["b − a: η"]["metric"] == "eta"
    assert s["eta"]["a"]["finding"] and not s["eta"]["b"]["finding"]
    assert s["models"]["a/distill"]["logloss"]["mean"] == pytest.approx(0.49)
    noisy = summarize([_seed_results(s, 0.003, 0.01) for s in range(3)])
    assert not {d["name"]: d for d in noisy["differences"]}["a: distilled − raw"]["finding"]
    # one seed without replicates: no interval, and nothing is called a finding
    one = summarize([_seed_results(0, 0.01, 0.0, boot=False)])
    assert one["noise"] == "none" and not any(d["finding"] for d in one["differences"])


def test_over_seeds_keeps_the_run_shape_with_means_and_per_seed_values() -> None:
    per = [_seed_results(s, 0.01, 0.0005) for s in range(3)]
    r = over_seeds(per, [4, 5, 6], [])
    assert r["teacher"]["auc"] == pytest.approx(0.75) and "auc_boot" not in r["teacher"]
    a = r["students"][0]
    assert a["auc_raw"] == pytest.approx(np.mean([p["students"][0]["auc_raw"] for p in per]))
    assert "valid_curve_raw" not in a  # one seed's curve is not the mean's
    assert a["eta"] == r["summary"]["eta"]["a"]["mean"]
    assert [p["seed"] for p in r["per_seed"]] == [4, 5, 6] and r["per_seed"][1]["dir"] == "seeds/seed-5"
    # the serving cost: the first seed's measured export (the same shape in every seed), whole
    served = {"format": "onnx", "measured": [{"device": "cpu", "batch": {"1": {"p50_ms": 0.1}}}]}
    per[0]["students"][0]["serving"] = served
    assert over_seeds(per, [4, 5, 6], [])["students"][0]["serving"] == {**served, "seed": 4}


def test_evaluator_keeps_only_the_user_ids_of_a_batch() -> None:
    """GAUC's rows are kept until the end of scoring: the user ids alone, not the batch's
    whole id matrix they are a column of (a view would hold every test batch's ids), in
    arrays that grow by doubling, not three new ones per batch."""
    g = torch.Generator().manual_seed(1)
    ev = Evaluator(["m"], {}, by_user=True)
    batches = [torch.randint(0, 50, (1000, 28), generator=g) for _ in range(3)]
    for ids in batches:
        ev.update("m", torch.randn(1000, generator=g), (torch.rand(1000, generator=g) < 0.3).float(), None, ids[:, 3])
    rows = ev._rows["m"]
    assert rows.n == 3000 and not any(np.shares_memory(c, ids.numpy()) for c in rows.cols for ids in batches)
    assert np.array_equal(rows.cols[0][:3000], torch.cat([ids[:, 3] for ids in batches]).numpy())
    assert len(rows.cols[0]) == 1 << 16  # one allocation for all three batches


def test_poisson_counts_are_the_inverse_cdf_search() -> None:
    """The comparisons-first inversion gives exactly ``searchsorted`` on the CDF, at its
    steps, just off them and in the far tail."""
    from recdistill.metrics import _POISSON_CDF, poisson_counts

    rng = np.random.default_rng(5)
    u = np.concatenate([rng.random(200_000), _POISSON_CDF, np.nextafter(_POISSON_CDF, 0), np.nextafter(_POISSON_CDF, 1),
                        [0.0, 1 - 2 ** -53]]).reshape(2, -1)
    got = poisson_counts(u)
    assert got.dtype == np.float32 and np.array_equal(got, np.searchsorted(_POISSON_CDF, u).astype(np.float32))
    assert got.max() >= 8  # the tail went through the search


def test_models_scored_on_one_batch_share_its_bootstrap_weights() -> None:
    """Every model scored on a batch is weighted by the same Poisson draws (a function of
    row id): drawn once per batch of ids, with each model's histograms those of its own."""
    g = torch.Generator().manual_seed(2)
    ev = Evaluator(["a", "b"], {}, replicates=30)
    alone = {n: BootstrapAUC(30) for n in ("a", "b")}
    for k in range(3):
        ids, y = torch.arange(k * 500, (k + 1) * 500) * 7, (torch.rand(500, generator=g) < 0.3).float()
        for n in ("a", "b"):
            z = torch.randn(500, generator=g) + y
            ev.update(n, z, y, ids)
            alone[n].update(y.numpy(), torch.sigmoid(z).double().numpy(), ids.numpy())
            assert ev._weighed is not None and ev._weighed[0] is ids  # drawn for this batch, kept for the next model
        first = ev._weighed[1]
        ev.update("a", torch.randn(500, generator=g), y, ids.clone())  # other ids: drawn again
        assert ev._weighed[1] is not first
    assert np.allclose(ev.boot["b"].hist, alone["b"].hist)


def test_a_test_batch_draws_each_tensor_of_ids_weights_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """``score_batch`` scores every model's whole batch before the cold users' and the slices'
    rows, so the bootstrap weights are drawn once per set of rows (not once per model and
    set); each figure is what scoring the model alone on those rows gives."""
    import recdistill.train.evaluate as evaluate_module
    from recdistill.data.tensors import TensorLog
    from recdistill.models import FeatureSpec, Ranker
    from recdistill.train.worker import COLD_SUFFIX, score_batch, slice_name

    drawn: list[int] = []

    def counted(ids: np.ndarray, replicates: int) -> np.ndarray:
        drawn.append(len(ids))
        return poisson_weights(ids, replicates)

    monkeypatch.setattr(evaluate_module, "poisson_weights", counted)
    spec = FeatureSpec(buckets=(5, 7), num_dense=2)
    torch.manual_seed(0)
    models = {n: Ranker(spec, "dnn", 4, 1, 8).eval() for n in ("a", "b", "t")}
    slices = {"a": [0], "b": [1], "t": [0, 1]}
    names = [*models, *(f"{n}{COLD_SUFFIX}" for n in models), *(slice_name(n, k) for n, ks in slices.items() for k in ks)]
    ev = Evaluator(names, {}, replicates=20, by_user=True)
    alone = Evaluator(names, {}, replicates=20, by_user=True)
    g = torch.Generator().manual_seed(3)
    for k in range(2):
        n = 300
        b = TensorLog(cat=torch.stack([torch.randint(0, 5, (n,), generator=g), torch.randint(0, 7, (n,), generator=g)], 1),
                      dense=torch.randn(n, 2, generator=g), seq=torch.zeros(n, 0, 1, dtype=torch.long),
                      label=(torch.rand(n, generator=g) < 0.3).float(), sample_rate=torch.ones(n),
                      row_id=torch.arange(k * n, (k + 1) * n), part=torch.randint(0, 2, (n,), generator=g).short())
        cold = torch.rand(n, generator=g) < 0.2
        drawn.clear()
        with torch.no_grad():
            score_batch(ev, models, b, b.cat[:, 0], cold, slices)
            assert drawn == [n, int(cold.sum()), int((b.part == 0).sum()), int((b.part == 1).sum())]
            for name, m in models.items():  # model by model, each set of rows on its own
                z = m(b.cat, b.dense, b.seq)[0]
                for sub, f in ((name, torch.ones(n, dtype=torch.bool)), (f"{name}{COLD_SUFFIX}", cold),
                               *((slice_name(name, j), b.part == j) for j in slices[name])):
                    alone.update(sub, z[f], b.label[f], b.row_id[f], b.cat[f, 0])
    for name in names:
        assert np.array_equal(ev.boot[name].hist, alone.boot[name].hist), name
        assert ev.metrics(name) == alone.metrics(name), name
    with pytest.raises(ValueError, match=r"not among the models.*'x'"):
        score_batch(ev, models, b, None, None, {"x": [0]})
