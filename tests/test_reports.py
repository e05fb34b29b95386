"""The standalone HTML report and the JSONL tracker (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

from recdistill.config import TrackingConfig
from recdistill.report.render import markdown_to_html
from recdistill.tracking import make_trackers, wandb_mode


def test_markdown_to_html_tables_code_and_embedded_images(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.plot([0, 1], [0, 1])
    plt.savefig(tmp_path / "p.png")
    plt.close()
    md = "# Title\n\nText with `code` & <b>.\n\n![plot](p.png)\n\n| a | b |\n| --- | ---: |\n| 1 | 2 |\n\n```\nx < y\n```\n"
    html = markdown_to_html(md, tmp_path, "t")
    assert "<h1>Title</h1>" in html and "<code>code</code>" in html and "&amp; &lt;b&gt;" in html
    assert "<th>a</th>" in html and "<td>2</td>" in html and "---" not in html
    assert "data:image/png;base64," in html and "<pre>x &lt; y</pre>" in html


def test_jsonl_tracker_and_wandb_mode(tmp_path: Path, monkeypatch) -> None:
    t = make_trackers(TrackingConfig(wandb="disabled"), tmp_path, "x", {"a": 1}, stdout=False)
    t.log({"auc": 0.7}, step=1)
    t.summary({"auc": 0.71})
    t.finish()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["config", "metrics", "summary"] and rows[1]["step"] == 1
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))  # no login entry
    assert wandb_mode("auto") == "offline" and wandb_mode("disabled") is None
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode("auto") == "online"


def test_wandb_auto_follows_wandb_mode_and_a_login_entry(tmp_path: Path, monkeypatch) -> None:
    import pytest

    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    netrc = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(netrc))
    assert wandb_mode("auto") == "offline"
    # what `wandb login` writes: a key for the W&B host in the netrc file
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    assert wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.com")  # a self-hosted server: its own entry
    assert wandb_mode("auto") == "offline"
    monkeypatch.delenv("WANDB_BASE_URL")
    # WANDB_MODE, wandb's own switch, wins over a key
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    for env, mode in (("offline", "offline"), ("dryrun", "offline"), ("disabled", None), ("online", "online")):
        monkeypatch.setenv("WANDB_MODE", env)
        assert wandb_mode("auto") == mode, env
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ValueError, match="WANDB_MODE='sometimes'"):
        wandb_mode("auto")
    assert wandb_mode("offline") == "offline"  # an explicit setting is not overridden


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24  # magic bytes: enough for the check, not a drawable image


def test_html_embeds_only_the_runs_own_pngs_and_escapes_names(tmp_path: Path) -> None:
    """A student's name is config text: it must not pull a file into report.html."""
    import base64

    from recdistill.config import dump_config, load_config
    from recdistill.cli import report_dir
    from recdistill.report.experiment import write_results

    run, outside = tmp_path / "run", tmp_path / "outside"
    run.mkdir()
    outside.mkdir()
    (outside / ".netrc").write_bytes(b"machine x password hunter2")
    (outside / "evil.png").write_bytes(PNG + b"outside the run")
    (run / "link.png").symlink_to(outside / "evil.png")  # a link inside the run, pointing out
    (run / "fake.png").write_bytes(b"machine x password hunter2")  # .png, not a PNG
    (run / "plot.png").write_bytes(PNG + b"the run's own plot")
    names = [f"![a]({outside / '.netrc'})", "![b](../outside/evil.png)", "![c](link.png)", "![d](fake.png)",
             "<script>alert('x')</script>", "![plot](plot.png)"]
    cfg = load_config(None, [f"run.dir={run}", "run.name=<b>n</b>",
                             *(f"students.{i}.name={n!r}" for i, n in enumerate(names))])
    results = {"teacher": {"arch": "dnn", "params": 1, "auc": 0.7, "logloss": 0.5, "calibration": 0.0},
               "students": [{"name": n, "arch": "dnn", "towers": "single", "params": 1, "auc_distill": 0.6,
                             "logloss_distill": 0.5, "calibration_distill": 0.0, "auc_raw": 0.6, "eta": 0.0}
                            for n in names], "seconds": 1.0}
    (run / "config.yaml").write_text(dump_config(cfg))
    write_results(cfg, results, log=lambda _: None)
    page = (run / "report.html").read_text()
    # the run's own PNGs only: the plot placed in it and the raw → distilled plot it drew
    assert page.count("data:image/png;base64,") == 2 and base64.b64encode(PNG + b"the run's own plot").decode() in page
    assert base64.b64encode((run / "raw_to_distilled.png").read_bytes()).decode() in page
    for secret in (b"hunter2", b"outside the run", b"machine x password hunter2", PNG + b"outside the run"):
        assert base64.b64encode(secret).decode()[:-4] not in page and secret.decode(errors="ignore") not in page
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<b>n</b>" not in page and "&lt;b&gt;n&lt;/b&gt;" in page
    assert html_text_of(page).count("![") == 4  # the refused references stay as text

    # `recdistill report DIR` rewrites the reports of a finished run in place
    (run / "report.md").write_text("stale")
    report_dir(run, log=lambda _: None)
    assert "stale" not in (run / "report.md").read_text() and (run / "report.html").read_text() == page


def html_text_of(page: str) -> str:
    import re

    return re.sub(r"<[^>]+>", "", page)


def test_gauc_column_only_where_it_was_computed() -> None:
    from recdistill.config import load_config
    from recdistill.report.experiment import report_markdown

    teacher = {"arch": "dcnv2", "params": 10, "auc": 0.7, "logloss": 0.5, "calibration": 0.0}
    student = {"name": "s", "arch": "dnn", "towers": "single", "params": 5, "auc_raw": 0.6, "auc_distill": 0.65,
               "logloss_distill": 0.55, "calibration_distill": 0.0, "eta": 0.5}
    cfg = load_config(None, [])
    without = report_markdown(cfg, {"teacher": teacher, "students": [student]})
    assert "GAUC" not in without and "nan" not in without
    with_gauc = report_markdown(cfg, {"teacher": {**teacher, "gauc": 0.61},
                                      "students": [{**student, "gauc_distill": 0.58}]})
    rows = [line for line in with_gauc.splitlines() if line.startswith("|")]
    assert "GAUC (user)" in rows[0] and "| 0.6100 |" in rows[2] and "| 0.5800 |" in rows[3]
    assert len({line.count("|") for line in rows}) == 1  # every row has every column


def test_batch_report_draws_gains_and_learning_curves(tmp_path: Path) -> None:
    from recdistill.config import load_config
    from recdistill.report.experiment import write_results

    curve = [{"epoch": 1, "step": 10, "auc": 0.60}, {"epoch": 2, "step": 20, "auc": 0.62}]
    student = {"name": "s", "arch": "dnn", "towers": "single", "params": 5, "auc_raw": 0.6, "auc_distill": 0.65,
               "logloss_raw": 0.5, "logloss_distill": 0.49, "calibration_raw": 0.0, "calibration_distill": 0.0,
               "eta": 0.5, "valid_curve_raw": curve, "valid_curve_distill": curve}
    results = {"teacher": {"arch": "dcnv2", "params": 10, "auc": 0.7, "logloss": 0.5, "calibration": 0.0,
                           "valid_curve": curve[:1]},
               "students": [student], "oracle": {"auc": 0.8}, "seconds": 1.0}
    out = tmp_path / "with"
    write_results(load_config(None, [f"run.dir={out}"]), results, log=lambda _: None)
    for name in ("raw_to_distilled.png", "learning_curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / name).stat().st_size > 5000
        assert f"]({name})" in (out / "report.md").read_text()
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 2
    # no valid split, no curves: the gains plot alone
    bare = {**results, "teacher": {k: v for k, v in results["teacher"].items() if k != "valid_curve"},
            "students": [{k: v for k, v in student.items() if not k.startswith("valid_curve")}]}
    out2 = tmp_path / "without"
    write_results(load_config(None, [f"run.dir={out2}"]), bare, log=lambda _: None)
    assert (out2 / "raw_to_distilled.png").exists() and not (out2 / "learning_curves.png").exists()
    assert "learning_curves" not in (out2 / "report.md").read_text()



def test_run_summary_flattens_results_for_a_tracker() -> None:
    from recdistill.tracking import flatten, run_summary

    results = {"engine": "ray", "seconds": 3.5,
               "teacher": {"auc": 0.76, "valid_curve": [{"auc": 0.7}], "final": {"auc": 0.77}},
               "students": [{"name": "decoupled", "auc_distill": 0.75, "eta": 0.4, "auc_boot_raw": [0.1, 0.2]}],
               "summary": {"eta": {"decoupled": {"mean": 0.4, "ci": [0.3, 0.5], "finding": True}},
                           "differences": [{"name": "decoupled: distilled − raw", "mean": 0.01, "ci": [0.005, 0.015]}]},
               "platform": {"teacher_reused": True}}
    got = run_summary(results)
    assert got["teacher/auc"] == 0.76 and got["teacher/final/auc"] == 0.77 and "teacher/valid_curve" not in got
    assert got["student/decoupled/eta"] == 0.4 and "student/decoupled/auc_boot_raw" not in got
    assert (got["student/decoupled/eta_ci_low"], got["student/decoupled/eta_ci_high"]) == (0.3, 0.5)
    assert got["difference/decoupled: distilled − raw/ci_high"] == 0.015
    assert got["platform/teacher_reused"] is True and got["engine"] == "ray" and got["seconds"] == 3.5
    assert flatten("student", {"epoch": 2, "a": {"raw": {"valid_auc": 0.7}}}) == {
        "student/epoch": 2, "student/a/raw/valid_auc": 0.7}


def test_restarts_section_lists_each_restart_only_when_there_were_some(tmp_path: Path) -> None:
    from recdistill.report.render import restart_lines

    assert restart_lines([]) == [] and restart_lines(None) == []
    failures = [{"role": "teacher", "run": "teacher-abc-demo", "errors": ["rank 0: WorkerHealthCheckFailedError: died"]},
                {"role": "student", "run": "students-0-demo", "errors": ["rank 0: RuntimeError: a|b", "rank 1: E: x"]}]
    lines = restart_lines(failures)
    assert "## Restarts" in lines and "2 time(s)" in "\n".join(lines)
    rows = [x for x in lines if x.startswith("| teacher") or x.startswith("| student")]
    assert rows == ["| teacher | `teacher-abc-demo` | rank 0: WorkerHealthCheckFailedError: died |",
                    "| student | `students-0-demo` | rank 0: RuntimeError: a/b; rank 1: E: x |"]
    html = markdown_to_html("\n".join(lines), tmp_path, "t")  # one table row per restart, the cell intact
    assert html.count("<tr>") == 3 and "RuntimeError: a/b; rank 1: E: x" in html
