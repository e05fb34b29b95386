"""The standalone HTML report and the JSONL tracker (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

from recdistill.config import TrackingConfig
from recdistill.reports import markdown_to_html
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
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert wandb_mode("auto") == "offline" and wandb_mode("disabled") is None
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode("auto") == "online"
