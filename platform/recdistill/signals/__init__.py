"""Teacher signals: their kinds, the Parquet signal store, the hub actor, the join, leases."""

from recdistill.signals.blocks import BlockMeta, EntityBlockMeta
from recdistill.signals.kinds import KINDS, SignalKind
from recdistill.signals.store import SignalStore

__all__ = ["KINDS", "BlockMeta", "EntityBlockMeta", "SignalKind", "SignalStore"]
