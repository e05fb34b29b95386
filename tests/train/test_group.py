"""A student group's shared pass equals training each member alone (plain PyTorch, no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recdistill.data.sampling import model_sample_mask
from recdistill.data.tensors import TensorLog
from recdistill.distill.objective import Objective
from recdistill.models import FeatureSpec, Ranker
from recdistill.train.group import Member, StudentGroup
from recdistill.train.loop import fit

SPEC = FeatureSpec(buckets=(7, 11), num_dense=3)


def _log(n: int) -> TensorLog:
    g = torch.Generator().manual_seed(0)
    return TensorLog(cat=torch.stack([torch.randint(0, 7, (n,), generator=g), torch.randint(0, 11, (n,), generator=g)], 1),
                     dense=torch.randn(n, 3, generator=g), seq=torch.zeros(n, 0, 1, dtype=torch.long),
                     label=(torch.rand(n, generator=g) < 0.3).float(), sample_rate=torch.ones(n),
                     row_id=torch.arange(n) * 3 + 1)


def _model(seed: int, towers: str) -> Ranker:
    torch.manual_seed(seed)
    return Ranker(SPEC, "dcnv2", 4, 1, 8, towers=towers, tower_width=4)


def _member(name: str, seed: int, towers: str, uses_teacher: bool, ratio: float, keep: float, bs: int,
            epochs: int) -> Member:
    return Member(name=name, model=_model(seed, towers), objective=Objective(alpha=2.0 if uses_teacher else 0.0),
                  uses_teacher=uses_teacher, ratio=ratio, negative_keep=keep, seed=seed * 7, batch_size=bs,
                  epochs=epochs, lr=1e-2, embedding_lr=1e-2)


def test_shared_pass_equals_each_member_alone() -> None:
    data = _log(3000)
    zt = torch.randn(3000)
    zt[::5] = float("nan")  # rows without a teacher signal
    specs = [("a/raw", 1, "decoupled", False, 0.6, 1.0, 128, 2), ("a/distill", 1, "decoupled", True, 0.6, 1.0, 128, 2),
             ("b/distill", 2, "single", True, 0.4, 0.5, 96, 1)]
    group = StudentGroup([_member(*s) for s in specs], torch.device("cpu"))
    stream_batch = 250  # not a multiple of any member's batch size: members re-batch
    for epoch in range(group.epochs):
        for s in range(0, len(data), stream_batch):
            group.feed(data.take(slice(s, s + stream_batch)), zt[s:s + stream_batch], epoch)
        group.end_epoch(epoch)
    for spec, m in zip(specs, group.members):
        alone = _member(*spec)
        keep = torch.from_numpy(np.flatnonzero(model_sample_mask(
            data.row_id.numpy(), data.label.numpy(), alone.ratio, alone.negative_keep, alone.seed)))
        stats, _ = fit(alone.model, data.take(keep), epochs=alone.epochs, batch_size=alone.batch_size, lr=1e-2,
                       embedding_lr=1e-2, device=torch.device("cpu"), objective=alone.objective,
                       teacher_logits=zt[keep] if alone.uses_teacher else None)
        assert m.steps == stats.steps and m.rows == stats.rows
        for (k, a), b in zip(m.model.state_dict().items(), alone.model.state_dict().values()):
            assert torch.allclose(a, b, atol=1e-6), (m.name, k)
    assert group.members[1].signal_rows < group.members[1].rows  # NaN rows counted as missing


def test_group_state_round_trip() -> None:
    g1 = StudentGroup([_member("x/raw", 3, "decoupled", False, 1.0, 1.0, 64, 1)], torch.device("cpu"))
    data = _log(300)
    g1.feed(data, None, 0)
    g1.end_epoch(0)
    g2 = StudentGroup([_member("x/raw", 9, "decoupled", False, 1.0, 1.0, 64, 1)], torch.device("cpu"))
    g2.load(g1.state())
    for a, b in zip(g1.members[0].model.parameters(), g2.members[0].model.parameters()):
        assert torch.equal(a, b)
    assert g2.members[0].steps == g1.members[0].steps == 5


def test_a_stopping_members_state_loads_back_as_data(tmp_path) -> None:
    """Mid-run (validated, best weights kept for a later restore), a member's state goes
    through a weights_only checkpoint and the resumed member ends exactly as the original."""
    from recdistill.train.checkpoint import load_state

    data, valid = _valid_log(1200), _valid_log(600)

    def group() -> StudentGroup:
        m = _member("x/raw", 3, "decoupled", False, 1.0, 1.0, 64, 4)
        m.patience, m.lr, m.embedding_lr = 2, 0.05, 0.05
        m.__post_init__()
        return StudentGroup([m], torch.device("cpu"), _validator(valid))

    g1, g2 = group(), group()
    for epoch in range(2):
        g1.feed(data, None, epoch)
        g1.end_epoch(epoch)
    assert g1.members[0].early.best_state is not None
    torch.save(g1.state(), tmp_path / "state.pt")
    g2.load(load_state(tmp_path / "state.pt"))
    for g in (g1, g2):
        for epoch in range(2, 4):
            if g.active:
                g.feed(data, None, epoch)
                g.end_epoch(epoch)
    a, b = g1.members[0], g2.members[0]
    assert a.early.summary() == b.early.summary() and len(a.early.curve) >= 3
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


def _valid_log(n: int) -> TensorLog:
    # labels that depend on the features, so validation AUC moves as the models (over)fit
    g = torch.Generator().manual_seed(5)
    cat = torch.stack([torch.randint(0, 7, (n,), generator=g), torch.randint(0, 11, (n,), generator=g)], 1)
    dense = torch.randn(n, 3, generator=g)
    p = torch.sigmoid(dense[:, 0] + (cat[:, 0] % 3 == 0).float() - 1.5)
    return TensorLog(cat=cat, dense=dense, seq=torch.zeros(n, 0, 1, dtype=torch.long),
                     label=(torch.rand(n, generator=g) < p).float(), sample_rate=torch.ones(n),
                     row_id=torch.arange(n) * 3 + 2)


def _validator(valid: TensorLog):
    from recdistill.train.evaluate import validation_auc

    return lambda models: validation_auc(models, (valid.take(slice(s, s + 500)) for s in range(0, len(valid), 500)))


def test_members_validate_and_stop_on_their_own_as_each_would_alone() -> None:
    """Each member validates (per epoch or every k steps), stops after ``patience`` bad
    validations and restores its best weights, exactly as ``fit`` does alone; a stopped
    member takes no more rows while the others train on."""
    data, valid = _valid_log(4000), _valid_log(1500)
    zt = torch.randn(4000)
    validate = _validator(valid)
    # name, seed, towers, distilled, ratio, keep, batch, epochs, eval_every, patience
    specs = [("a/raw", 1, "decoupled", False, 0.6, 1.0, 64, 8, 0, 1),
             ("a/distill", 1, "decoupled", True, 0.6, 1.0, 64, 8, 7, 2),
             ("b/raw", 2, "single", False, 0.4, 1.0, 96, 3, 0, 0)]

    def member(s):
        m = _member(*s[:8])
        m.eval_every, m.patience = s[8], s[9]
        m.__post_init__()
        m.lr = m.embedding_lr = 0.05  # fast, so it overfits within a few epochs
        return m

    group = StudentGroup([member(s) for s in specs], torch.device("cpu"), validate)
    for epoch in range(group.epochs):
        if not group.active:
            break
        for s in range(0, len(data), 250):
            group.feed(data.take(slice(s, s + 250)), zt[s:s + 250], epoch)
        group.end_epoch(epoch)
    assert not group.active
    for spec, m in zip(specs, group.members):
        alone = member(spec)
        keep = torch.from_numpy(np.flatnonzero(model_sample_mask(
            data.row_id.numpy(), data.label.numpy(), alone.ratio, alone.negative_keep, alone.seed)))
        stats, _ = fit(alone.model, data.take(keep), epochs=alone.epochs, batch_size=alone.batch_size, lr=0.05,
                       embedding_lr=0.05, device=torch.device("cpu"), objective=alone.objective,
                       teacher_logits=zt[keep] if alone.uses_teacher else None, validate=validate,
                       eval_every=alone.eval_every, patience=alone.patience)
        assert m.steps == stats.steps and m.rows == stats.rows and m.sample_rows == len(keep), m.name
        assert m.early.summary() == stats.early.summary(), m.name
        for (k, a), b in zip(m.model.state_dict().items(), alone.model.state_dict().values()):
            assert torch.allclose(a, b, atol=1e-6), (m.name, k)
        curve = m.early.summary()["valid_curve"]
        if m.patience:  # it ends with its best weights
            assert validate({"m": m.model})["m"] == pytest.approx(max(c["auc"] for c in curve), abs=1e-9)
    a_raw, a_distill, b_raw = (m.early.summary() for m in group.members)
    assert a_raw["stopped_epoch"] < 8 and len(a_raw["valid_curve"]) == a_raw["stopped_epoch"]
    assert a_raw["best_epoch"] == a_raw["stopped_epoch"] - 1  # patience 1: one bad epoch stops it
    assert all(c["step"] % 7 == 0 for c in a_distill["valid_curve"][:-1])  # every 7 steps (and after the last)
    assert a_distill["stopped_epoch"] < 8
    assert b_raw["stopped_epoch"] == 3 and len(b_raw["valid_curve"]) == 3  # no patience: all its epochs


def test_a_recording_teacher_finishes_its_first_epoch_before_it_stops() -> None:
    data, valid = _valid_log(2000), _valid_log(800)
    torch.manual_seed(0)
    teacher = Ranker(SPEC, "dcnv2", 4, 1, 8)
    seen = []
    stats, recorded = fit(teacher, data, epochs=4, batch_size=100, lr=0.05, embedding_lr=0.05,
                          device=torch.device("cpu"), record=True, validate=_validator(valid), eval_every=2,
                          patience=1,
                          on_pass_end=lambda m: seen.append({k: v.clone() for k, v in m.state_dict().items()}))
    s = stats.early.summary()
    # patience 1 at every 2nd step is exhausted long before the pass ends, yet the pass completes
    assert any(not (c["auc"] > max([d["auc"] for d in s["valid_curve"][:i]], default=-1))
               for i, c in enumerate(s["valid_curve"]) if c["epoch"] == 1)
    assert stats.pass_steps == 20 and stats.steps >= 20 and not torch.isnan(recorded).any()
    assert s["stopped_epoch"] >= 1 and stats.early.final_step == s["best_step"]
    # the recorded teacher (what on_pass_end saw) is the teacher after exactly one epoch
    torch.manual_seed(0)
    one = Ranker(SPEC, "dcnv2", 4, 1, 8)
    fit(one, data, epochs=1, batch_size=100, lr=0.05, embedding_lr=0.05, device=torch.device("cpu"), record=True)
    assert len(seen) == 1
    for k, v in one.state_dict().items():
        assert torch.allclose(seen[0][k], v, atol=1e-6), k


def test_unlabelled_rows_go_in_the_same_batches_with_their_task_loss_masked() -> None:
    """A distilled member with unlabelled.share trains, in the shared pass, exactly as ``fit``
    on its sample plus the picked rows (those with a signal) in log order with the label
    mask; the raw member of the same student is untouched by the option."""
    from recdistill.data.sampling import unlabelled_row_mask

    data = _log(3000)
    zt = torch.randn(3000)
    zt[::7] = float("nan")
    share = 0.5

    def member(kind: str) -> Member:
        m = _member(f"a/{kind}", 4, "decoupled", kind == "distill", 0.3, 0.5, 100, 2)
        if kind == "distill":
            m.objective = Objective(alpha=2.0, unlabelled_alpha=5.0)
            m.unlabelled_share = share
        return m

    group = StudentGroup([member("raw"), member("distill")], torch.device("cpu"))
    for epoch in range(group.epochs):
        for s in range(0, len(data), 250):
            group.feed(data.take(slice(s, s + 250)), zt[s:s + 250], epoch)
        group.end_epoch(epoch)
    ids = data.row_id.numpy()
    keep = model_sample_mask(ids, data.label.numpy(), 0.3, 0.5, 28)
    picked = unlabelled_row_mask(ids, keep, share, 28)
    has = ~torch.isnan(zt).numpy()
    rows = np.flatnonzero(keep | (picked & has))
    alone = member("distill")
    stats, _ = fit(alone.model, data.take(torch.from_numpy(rows)), epochs=2, batch_size=100, lr=1e-2,
                   embedding_lr=1e-2, device=torch.device("cpu"), objective=alone.objective,
                   teacher_logits=zt[rows], label_mask=torch.from_numpy(keep[rows]))
    raw, dist = group.members
    assert dist.steps == stats.steps and dist.rows == stats.rows
    for (k, a), b in zip(dist.model.state_dict().items(), alone.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k
    assert dist.sample_rows == raw.sample_rows == int(keep.sum())
    assert dist.unlabelled_rows == int((picked & has).sum()) > 0
    assert dist.unlabelled_without_signal == int((picked & ~has).sum()) > 0
    assert dist.unlabelled_trained == 2 * dist.unlabelled_rows
    assert raw.rows == 2 * raw.sample_rows and raw.unlabelled_rows == 0
    # the picked rows lie outside the labelled sample, about ``share`` of them
    assert not (picked & keep).any() and abs(picked.sum() / (~keep).sum() - share) < 0.05


def test_members_read_their_own_teachers_channel() -> None:
    """Packed seeds: each distilled member learns from its own channel of the stream's
    teacher logits, exactly as alone on that channel."""
    data = _log(2000)
    g = torch.Generator().manual_seed(3)
    z = {"teacher_logit@seed1": torch.randn(2000, generator=g), "teacher_logit@seed2": torch.randn(2000, generator=g)}
    spec = ("a/distill", 1, "single", True, 0.7, 1.0, 128, 1)
    packed = [_member(*spec), _member(*spec)]
    packed[0].channel, packed[1].channel = "teacher_logit@seed1", "teacher_logit@seed2"
    packed[0].name, packed[1].name = "seed-1/a/distill", "seed-2/a/distill"
    alone = [_member(*spec), _member(*spec)]
    groups = [StudentGroup(packed, torch.device("cpu"))] + [StudentGroup([m], torch.device("cpu")) for m in alone]
    feeds = [z, z["teacher_logit@seed1"], z["teacher_logit@seed2"]]
    for group, zt in zip(groups, feeds):
        for s in range(0, len(data), 250):
            group.feed(data.take(slice(s, s + 250)),
                       {k: v[s:s + 250] for k, v in zt.items()} if isinstance(zt, dict) else zt[s:s + 250], 0)
        group.end_epoch(0)
    for m, a in zip(packed, alone):
        for (k, x), y in zip(m.model.state_dict().items(), a.model.state_dict().values()):
            assert torch.equal(x, y), (m.name, k)
    # the two channels differ, so the two members do too: neither read the other's
    assert any(not torch.equal(x, y) for x, y in zip(packed[0].model.parameters(), packed[1].model.parameters()))


def test_step_timer_adds_the_steps_seconds_and_hands_them_over_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import recdistill.train.step_timer as step_timer

    ticks = iter([10.0, 10.5, 12.0, 12.25])  # two steps of 0.5 and 0.25 s, 1.5 s apart
    monkeypatch.setattr(step_timer, "perf_counter", lambda: next(ticks))
    clock, cpu = step_timer.StepTimer(), torch.device("cpu")
    for _ in range(2):
        clock.start(cpu)
        clock.stop(cpu)
    assert clock.take() == 0.75 and clock.take() == 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_step_timer_on_a_gpu_reads_its_events_when_asked() -> None:
    from recdistill.train.step_timer import StepTimer

    clock, gpu = StepTimer(), torch.device("cuda")
    x = torch.randn(2048, 2048, device=gpu)
    for _ in range(3):
        clock.start(gpu)
        x = (x @ x).tanh()
        clock.stop(gpu)
    assert clock.take() > 0 and clock.take() == 0.0
