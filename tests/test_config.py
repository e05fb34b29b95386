from pathlib import Path

import pytest
import yaml

from recdistill.config import ConfigError, ExperimentConfig, dump_config, load_config


def test_defaults_are_valid_and_round_trip(tmp_path: Path) -> None:
    cfg = load_config()
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.run.out_dir == Path("runs") / "demo"
    p = tmp_path / "c.yaml"
    p.write_text(dump_config(cfg))
    assert load_config(p) == cfg


def test_yaml_then_overrides(tmp_path: Path) -> None:
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump({
        "data": {"rows": 5000, "synthetic": {"drift": {"shift_days": [2]}}},
        "students": [{"name": "small", "width": 32}, {"name": "big", "width": 256}],
        "run": {"name": "exp1"},
    }))
    cfg = load_config(p, ["students.0.alpha=2.0", "run.dir=/tmp/x", "students.2.name=third",
                          "stream.teacher_update_interval=null", "data.splits=[0.7, 0.2, 0.1]"])
    assert cfg.data.rows == 5000
    assert cfg.data.synthetic.drift.shift_days == [2]
    assert [s.name for s in cfg.students] == ["small", "big", "third"]
    assert cfg.students[0].alpha == 2.0 and cfg.students[0].width == 32
    assert cfg.students[2].width == 64  # appended student takes the defaults
    assert cfg.run.out_dir == Path("/tmp/x")
    assert cfg.stream.teacher_update_interval is None
    assert cfg.data.splits == [0.7, 0.2, 0.1]


@pytest.mark.parametrize("override, words", [
    ("data.rowz=1", ["unknown key 'data.rowz'", "rows", "synthetic"]),
    ("data.rows=-5", ["data.rows=-5", ">= 1"]),
    ("data.source=hdfs", ["data.source='hdfs'", "'criteo'", "'synthetic'"]),
    ("students.0.alpha=lots", ["students.0.alpha='lots'", "number"]),
    ("students.3.alpha=1", ["index 3 out of range", "students has 1"]),
    ("data.splits=[0.5, 0.5]", ["data.splits", "sum"]),
    ("data.synthetic.drift.shift_days=[99]", ["shift_days", "99", "0..6"]),
    ("distill.debias=maybe", ["distill.debias='maybe'", "true or false"]),
    ("rows=3", ["unknown key 'rows'"]),
    ("data.rows", ["KEY=VALUE"]),
])
def test_bad_values_name_key_value_and_allowed(override: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_unknown_key_in_file_is_rejected(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("teacher:\n  widht: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'teacher.widht'.*width"):
        load_config(p)


def test_duplicate_student_names_rejected() -> None:
    with pytest.raises(ConfigError, match="unique"):
        load_config(None, ["students.1.name=student"])


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "list.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)


def test_real_source_requires_path() -> None:
    with pytest.raises(ConfigError, match="data.path is required"):
        load_config(None, ["data.source=criteo"])


def test_yaml_booleans_map_back_to_the_option_meant() -> None:
    # YAML 1.1 reads a bare `off` as False; the option is the string "off"
    assert load_config(None, ["stream.replay=off"]).stream.replay == "off"
    with pytest.raises(ConfigError, match="stream.replay"):
        load_config(None, ["stream.replay=yes"])


def test_exponent_without_a_dot_is_a_number() -> None:
    # YAML 1.1 (PyYAML) reads 1e-3 as the string "1e-3"; a float key takes it as the number it means
    cfg = load_config(None, ["teacher.lr=1e-3", "students.0.embedding_lr=2E-4", "distill.temperature=1e0"])
    assert (cfg.teacher.lr, cfg.students[0].embedding_lr, cfg.distill.temperature) == (0.001, 0.0002, 1.0)
    with pytest.raises(ConfigError, match="teacher.lr='fast'"):
        load_config(None, ["teacher.lr=fast"])


def test_overrides_may_follow_flags_on_the_command_line() -> None:
    # scripts/demo.sh passes its arguments after --overwrite: `run CONFIG --overwrite k=v`
    from recdistill.cli import parse_args

    a = parse_args(["run", "jobs/configs/demo.yaml", "--overwrite", "students.0.alpha=2", "run.seed=1"])
    assert a.overwrite and a.config == "jobs/configs/demo.yaml" and a.overrides == ["students.0.alpha=2", "run.seed=1"]
    b = parse_args(["run", "jobs/configs/demo.yaml", "run.seed=1", "--smoke-test", "run.name=x"])
    assert b.smoke_test and b.overrides == ["run.seed=1", "run.name=x"]
    with pytest.raises(SystemExit):
        parse_args(["run", "jobs/configs/demo.yaml", "--overwrite", "--no-such-flag"])


def test_gpu_share_per_worker_lets_an_online_runs_two_workers_share_one_gpu() -> None:
    from recdistill.engine.trainer import worker_gpus

    auto = load_config(None, [])
    assert auto.platform.gpus_per_worker == "auto"
    assert worker_gpus(auto, 1, cluster_gpus=1) == 1.0  # a batch run's workers: a whole GPU each
    # an online run's teacher and students run at once and wait on each other: on one GPU
    # they share it, else the students would wait for the teacher's end and time out
    assert worker_gpus(auto, 2, cluster_gpus=1) == 0.5
    assert worker_gpus(auto, 2, cluster_gpus=2) == 1.0
    assert worker_gpus(load_config(None, ["platform.gpus_per_worker=0.25"]), 2, cluster_gpus=8) == 0.25
    with pytest.raises(ConfigError, match="platform.gpus_per_worker"):
        load_config(None, ["platform.gpus_per_worker=1.5"])


def test_a_ddp_run_takes_a_whole_gpu_per_worker_whatever_the_share(tmp_path: Path) -> None:
    """Ray may place two ranks of fractional shares on one GPU, where NCCL refuses to join
    them: a share applies to one-worker runs; the teacher's DDP takes whole GPUs."""
    from recdistill.engine.follow import room_refusal
    from recdistill.engine.trainer import ray_trainer, worker_gpus

    half = load_config(None, ["platform.use_gpu=yes", "platform.gpus_per_worker=0.5"])
    asked = {w: ray_trainer(lambda c: None, "t", half, {}, {}, w, tmp_path).scaling_config for w in (1, 2)}
    assert asked[1].resources_per_worker["GPU"] == 0.5
    assert asked[2].num_workers == 2 and asked[2].resources_per_worker["GPU"] == 1.0
    assert worker_gpus(half, cluster_gpus=4, workers=2) == 1.0
    # two teacher ranks and the students' group beside them: 2 × 1 + 0.5 GPUs
    two = load_config(None, ["platform.gpus_per_worker=0.5", "platform.teacher_workers=2",
                             "platform.cpus_per_worker=0.5"])
    assert "at 1 GPU and 1 student group(s) at 0.5 GPU each need 2.5 GPUs" in room_refusal(two, 8, 2)
    assert room_refusal(two, 8, 3) is None


def test_unlabelled_rows_are_a_student_option_outside_the_raw_key() -> None:
    from recdistill.train.keys import raw_student_key
    from recdistill.train.plan import student_objective

    base = load_config(None, [])
    cfg = load_config(None, ["students.0.unlabelled.share=1.0", "students.0.unlabelled.alpha=10"])
    assert cfg.students[0].unlabelled.share == 1.0 and cfg.students[0].unlabelled.alpha == 10.0
    # a raw student never sees those rows: its key (and a stored raw result) is shared
    assert raw_student_key(cfg, 0) == raw_student_key(base, 0)
    assert student_objective(cfg, 0, True).unlabelled_alpha == 10.0
    assert student_objective(cfg, 0, False).unlabelled_alpha is None
    assert student_objective(base, 0, True).unlabelled_alpha is None
    own = load_config(None, ["students.0.unlabelled.share=0.5", "students.0.alpha=3"])
    assert student_objective(own, 0, True).unlabelled_alpha == 3.0  # null: the student's α
    with pytest.raises(ConfigError, match="share"):
        load_config(None, ["students.0.unlabelled.share=1.5"])
    with pytest.raises(ConfigError, match="transfer.augment"):
        load_config(None, ["students.0.unlabelled.share=0.5", "transfer.enabled=true"])
