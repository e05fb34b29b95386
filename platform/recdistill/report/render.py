"""What every report writes with: report.md → report.html, results.json, the plots.

The HTML is the Markdown report rendered by a small converter (headings, tables,
paragraphs, code blocks, the run's own PNG plots embedded as base64 so the file stands
alone; all text HTML-escaped): reports are produced on clusters without a Markdown
package, and read in a browser.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from pathlib import Path
from typing import Any, Callable

_IMG = re.compile(r"!\[([^\]]*)\]\(([^)]+)\)")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_png(directory: Path, ref: str) -> Path | None:
    """The PNG an image reference names, only when the run itself could have written it:
    a relative path without ``..``, ending in ``.png``, that resolves (links followed)
    inside ``directory`` to a file starting with PNG's magic bytes. Names in a report come
    from configs (student names, sweep values): anything else stays text, so a name such
    as ``![x](/root/.netrc)`` cannot pull a file into report.html."""
    rel = Path(ref)
    if rel.is_absolute() or ".." in rel.parts or rel.suffix.lower() != ".png":
        return None
    root = directory.resolve()
    p = (root / rel).resolve()
    if not p.is_relative_to(root) or not p.is_file():
        return None
    with p.open("rb") as f:
        if f.read(len(_PNG_MAGIC)) != _PNG_MAGIC:
            return None
    return p


def _inline(text: str, directory: Path) -> str:
    out, last = [], 0
    for m in _IMG.finditer(text):
        out.append(html.escape(text[last:m.start()]))
        p = run_png(directory, m.group(2).strip())
        if p is not None:
            data = base64.b64encode(p.read_bytes()).decode()
            out.append(f"<img alt='{html.escape(m.group(1))}' src='data:image/png;base64,{data}'>")
        else:
            out.append(html.escape(m.group(0)))
        last = m.end()
    out.append(html.escape(text[last:]))
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", "".join(out))


def markdown_to_html(md: str, directory: Path, title: str) -> str:
    lines, body, i = md.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            body.append("<pre>" + html.escape("\n".join(lines[i + 1:j])) + "</pre>")
            i = j + 1
            continue
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(set(c) <= set("-: ") for c in cells):
                    rows.append(cells)
                i += 1
            head, *rest = rows
            body.append("<table><tr>" + "".join(f"<th>{_inline(c, directory)}</th>" for c in head) + "</tr>" +
                        "".join("<tr>" + "".join(f"<td>{_inline(c, directory)}</td>" for c in r) + "</tr>"
                                for r in rest) + "</table>")
            continue
        m = re.match(r"(#+) (.*)", line)
        if m:
            n = len(m.group(1))
            body.append(f"<h{n}>{_inline(m.group(2), directory)}</h{n}>")
        elif line.strip():
            body.append(f"<p>{_inline(line, directory)}</p>")
        i += 1
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
            "text-align:right}img{max-width:100%}pre{background:#f6f6f6;padding:1em;overflow:auto}</style>"
            "</head><body>" + "\n".join(body) + "</body></html>")


def write_html(directory: Path, title: str) -> Path:
    md = (directory / "report.md").read_text()
    out = directory / "report.html"
    out.write_text(markdown_to_html(md, directory, title))
    return out


def interval_text(x: dict[str, Any], fmt: str = ".4f") -> str:
    """A figure's interval as ``[lo, hi]``, or ``n/a`` where it has none."""
    lo, hi = x["ci"]
    return f"[{lo:{fmt}}, {hi:{fmt}}]" if math.isfinite(lo) and math.isfinite(hi) else "n/a"


def verdict_text(x: dict[str, Any]) -> str:
    """What a paired figure (with ``finding``) says: a finding, within noise, undefined, or no interval."""
    if not all(map(math.isfinite, x["ci"])):
        return "no interval"
    if x.get("undefined_share", 0) > 0.025:
        return f"undefined in {x['undefined_share']:.0%} of draws (teacher ≈ raw)"
    return "**finding**" if x["finding"] else "within noise"


def restart_lines(failures: list[dict[str, Any]] | None) -> list[str]:
    """A report's account of its Train runs' restarts (``platform.failures``, ``stream.failures``):
    each run that resumed from its last checkpoint, and why. None restarted: no section."""
    if not failures:
        return []
    out = ["", "## Restarts", "", f"Ray Train restarted a run from its last checkpoint {len(failures)} time(s) (up to "
           "`platform.max_failures` per run); the figures above are those of the resumed runs.", "",
           "| role | Train run | cause (each failed rank) |", "| --- | --- | --- |"]
    return out + [f"| {f['role']} | `{f['run']}` | " + "; ".join(f["errors"]).replace("|", "/") + " |"
                  for f in failures]


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend: reports are drawn on machines without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    plt = pyplot()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_run_outputs(directory: Path, title: str, results: dict[str, Any], markdown: str,
                      plots: dict[str, Callable[[dict[str, Any], Path], None]]) -> list[Path]:
    """results.json, each plot (file name → plotting function), report.md and report.html."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.json").write_text(json.dumps(results, indent=2, default=float))
    for name, plot in plots.items():
        plot(results, directory / name)
    (directory / "report.md").write_text(markdown)
    return [directory / "results.json", directory / "report.md", write_html(directory, title),
            *(directory / name for name in plots)]
