"""Per-proxy snapshot cache: what each proxy should have, and its packed wire form."""

from shoal.xds.cache.packing import PackCache, Packed, pack
from shoal.xds.cache.snapshots import SnapshotCache

__all__ = ["PackCache", "Packed", "SnapshotCache", "pack"]
