"""A lease on a teacher key in the signal store: one run trains a key at a time.

Two jobs that start the same teacher key at once would both train it. The first to
create ``<key>/_LEASE.json`` (exclusively) trains; the others wait until the key's signals
are committed and read them, or, when the holder stops renewing (its driver died), take
the lease over once it has expired. The holder renews it from a background thread.

The lease lives in the store, not in a Ray actor, so it also holds between jobs on
different clusters that share a store; see ``SignalStore.create_json_exclusive`` for how
exclusive the create is on object stores.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from recdistill.signals.store import SignalStore

T = TypeVar("T")


def lease_path(store: SignalStore, key: str) -> str:
    return f"{store.root}/{key}/_LEASE.json"


@dataclass
class Lease:
    """A held lease; ``release()`` (or the context manager) gives it back."""

    store: SignalStore
    key: str
    owner: str
    token: str
    ttl_s: float
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def record(self) -> dict[str, Any]:
        now = time.time()
        return {"owner": self.owner, "token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                "renewed": now, "expires": now + self.ttl_s}

    def held(self) -> bool:
        rec = self.store.read_json(lease_path(self.store, self.key))
        return bool(rec) and rec.get("token") == self.token

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            if not self.held():  # taken over after we stalled past the ttl: stop claiming it
                return
            self.store.write_json(lease_path(self.store, self.key), self.record())

    def start(self) -> "Lease":
        self._thread = threading.Thread(target=self._renew, name=f"lease-{self.key}", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.held():
            self.store.delete(lease_path(self.store, self.key))

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def try_acquire(store: SignalStore, key: str, owner: str, ttl_s: float) -> Lease | None:
    """The lease when nobody holds it (or its holder let it expire); None otherwise."""
    lease = Lease(store, key, owner, secrets.token_hex(8), ttl_s)
    path = lease_path(store, key)
    if store.create_json_exclusive(path, lease.record()):
        return lease.start()
    rec = store.read_json(path)
    if rec is not None and rec.get("expires", 0) > time.time():
        return None
    # Expired (or unreadable): remove it only if it is still the record we judged stale,
    # so two waiters cannot both take over; then race for it like a fresh lease.
    if store.read_json(path) == rec:
        store.delete(path)
    return lease.start() if store.create_json_exclusive(path, lease.record()) else None


def holder(store: SignalStore, key: str) -> dict[str, Any] | None:
    return store.read_json(lease_path(store, key))


def reuse_or_lease(store: SignalStore, key: str, owner: str, ttl_s: float, poll_s: float,
                   stored: Callable[[], T | None], log: Callable[[str], None],
                   timeout_s: float | None = None, what: str = "teacher") -> tuple[T | None, Lease | None]:
    """The key's committed signals, or the lease to train it: ``(stored(), None)`` once
    ``stored()`` finds them (at once, or after waiting for the run that holds the lease),
    else ``(None, lease)``; the caller trains under the lease and then releases it.
    ``what`` names the trained thing in the messages (the teacher, a committee's experts)."""
    t0, told = time.monotonic(), False
    while True:
        found = stored()
        if found is not None:
            return found, None
        lease = try_acquire(store, key, owner, ttl_s)
        if lease is not None:
            found = stored()  # committed between our look and the acquire
            if found is not None:
                lease.release()
                return found, None
            return None, lease
        if not told:
            rec = holder(store, key) or {}
            log(f"[{what}] {key} is being trained by {rec.get('owner', '?')} (host {rec.get('host', '?')}, "
                f"pid {rec.get('pid', '?')}); waiting for its signals (its lease expires {ttl_s:.0f} s after "
                f"its last renewal)")
            told = True
        if timeout_s is not None and time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"{what} {key}: still leased by {(holder(store, key) or {}).get('owner')} after "
                               f"{timeout_s:.0f} s; raise platform.lease_wait_s or check that run")
        time.sleep(poll_s)
