"""Experiment tracking behind one small protocol: stdout, JSON lines and Weights & Biases.

W&B runs offline unless a key is there (``tracking.wandb=auto``, see ``wandb_mode``):
offline runs land under ``<dir>/wandb/offline-run-*`` and can be uploaded later with
``wandb sync``. Only the experiment config, metrics and the run's own outputs (results,
report, plots) are logged; nothing from the environment.

Metric names are slash-namespaced by role, each role with its own step axis (``STEPS``):
``teacher/valid_auc`` against ``teacher/step``, ``student/<name>/<raw|distill>/valid_auc``
against ``student/epoch``, ``online/...`` against ``online/window``, ``transfer/...``
against ``transfer/step``.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any, Protocol

from recdistill.config import TrackingConfig


# each role's step axis (a W&B step metric): live rows of a role carry it
STEPS = {"teacher": "teacher/step", "student": "student/epoch", "online": "online/window",
         "transfer": "transfer/step"}


class Tracker(Protocol):
    def log(self, metrics: dict[str, Any], step: int | None = None) -> None: ...

    def summary(self, metrics: dict[str, Any]) -> None: ...

    def table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None: ...

    def image(self, name: str, path: Path) -> None: ...

    def artifact(self, name: str, kind: str, paths: list[Path], metadata: dict[str, Any] | None = None) -> None: ...

    def finish(self) -> None: ...


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}


class StdoutTracker:
    def __init__(self, name: str) -> None:
        self.name = name

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        body = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in _scalars(metrics).items())
        print(f"[{self.name}]{'' if step is None else f' step {step}'} {body}", flush=True)

    def summary(self, metrics: dict[str, Any]) -> None:
        self.log(metrics)

    def table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        print(f"[{self.name}] {name}: {len(rows)} rows × {len(columns)} columns", flush=True)

    def image(self, name: str, path: Path) -> None:
        print(f"[{self.name}] {name}: {path}", flush=True)

    def artifact(self, name: str, kind: str, paths: list[Path], metadata: dict[str, Any] | None = None) -> None:
        print(f"[{self.name}] {kind} {name}: {', '.join(p.name for p in paths)}", flush=True)

    def finish(self) -> None:
        pass


class JsonlTracker:
    """One JSON object per line: ``{"time", "kind", "step", ...}`` in ``<dir>/metrics.jsonl``."""

    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = path.open("a")
        self._write("config", {"config": config})

    def _write(self, kind: str, payload: dict[str, Any]) -> None:
        self.f.write(json.dumps({"time": time.time(), "kind": kind, **payload}, default=str) + "\n")
        self.f.flush()

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self._write("metrics", {"step": step, **metrics})

    def summary(self, metrics: dict[str, Any]) -> None:
        self._write("summary", metrics)

    def table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        self._write("table", {"name": name, "columns": columns, "rows": rows})

    def image(self, name: str, path: Path) -> None:
        self._write("image", {"name": name, "path": str(path)})

    def artifact(self, name: str, kind: str, paths: list[Path], metadata: dict[str, Any] | None = None) -> None:
        self._write("artifact", {"name": name, "type": kind, "paths": [str(p) for p in paths],
                                 **({"metadata": metadata} if metadata else {})})

    def finish(self) -> None:
        self.f.close()


# WANDB_MODE values wandb itself accepts, and what each means here
_WANDB_MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline",
                "disabled": None}


def wandb_logged_in() -> bool:
    """Whether ``wandb login`` left a key for the W&B host: it writes one to the netrc file
    (``NETRC`` or ~/.netrc), under the host of ``WANDB_BASE_URL`` (default api.wandb.ai)."""
    import netrc
    from urllib.parse import urlparse

    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def wandb_mode(setting: str) -> str | None:
    """auto: what ``WANDB_MODE`` says when it is set (wandb's own switch); else online with a
    key (``WANDB_API_KEY`` or a ``wandb login`` entry), offline without. None = disabled."""
    if setting == "disabled":
        return None
    if setting == "auto":
        env = os.environ.get("WANDB_MODE", "").strip().lower()
        if env:
            if env not in _WANDB_MODES:
                raise ValueError(f"WANDB_MODE={env!r}: expected one of {sorted(_WANDB_MODES)} "
                                 f"(tracking.wandb=auto follows it)")
            return _WANDB_MODES[env]
        return "online" if os.environ.get("WANDB_API_KEY") or wandb_logged_in() else "offline"
    return setting


class WandbTracker:
    def __init__(self, directory: Path, project: str, name: str, config: dict[str, Any], mode: str,
                 group: str | None = None, job_type: str = "trial") -> None:
        import wandb

        directory.mkdir(parents=True, exist_ok=True)
        self.wandb = wandb
        self.run = wandb.init(project=project, name=name, group=group, job_type=job_type, config=config,
                              dir=str(directory), mode=mode, reinit="create_new",
                              settings=wandb.Settings(console="off", silent=True, x_disable_stats=True))
        for role, step in STEPS.items():
            self.run.define_metric(step)
            self.run.define_metric(f"{role}/*", step_metric=step)

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self.run.log(_scalars(metrics), step=step)

    def summary(self, metrics: dict[str, Any]) -> None:
        for k, v in _scalars(metrics).items():
            self.run.summary[k] = v

    def table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        self.run.log({name: self.wandb.Table(columns=columns, data=rows)})

    def image(self, name: str, path: Path) -> None:
        self.run.log({name: self.wandb.Image(str(path))})

    def artifact(self, name: str, kind: str, paths: list[Path], metadata: dict[str, Any] | None = None) -> None:
        # artifact names allow letters, digits, dashes, underscores and dots
        art = self.wandb.Artifact(re.sub(r"[^\w.-]", "-", name), type=kind, metadata=metadata)
        for p in paths:
            if p.is_dir():  # a model artifact's directory, its files at the root
                art.add_dir(str(p))
            else:
                art.add_file(str(p), name=p.name)
        self.run.log_artifact(art)

    def update_config(self, config: dict[str, Any]) -> None:
        self.run.config.update(config, allow_val_change=True)

    def finish(self) -> None:
        self.run.finish()

    @property
    def run_dir(self) -> str:
        return self.run.dir


class Trackers:
    """Fan-out to every configured back end."""

    def __init__(self, trackers: list[Any]) -> None:
        self.trackers = trackers

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        for t in self.trackers:
            t.log(metrics, step)

    def summary(self, metrics: dict[str, Any]) -> None:
        for t in self.trackers:
            t.summary(metrics)

    def table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        for t in self.trackers:
            t.table(name, columns, rows)

    def image(self, name: str, path: Path) -> None:
        for t in self.trackers:
            t.image(name, path)

    def artifact(self, name: str, kind: str, paths: list[Path], metadata: dict[str, Any] | None = None) -> None:
        for t in self.trackers:
            t.artifact(name, kind, paths, metadata)

    def update_config(self, config: dict[str, Any]) -> None:
        """The resolved config (auto keys sized by the data), where a back end keeps one."""
        for t in self.trackers:
            if isinstance(t, WandbTracker):
                t.update_config(config)
            elif isinstance(t, JsonlTracker):
                t._write("config", {"config": config})

    def finish(self) -> None:
        for t in self.trackers:
            t.finish()

    def wandb_run_id(self) -> str | None:
        return next((t.run.id for t in self.trackers if isinstance(t, WandbTracker)), None)


def make_trackers(tracking: TrackingConfig, directory: Path, name: str, config: dict[str, Any],
                  group: str | None = None, job_type: str = "trial", stdout: bool = True) -> Trackers:
    out: list[Any] = [StdoutTracker(name)] if stdout else []
    if tracking.jsonl:
        out.append(JsonlTracker(directory / "metrics.jsonl", config))
    mode = wandb_mode(tracking.wandb)
    if mode is not None:
        out.append(WandbTracker(directory, tracking.project, name, config, mode, group, job_type))
    return Trackers(out)


def flatten(prefix: str, d: dict[str, Any]) -> dict[str, Any]:
    """Nested metrics as slash-namespaced scalar keys (W&B groups its panels by them); lists
    are left out."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(key, v))
        elif isinstance(v, (int, float, str, bool)):
            out[key] = v
    return out


def run_summary(results: dict[str, Any]) -> dict[str, Any]:
    """A run's results.json as flat slash-namespaced scalars for a tracker's summary:
    ``teacher/auc``, ``student/<name>/auc_distill``, ``student/<name>/eta``, the intervals
    (``student/<name>/eta_ci_low``), ``platform/...``; curves and bootstrap lists left out."""
    flat = flatten
    out: dict[str, Any] = {}
    for k, v in results.items():
        if k == "students" and isinstance(v, list):
            for s in v:
                out.update(flat(f"student/{s.get('name', len(out))}", s))
        elif k == "summary" and isinstance(v, dict):
            for name, e in v.get("eta", {}).items():
                out[f"student/{name}/eta_ci_low"], out[f"student/{name}/eta_ci_high"] = e["ci"]
                out[f"student/{name}/eta_finding"] = e["finding"]
            for d in v.get("differences", []):
                out[f"difference/{d['name']}"] = d["mean"]
                out[f"difference/{d['name']}/ci_low"], out[f"difference/{d['name']}/ci_high"] = d["ci"]
        elif isinstance(v, dict):
            out.update(flat(k, v))
        elif isinstance(v, (int, float, str, bool)):
            out[k] = v
    return out
