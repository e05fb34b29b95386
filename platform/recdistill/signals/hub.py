"""The teacher-signal hub: one named Ray actor per experiment, the 1-to-N point.

Control plane only. It indexes signal blocks by (teacher key, version, window); the
logits themselves are Parquet files in the signal store, written by the teacher's
workers and read by the distill-stream join, never passed through the hub. Students (or
the join) ask for a window's blocks and may wait until the teacher has marked it
complete. The actor restarts after a crash (``max_restarts``) and rebuilds its index
lazily, per teacher key, from the store's files.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import ray

from recdistill.ray_env import actor_restarted
from recdistill.signals.blocks import BlockMeta
from recdistill.signals.store import SignalStore

Slot = tuple[str, int, int]  # (teacher key, version, window)


class SignalHub:
    def __init__(self, store_uri: str) -> None:
        self.store = SignalStore(store_uri)
        self._blocks: dict[Slot, dict[str, BlockMeta]] = {}
        self._complete: dict[Slot, dict[str, Any]] = {}
        self._events: dict[Slot, asyncio.Event] = {}
        self._loaded: set[str] = set()
        self.restarted = actor_restarted()

    def _event(self, slot: Slot) -> asyncio.Event:
        if slot not in self._events:
            self._events[slot] = asyncio.Event()
        return self._events[slot]

    def _load(self, key: str) -> None:
        """Index what the store already holds for ``key`` (after a restart, or a reused teacher)."""
        if key in self._loaded:
            return
        blocks, complete = self.store.scan(key)
        for b in blocks:
            self._blocks.setdefault((key, b.version, b.window), {})[b.path] = b
        for version, window in complete:
            slot = (key, version, window)
            self._complete[slot] = self.store.completion(key, version, window) or {}
            self._event(slot).set()
        self._loaded.add(key)

    async def register(self, blocks: list[dict[str, Any]]) -> int:
        for d in blocks:
            b = BlockMeta(**d)
            self._load(b.key)
            self._blocks.setdefault((b.key, b.version, b.window), {})[b.path] = b
        return len(blocks)

    async def mark_complete(self, key: str, version: int, window: int,
                            extra: dict[str, Any] | None = None) -> dict[str, Any]:
        self._load(key)
        slot = (key, version, window)
        blocks = self._blocks.get(slot, {})
        info = {"rows": sum(b.rows for b in blocks.values()), "blocks": len(blocks)}
        self.store.mark_complete(key, version, window, **info, extra=extra)
        info.update(extra or {})
        self._complete[slot] = info
        self._event(slot).set()
        return info

    async def blocks(self, key: str, version: int, window: int) -> list[dict[str, Any]]:
        self._load(key)
        return [b.to_dict() for b in sorted(self._blocks.get((key, version, window), {}).values(),
                                            key=lambda b: b.row_id_min)]

    async def complete(self, key: str, version: int, window: int) -> dict[str, Any] | None:
        self._load(key)
        return self._complete.get((key, version, window))

    async def wait(self, key: str, version: int, window: int, timeout_s: float | None = None
                   ) -> list[dict[str, Any]] | None:
        """The window's blocks once the teacher marked it complete; None on timeout."""
        self._load(key)
        try:
            await asyncio.wait_for(self._event((key, version, window)).wait(), timeout_s)
        except asyncio.TimeoutError:
            return None
        return await self.blocks(key, version, window)

    async def wait_window(self, key: str, version: int, window: int, timeout_s: float | None = None
                          ) -> dict[str, Any] | None:
        """Like ``wait``, with the completion record: ``{"blocks": [...], "rows", ...extra}``."""
        blocks = await self.wait(key, version, window, timeout_s)
        if blocks is None:
            return None
        return {**self._complete.get((key, version, window), {}), "blocks": blocks}

    async def ping(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "restarted": self.restarted, "keys": sorted(self._loaded)}


def hub_name(experiment: str) -> str:
    return f"recdistill-hub-{experiment}"


def get_hub(experiment: str, store_uri: str, max_restarts: int = 3) -> Any:
    """The experiment's hub, created on first use (a normal named actor: it ends with the job)."""
    actor = ray.remote(SignalHub).options(
        name=hub_name(experiment), get_if_exists=True, max_restarts=max_restarts, max_task_retries=-1,
        num_cpus=0, max_concurrency=64)
    return actor.remote(store_uri)


def completed(hub: Any, signal_id: str, windows: list[tuple[int, int]]) -> list[dict[str, Any]] | None:
    """Each ``(version, window)``'s completion record, or None unless every one is complete."""
    done = ray.get([hub.complete.remote(signal_id, v, w) for v, w in windows])
    return done if all(d is not None for d in done) else None
