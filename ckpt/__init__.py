"""ckpt: a loading-optimized checkpoint format and a loader at device speed (docs/FORMAT.md).

    ckpt.save(model.state_dict(), "model.ckpt")
    tensors = ckpt.load("model.ckpt", "cpu")            # zero-copy private mappings
    store = ckpt.Store([ckpt.DramTier(8 << 30), ckpt.DiskTier("/nvme/ckpt", 100 << 30)])
    ckpt.load_into(model_on_meta, "model.ckpt")         # assign, re-tie, buffers
"""

from ckpt.convert import convert
from ckpt.disk import DiskTier
from ckpt.dram import DramTier
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
from ckpt.loader import load, load_from, load_stream, pack, verify
from ckpt.modules import init_empty, load_into, load_transformers
from ckpt.pool import HostPool, PoolStats
from ckpt.reader import LoadStats
from ckpt.remote import RemoteTier
from ckpt.source import Source, open_source, packed_source, read_index
from ckpt.store import Loaded, Store
from ckpt.tensors import save
from ckpt.writer import Writer

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
