"""Materialising a Ray Dataset with its blocks in the dataset's own order.

Ray Data's executor hands blocks on as their tasks finish unless the dataset's context says
``preserve_order``; a plain ``materialize()`` of a multi-block dataset therefore keeps them
in completion order, which changes from run to run (a slow first read task puts its block
last). Whatever trains on, or takes the first rows of, a materialised dataset (the students'
stream, the held-out splits, the transfer stage's curve rows) would then see another order on
every run with the same seed.
"""

from __future__ import annotations

from typing import Any


def materialize_in_order(ds: Any) -> Any:
    """``ds.materialize()`` with its blocks in ``ds``'s order. Later passes over the result run
    with the dataset's own ``preserve_order`` again (a reduction need not wait for order)."""
    options = ds.context.execution_options
    before, options.preserve_order = options.preserve_order, True
    try:
        out = ds.materialize()
    finally:
        options.preserve_order = before
    out.context.execution_options.preserve_order = before  # the copy took the flag along
    return out
