"""ckpt: a loading-optimized checkpoint format and a loader at device speed (docs/FORMAT.md).

    ckpt.save(model.state_dict(), "model.ckpt")
    tensors = ckpt.load("model.ckpt", "cpu")            # zero-copy private mappings
    store = ckpt.Store([ckpt.DramTier(8 << 30), ckpt.DiskTier("/nvme/ckpt", 100 << 30)])
    ckpt.load_into(model_on_meta, "model.ckpt")         # assign, re-tie, buffers
"""

from ckpt.convert import convert
from ckpt.errors import (
    AliasError,
    BadMagicError,
    CheckpointError,
    CheckpointIOError,
    ChecksumError,
    ConvertError,
    FormatError,
    IndexDecodeError,
    IndexTooLargeError,
    LayoutError,
    LengthMismatchError,
    MissingPartitionError,
    ModelNameError,
    NotACheckpointError,
    PartitionNameError,
    PartitionSizeError,
    SaveInProgressError,
    SchemaError,
    ShapeError,
    UnsupportedDtypeError,
    UnsupportedVersionError,
)
from ckpt.format import DTYPES, Index, Partition, TensorEntry
from ckpt.host import pack, verify
from ckpt.pool import HostPool, PoolStats
from ckpt.reader import LoadStats
from ckpt.source import Source, open_source, packed_source, read_index
from ckpt.tiers import DiskTier, DramTier, RemoteTier, Tier, TierCapabilities
from ckpt.writer import Writer

# The torch adapters (ckpt/torch/) are imported on first use: `import ckpt` (format, writer,
# reader, tiers) works without torch; ckpt.load, save, Store, ... need it.
_TORCH = {
    "Loaded": "ckpt.torch.store", "Store": "ckpt.torch.store",
    "init_empty": "ckpt.torch.modules", "load": "ckpt.torch.loader",
    "load_from": "ckpt.torch.loader", "load_into": "ckpt.torch.modules",
    "load_stream": "ckpt.torch.loader",
    "load_transformers": "ckpt.torch.modules", "save": "ckpt.torch.tensors",
}


def __getattr__(name: str):
    if name in _TORCH:
        import importlib

        value = getattr(importlib.import_module(_TORCH[name]), name)
        globals()[name] = value  # once: later lookups are plain attribute reads
        return value
    raise AttributeError(f"module 'ckpt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_TORCH))


__all__ = [
    "DTYPES",
    "AliasError",
    "BadMagicError",
    "CheckpointError",
    "CheckpointIOError",
    "ChecksumError",
    "ConvertError",
    "DiskTier",
    "DramTier",
    "FormatError",
    "HostPool",
    "Index",
    "IndexDecodeError",
    "IndexTooLargeError",
    "LayoutError",
    "LengthMismatchError",
    "LoadStats",
    "Loaded",
    "MissingPartitionError",
    "ModelNameError",
    "NotACheckpointError",
    "Partition",
    "PartitionNameError",
    "PartitionSizeError",
    "PoolStats",
    "RemoteTier",
    "SaveInProgressError",
    "SchemaError",
    "ShapeError",
    "Source",
    "Store",
    "TensorEntry",
    "Tier",
    "TierCapabilities",
    "UnsupportedDtypeError",
    "UnsupportedVersionError",
    "Writer",
    "convert",
    "init_empty",
    "load",
    "load_from",
    "load_into",
    "load_stream",
    "load_transformers",
    "open_source",
    "pack",
    "packed_source",
    "read_index",
    "save",
    "verify",
]
