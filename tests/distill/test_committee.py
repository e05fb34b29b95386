"""DiverseDistill's question-answer module, its losses and the committee members of a
student group (plain PyTorch, no Ray). The module and the losses are pinned against naive
per-row references written straight from their formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recdistill.config import ConfigError, load_config
from recdistill.data.expert_slices import by_hash, pack
from recdistill.data.tensors import TensorLog
from recdistill.distill.committee import (QuestionAnswer, TeacherStates, alignment_loss, combined_logit, gate_loss,
                                          importance_weights)
from recdistill.distill.objective import Objective
from recdistill.models import FeatureSpec, Ranker
from recdistill.train.committee import Committee, passes_summary
from recdistill.train.group import Member, StudentGroup

SPEC = FeatureSpec(buckets=(7, 11), num_dense=3)


def _naive_weights(logits: torch.Tensor, present: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    w = torch.zeros_like(logits)
    kept = torch.zeros_like(present)
    for i in range(logits.shape[0]):
        on = [k for k in range(logits.shape[1]) if present[i, k]]
        if not on:
            continue
        e = {k: math.exp(float(logits[i, k])) for k in on}
        soft = {k: e[k] / sum(e.values()) for k in on}
        best = max(on, key=lambda k: soft[k])
        keep = [k for k in on if threshold <= 0 or soft[k] >= threshold / len(on) or k == best]
        for k in keep:
            kept[i, k] = True
            w[i, k] = e[k] / sum(e[j] for j in keep)
    return w, kept


@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.9])
def test_importance_weights_match_the_naive_reference(threshold: float) -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(64, 4, generator=g) * 2
    present = torch.rand(64, 4, generator=g) < 0.8
    present[0] = False  # a row with no teacher
    w, kept = importance_weights(logits, present, threshold)
    rw, rkept = _naive_weights(logits, present, threshold)
    assert torch.equal(kept, rkept)
    assert torch.allclose(w, rw, atol=1e-6)
    assert torch.all(w[0] == 0)
    if threshold > 0.5:
        assert (kept.sum() < present.sum()), "a high threshold drops teachers"


def test_losses_match_the_naive_reference() -> None:
    g = torch.Generator().manual_seed(2)
    n, k, d = 16, 3, 5
    h, answers = torch.randn(n, d, generator=g), torch.randn(n, k, d, generator=g)
    weights = torch.rand(n, k, generator=g)
    answered = torch.rand(n, k, generator=g) < 0.7
    logits = torch.randn(n, k, generator=g)
    logits[1, 0] = float("nan")
    weights[1, 0] = 0.0
    y = (torch.rand(n, generator=g) < 0.4).float()
    align = sum(float(weights[i, j]) * (1 - float(torch.dot(h[i], answers[i, j]) / (h[i].norm() * answers[i, j].norm())))
                for i in range(n) for j in range(k) if answered[i, j]) / n
    parts = [(j, answered[:, j].nonzero().squeeze(1), answers[answered[:, j], j]) for j in range(k)]
    assert alignment_loss(h, weights, parts).item() == pytest.approx(align, rel=1e-5)
    zc = [sum(float(weights[i, j]) * (0.0 if math.isnan(float(logits[i, j])) else float(logits[i, j]))
              for j in range(k)) for i in range(n)]
    assert torch.allclose(combined_logit(weights, logits), torch.tensor(zc), atol=1e-6)
    rows = torch.arange(n) % 3 != 0
    bce = [-(float(y[i]) * math.log(1 / (1 + math.exp(-zc[i]))) + (1 - float(y[i])) * math.log(1 - 1 / (1 + math.exp(-zc[i]))))
           for i in range(n) if rows[i]]
    assert gate_loss(weights, logits, y, rows).item() == pytest.approx(sum(bce) / len(bce), rel=1e-5)


def test_answer_is_attention_over_the_teachers_states() -> None:
    torch.manual_seed(3)
    qa = QuestionAnswer(6, [TeacherStates(), TeacherStates(4, 9)], query_dim=5)
    h, tokens, hidden = torch.randn(8, 6), torch.randn(8, 3, 4), torch.randn(8, 9)
    out = qa.answer(1, h, tokens, hidden)
    for i in range(8):
        states = torch.cat([tokens[i], qa.hidden_in[1](hidden[i]).unsqueeze(0)], 0)  # (4, 4)
        q = qa.query[1](h[i])
        att = F.softmax(torch.stack([torch.dot(qa.key[1](s), q) for s in states]) / math.sqrt(5), 0)
        want = qa.value[1](sum(a * s for a, s in zip(att, states)))
        assert torch.allclose(out[i], want, atol=1e-5)
    with pytest.raises(ValueError, match="no states"):
        qa.answer(0, h, tokens, hidden)
    assert torch.all(qa.importance(h) == 0), "every teacher weighs the same at the start"


def _log(n: int) -> TensorLog:
    g = torch.Generator().manual_seed(0)
    return TensorLog(cat=torch.stack([torch.randint(0, 7, (n,), generator=g), torch.randint(0, 11, (n,), generator=g)], 1),
                     dense=torch.randn(n, 3, generator=g), seq=torch.zeros(n, 0, 1, dtype=torch.long),
                     label=(torch.rand(n, generator=g) < 0.3).float(), sample_rate=torch.ones(n),
                     row_id=torch.arange(n) * 3 + 1, part=torch.from_numpy(by_hash(np.arange(n), 2)).short())


def _model(seed: int) -> Ranker:
    torch.manual_seed(seed)
    return Ranker(SPEC, "dcnv2", 4, 1, 8)


def _member(name: str, source: str = "teacher", expert: int = -1, threshold: float = 0.0, part: int = -1,
            experts: list[Ranker] | None = None) -> Member:
    m = Member(name=name, model=_model(1), objective=Objective(alpha=0.0 if part >= 0 else 2.0),
               uses_teacher=part < 0, ratio=1.0, negative_keep=1.0, seed=5, batch_size=100, epochs=2, lr=1e-2,
               embedding_lr=1e-2, part=part, source=source, expert=expert, threshold=threshold, align_weight=1.0)
    if source in ("committee", "filtered"):
        from recdistill.train.committee import committee_module

        m.qa = committee_module(load_config(None, []), m.model, experts or [])
    return m


def _run(group: StudentGroup, data: TensorLog, zt: torch.Tensor | None) -> None:
    for epoch in range(group.epochs):
        for s in range(0, len(data), 250):
            group.feed(data.take(slice(s, s + 250)), None if zt is None else zt[s:s + 250], epoch)
        group.end_epoch(epoch)


def test_experts_train_on_their_slices_and_committee_members_count_their_passes() -> None:
    data = _log(2000)
    experts = StudentGroup([_member(f"expert{k}/raw", part=k) for k in range(2)], torch.device("cpu"))
    _run(experts, data, None)
    for k, m in enumerate(experts.members):
        assert m.sample_rows == int((data.part == k).sum()), "each expert trains on its slice only"
    frozen = [m.model for m in experts.members]
    zt = torch.randn(2000)
    zt[::4] = float("nan")
    members = [_member("s/distill"), _member("s-expert1/distill", "expert", 1), _member("s-average/distill", "average"),
               _member("s-committee/distill", "committee", experts=frozen),
               _member("s-filtered/distill", "filtered", threshold=0.9, experts=frozen)]
    before = {n: p.clone() for n, p in frozen[0].state_dict().items()}
    group = StudentGroup(members, torch.device("cpu"), committee=Committee(frozen, torch.device("cpu")))
    _run(group, data, zt)
    for n, p in frozen[0].state_dict().items():
        assert torch.equal(p, before[n]), "the experts are frozen"
    rows = 2 * 2000
    by = {m.name.split("/")[0]: passes_summary(m) for m in group.members[1:]}
    assert by["s-expert1"]["expert_passes"] == rows and by["s-average"]["expert_passes"] == 2 * rows
    assert by["s-average"]["signal_reads"] == int((~torch.isnan(zt)).sum()) * 2
    assert by["s-committee"]["expert_passes"] == by["s-committee"]["expert_passes_possible"] == 2 * rows
    f = by["s-filtered"]
    assert f["expert_passes_possible"] == 2 * rows and 0 < f["expert_passes"] < 2 * rows, f
    assert f["teacher_uses_saved"] > 0
    plain = group.members[0].model
    for m in group.members[3:]:
        assert m.model.num_params() == plain.num_params(), "the module is not part of the student"
        assert set(m.model.state_dict()) == set(plain.state_dict())
        assert all(torch.isfinite(p).all() for p in m.qa.parameters())
    state = group.state()
    again = StudentGroup([_member(m.name, m.source, m.expert, m.threshold, experts=frozen) for m in members],
                         torch.device("cpu"), committee=Committee(frozen, torch.device("cpu")))
    again.load(state)
    for a, b in zip(again.members[3:], group.members[3:]):
        assert all(torch.equal(x, y) for x, y in zip(a.qa.state_dict().values(), b.qa.state_dict().values()))
        assert a.passes == b.passes and a.reads == b.reads


def test_a_committee_member_needs_the_experts() -> None:
    with pytest.raises(ValueError, match="needs the committee's experts"):
        StudentGroup([_member("s-average/distill", "average")], torch.device("cpu"))


def test_pack_balances_rows_largest_first() -> None:
    counts = np.array([50, 40, 30, 20, 10, 5])
    groups = pack(counts, 2)
    assert sorted(np.bincount(groups, weights=counts).tolist()) == [75.0, 80.0]


def test_config_expands_the_baselines_once_and_names_bad_sources() -> None:
    cfg = load_config(None, ["committee.experts=2", "students.0.name=s"])
    names = [s.name for s in cfg.students]
    assert names == ["s", "s-expert0", "s-expert1", "s-average", "s-committee", "s-filtered"]
    assert {s.seed_name for s in cfg.students[1:]} == {"s"}
    assert ["s-committee", "s-average"] in cfg.run.pairs
    from recdistill.config import config_from_dict, to_dict

    again = config_from_dict(to_dict(cfg))  # a resolved config is not expanded twice
    assert [s.name for s in again.students] == names and again.run.pairs == cfg.run.pairs
    with pytest.raises(ConfigError, match=r"students\.0\.distill_from='expert:2'"):
        load_config(None, ["committee.experts=2", "students.0.distill_from=expert:2"])
    with pytest.raises(ConfigError, match="need a committee"):
        load_config(None, ["students.0.distill_from=average"])
    with pytest.raises(ConfigError, match="slice_by"):
        load_config(None, ["committee.experts=2", "committee.slice_by=field"])
    with pytest.raises(ConfigError, match="local engine"):
        load_config(None, ["committee.experts=2", "run.engine=local"])
    with pytest.raises(ConfigError, match="teacher.negative_keep_rate=1"):
        load_config(None, ["committee.experts=2", "teacher.negative_keep_rate=0.5"])
    with pytest.raises(ConfigError, match="not built yet"):
        load_config(None, ["committee.experts=2", "teacher.representations=true",
                           "students.0.representations.use=[user]"])


def test_a_sweep_trial_of_a_committee_run_carries_its_variants() -> None:
    from recdistill.sweep.runner import trial_metrics

    def student(name: str, eta: float, committee: dict | None = None) -> dict:
        return {"name": name, "auc_distill": 0.7, "auc_raw": 0.6, "eta": eta, "params": 10,
                **({"committee": committee} if committee else {})}

    results = {"teacher": {"auc": 0.75}, "seconds": 1.0, "platform": {},
               "students": [student("s", 0.8), student("s-average", 0.2, {"expert_passes_saved": 0.0}),
                            student("s-committee", 0.7, {"expert_passes_saved": 0.0}),
                            student("s-filtered", 0.75, {"expert_passes_saved": 0.9})]}
    m = trial_metrics(results)
    assert (m["eta"], m["eta_average"], m["eta_committee"], m["eta_filtered"]) == (0.8, 0.2, 0.7, 0.75)
    assert m["filtered_passes_saved"] == 0.9
    assert "eta_committee" not in trial_metrics({**results, "students": results["students"][:1]})


def test_the_big_teacher_answers_from_its_stored_representations() -> None:
    """With teacher.representations, the committee's big teacher shows its user, item and
    history-mean values and their staleness (the joined teacher_rep columns) as its states."""
    from dataclasses import replace

    from recdistill.train.committee import committee_module, teacher_states

    cfg = load_config(None, ["committee.experts=2", "teacher.representations=true", "teacher.embed_dim=4"])
    data = _log(512)
    rep = torch.randn(512, 4 * 4 + 5)
    tokens, hidden = teacher_states(rep, 4)
    assert torch.equal(tokens[:, 1], rep[:, 4:8]) and torch.equal(hidden, rep[:, 16:21])
    frozen = [_model(7), _model(8)]
    m = _member("s-committee/distill", "committee", experts=frozen)
    m.qa = committee_module(cfg, m.model, frozen)
    assert m.qa.teachers[0].token_dim == 4 and m.qa.teachers[0].hidden_dim == 5
    m.opts = [torch.optim.SGD(list(m.model.parameters()) + list(m.qa.parameters()), lr=0.1)]
    before = m.qa.value[0].weight.clone()
    Committee(frozen, torch.device("cpu")).step(m, replace(data, rep=rep), torch.randn(512), None)
    assert not torch.equal(m.qa.value[0].weight, before), "the big teacher's answer is trained"
    with pytest.raises(ValueError, match="no teacher_rep column"):
        Committee(frozen, torch.device("cpu")).step(m, data, torch.randn(512), None)


def test_a_committee_config_shrinks_and_overrides_through_its_own_students() -> None:
    from recdistill.config import config_from_dict, unexpanded
    from recdistill.smoke import smoke_test

    cfg = load_config(None, ["committee.experts=2", "students.0.name=s", "run.pairs=[[s, s-average]]"])
    raw = unexpanded(cfg)
    assert [d["name"] for d in raw["students"]] == ["s"] and raw["run"]["pairs"] == [["s", "s-average"]]
    assert config_from_dict(raw) == cfg  # loading it expands it again
    shrunk = smoke_test(cfg)
    assert [s.name for s in shrunk.students] == [s.name for s in cfg.students]
    assert {(s.embed_dim, s.width, s.epochs) for s in shrunk.students} == {(4, 16, 1)}  # every variant shrunk
