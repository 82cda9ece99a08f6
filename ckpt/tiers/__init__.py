"""Where checkpoints live, fastest first: the Tier contract (tier.py, the whole of it), the
DRAM, disk and remote tiers, and the TierConformance suite every tier passes (conformance.py).
Torch-free: ckpt.Store (ckpt/torch/store.py) turns what tiers hold into tensors."""

from ckpt.tiers.disk import DiskTier
from ckpt.tiers.dram import DramTier
from ckpt.tiers.remote import RemoteTier
from ckpt.tiers.tier import Droppable, Held, Sink, Tier, TierCapabilities, TierReader

__all__ = ["DiskTier", "DramTier", "Droppable", "Held", "RemoteTier", "Sink", "Tier",
           "TierCapabilities", "TierReader"]
