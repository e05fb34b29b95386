"""Seconds spent in a model's training steps, without a host sync per step on a GPU.

A student group steps its members in turn; timing each step with the host clock on CUDA
needs ``torch.cuda.synchronize()`` after it, which keeps the host from queueing the next
member's step while the device runs this one. On CUDA the timer records an event pair on
the current stream around each step and reads their elapsed times only when asked (or,
without waiting, once many are pending); on CPU it reads the host clock."""

from __future__ import annotations

from time import perf_counter

import torch

_PENDING = 512  # event pairs kept before the finished ones are read without waiting


class StepTimer:
    def __init__(self) -> None:
        self._seconds = 0.0
        self._t0 = 0.0
        self._start: torch.cuda.Event | None = None
        self._pending: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    def start(self, device: torch.device) -> None:
        if device.type == "cuda":
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._t0 = perf_counter()

    def stop(self, device: torch.device) -> None:
        if device.type == "cuda":
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            assert self._start is not None, "StepTimer.stop without start"
            self._pending.append((self._start, end))
            self._start = None
            if len(self._pending) >= _PENDING:
                self._collect(wait=False)
        else:
            self._seconds += perf_counter() - self._t0

    def take(self) -> float:
        """The seconds timed since the last ``take`` (waits for the device's pending steps)."""
        self._collect(wait=True)
        s, self._seconds = self._seconds, 0.0
        return s

    def _collect(self, wait: bool) -> None:
        done = 0
        for start, end in self._pending:  # events on one stream finish in order
            if wait:
                end.synchronize()
            elif not end.query():
                break
            self._seconds += start.elapsed_time(end) / 1000.0
            done += 1
        del self._pending[:done]


def synced_clock(device: torch.device) -> float:
    """The host clock once ``device`` has run what was queued on it: where a loop adds up its
    training seconds before validating or checkpointing, the steps still queued on a GPU
    belong to the training, not to what follows."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return perf_counter()
