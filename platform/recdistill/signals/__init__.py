"""Teacher signals: content-addressed keys, the Parquet signal store, the hub actor."""

from recdistill.signals.key import teacher_key
from recdistill.signals.store import BlockMeta, SignalStore

__all__ = ["BlockMeta", "SignalStore", "teacher_key"]
