"""A Train worker's failure as the controller's callback relays it: the run's name and each
rank's error in one line (Ray's errors carry the remote traceback, whose last line says why).
No Ray: the relay's queue is a list here; the online tests check it end to end."""

from __future__ import annotations

from types import SimpleNamespace

from recdistill.engine.live import FAILURE, Relay


class _Queue(list):
    def put(self, item: dict) -> None:
        self.append(item)


def test_a_failure_is_relayed_with_its_run_and_each_ranks_cause() -> None:
    queue = _Queue()
    context = SimpleNamespace(run_config=SimpleNamespace(name="students-0-demo"))
    traceback = "Traceback (most recent call last):\n  File \"x.py\", line 1\n\nOSError: Invalid column metadata\n"
    Relay(queue, "student").after_exception(context, {1: RuntimeError("died"), 0: OSError(traceback)})
    assert queue == [{"role": "student", FAILURE: {"run": "students-0-demo", "errors": [
        "rank 0: OSError: OSError: Invalid column metadata", "rank 1: RuntimeError: died"]}}]


def test_a_relay_that_cannot_reach_the_driver_does_not_fail_the_run(capsys) -> None:
    class Gone:
        def put(self, item: dict) -> None:
            raise ConnectionError("the queue actor is gone")

    Relay(Gone(), "teacher").after_exception(SimpleNamespace(), {0: ValueError("x")})
    assert "a teacher worker failure was not relayed: ConnectionError" in capsys.readouterr().out
