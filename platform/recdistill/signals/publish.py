"""How a teacher publishes signals, batch or online: blocks written to the store, then
registered with the hub in one call; a window marked complete through the hub once all
its blocks are (the hub counts them and writes ``_COMPLETE.json`` beside them). Readers
wait on the hub, never on the store's listing, so a half-written window is never read.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import ray

from recdistill.signals.store import SignalStore

Block = tuple[int, int, int, np.ndarray, np.ndarray]  # version, window, seq, row ids, logits


class Publisher:
    """One teacher worker's publishing: its key (``<teacher key>/<generation>``) and rank."""

    def __init__(self, store: SignalStore, hub: Any, key: str, rank: int = 0) -> None:
        self.store, self.hub, self.key, self.rank = store, hub, key, rank

    def publish(self, blocks: Iterable[Block]) -> int:
        """Write the blocks (logits by row id) and register them; the number registered."""
        metas = [self.store.write_block(self.key, version, window, self.rank, seq, ids, z).to_dict()
                 for version, window, seq, ids, z in blocks]
        return ray.get(self.hub.register.remote(metas))

    def complete(self, version: int, window: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Mark a window complete: readers waiting on it get its blocks from now on."""
        return ray.get(self.hub.mark_complete.remote(self.key, version, window, extra))
