"""Keep Ray Data's streaming executor from spinning while a slow consumer is fed.

A Dataset iterated in a process (a one-worker Train run reads its datasets unsplit) runs
Ray Data's scheduling loop on a thread of that process. When the consumer, a training loop,
is slower than the read, the executor holds the read tasks' outputs back (task-output
backpressure): their next blocks are ready but not taken, so the loop's ``ray.wait`` returns
at once and the loop turns again, with no sleep, until the consumer drains its queue.
Each turn updates metrics and stats under the GIL the training thread needs.

Measured: a 10M-row teacher ran at 6.5k samples/s while its read was in flight and 16.7k
after (py-spy: ~48% of the trainer's thread samples in the executor thread); a slow consumer
of a backpressured dataset spent 8.6 s of its process's CPU in 12 s of wall, 2.9 s with this
pacing and the same wall (``benchmarks/README.md``).

``ExecutorPace`` sleeps ``PAUSE_S`` after a turn in which the consumer has blocks waiting and
an operator is held back: nothing can change until the consumer takes a block, and one block
of a training stream lasts far longer than the pause. When either is false the loop runs at
Ray's own pace. It reads two of the executor's private attributes; when a Ray release
renames them it does nothing (``tests/test_executor_pace.py`` fails, not the runs).
"""

from __future__ import annotations

import time
from typing import Any

from ray.data._internal.execution.execution_callback import ExecutionCallback

PAUSE_S = 0.02


class ExecutorPace(ExecutionCallback):
    pauses = 0  # in this process, for tests and benchmarks

    def on_execution_step(self, executor: Any) -> None:
        output = getattr(executor, "_output_node", None)
        topology = getattr(executor, "_topology", None)
        if output is None or not topology or not len(output[1].output_queue):
            return
        if any(getattr(op, "_in_task_output_backpressure", False) for op in topology):
            type(self).pauses += 1
            time.sleep(PAUSE_S)


def pace_executor(ctx: Any) -> None:
    """Add ``ExecutorPace`` to a ``DataContext`` (once); it travels with each dataset made
    under it to the process that executes it."""
    if ExecutorPace not in ctx.custom_execution_callback_classes:
        ctx.custom_execution_callback_classes.append(ExecutorPace)
