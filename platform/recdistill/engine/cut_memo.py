"""The log's cuts (split and window boundaries), kept in the signal store beside its
statistics (``sizing.cached_stats``): every run of a sweep, and every rerun, prepares the
same log, and its cuts cost four Ray Data passes (a min/max and two histogram passes for the
splits, one more for the history cut, which refines the split cut's histograms:
``windows.tag_history``), seconds of fixed cost each time on a small machine.

A cut is exact and deterministic (``data.windows.boundaries``), so a kept one equals a
recomputed one. The key is the log's identity (its data config and, for files, their
sizes and modification times: ``train.keys``) with what was cut; a changed file is another
log. A log that fails its first pass (rejected rows over budget, duplicate row ids) keeps
no cut, and the later passes still read every file, so its rejects are still counted.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from recdistill.config import ExperimentConfig
from recdistill.data.windows import CutMemo

_DIR = "_log_cuts"


def cut_memo(cfg: ExperimentConfig, log: Callable[[str], None] | None = None) -> CutMemo:
    """A memo for ``data.windows.boundaries`` keyed by ``cfg``'s log."""
    from recdistill.signals.store import SignalStore
    from recdistill.train.keys import log_stats_key

    store = SignalStore(cfg.platform.signal_store)

    def memo(what: dict[str, Any], compute: Callable[[], list[float]]) -> list[float]:
        path = f"{store.root}/{_DIR}/{log_stats_key(cfg, 'cuts ' + json.dumps(what, sort_keys=True))}.json"
        hit = store.read_json(path)
        if hit is not None and hit.get("what") == what:
            if log is not None:
                log(f"[data] {what['rows']} cuts at {what['quantiles']} of {what['column']} reused from the store")
            return [float(c) for c in hit["cuts"]]
        cuts = [float(c) for c in compute()]
        store.write_json(path, {"what": what, "cuts": cuts})
        return cuts

    return memo
