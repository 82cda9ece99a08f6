"""The checkpoint index as data: constants, dtypes and plain types (docs/FORMAT.md).

The bottom layer of the format: no I/O, no validation, no torch. ckpt/validate.py checks these
types against the MUST rules; ckpt/format.py turns them into bytes and back (and re-exports
everything here, so callers import from ckpt.format).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "BLOCK", "DEFAULT_ALIGNMENT", "DEFAULT_CHUNK_SIZE", "DTYPES", "HEADER_SIZE", "INDEX_FILE",
    "MAGIC", "MAX_ALIGNMENT", "MAX_BYTES", "MAX_CHUNK_SIZE", "MAX_INDEX_BYTES", "MAX_NAME_BYTES",
    "MAX_NDIM", "MIN_ALIGNMENT", "MIN_CHUNK_SIZE", "PARTITION_NAME", "VERSION", "IndexFields",
    "Partition", "TensorEntry", "align_up", "partition_file_name",
]

MAGIC = b"BASCKPT\x00"
VERSION = (1, 0)  # (major, minor): readers reject another major; minor adds optional keys only
INDEX_FILE = "index.ckpt"
HEADER_SIZE = 32  # magic, major, minor, flags, index length, crcs (ckpt/format.py)
BLOCK = 4096  # partition sizes and chunk boundaries: what O_DIRECT needs on 512e and 4Kn disks
MIN_ALIGNMENT, DEFAULT_ALIGNMENT, MAX_ALIGNMENT = 256, 4096, 1 << 21
MIN_CHUNK_SIZE, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE = BLOCK, 16 << 20, 1 << 30
MAX_INDEX_BYTES = 16 << 20
MAX_NDIM = 64
MAX_NAME_BYTES = 1024
MAX_BYTES = 1 << 60  # any size or offset; keeps every sum far from 64-bit overflow
PARTITION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")

# dtype name -> bytes per element. Little-endian, IEEE / OCP layouts as in PyTorch. Sub-byte
# integer "shell" dtypes (int1..int7, uint1..uint7) and quantized dtypes are left out on purpose:
# the first have no agreed packing, the second need scales that a plain tensor does not carry.
DTYPES: dict[str, int] = {
    "bool": 1, "uint8": 1, "int8": 1, "int16": 2, "uint16": 2, "int32": 4, "uint32": 4,
    "int64": 8, "uint64": 8, "float16": 2, "bfloat16": 2, "float32": 4, "float64": 8,
    "complex32": 4, "complex64": 8, "complex128": 16,
    "float8_e4m3fn": 1, "float8_e4m3fnuz": 1, "float8_e5m2": 1, "float8_e5m2fnuz": 1,
    "float8_e8m0fnu": 1, "float4_e2m1fn_x2": 1,
    "bits8": 1, "bits16": 2, "bits1x8": 1, "bits2x4": 1, "bits4x2": 1,
}


def align_up(n: int, a: int) -> int:
    return -(-n // a) * a


def partition_file_name(i: int) -> str:
    return f"part-{i:05d}.bin"


@dataclass(frozen=True)
class TensorEntry:
    """One stored tensor: `length` bytes at `offset` of partition `partition`, C order."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    partition: int
    offset: int
    length: int

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class Partition:
    """One data file: `size` bytes (a multiple of BLOCK), one CRC-32 per chunk."""

    file: str
    size: int
    crc32: tuple[int, ...]


@dataclass(frozen=True)
class IndexFields:
    """The fields of an index and what follows from them (ckpt.format.Index adds the bytes)."""

    alignment: int = DEFAULT_ALIGNMENT
    chunk_size: int = DEFAULT_CHUNK_SIZE
    partitions: tuple[Partition, ...] = ()
    tensors: tuple[TensorEntry, ...] = ()
    aliases: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        """Bytes of all partitions: the size of the one buffer a loader fills."""
        return sum(p.size for p in self.partitions)

    def partition_bases(self) -> list[int]:
        """Where each partition starts when all are laid back to back in one buffer."""
        bases, pos = [], 0
        for p in self.partitions:
            bases.append(pos)
            pos += p.size
        return bases

    def chunks(self, i: int) -> list[tuple[int, int]]:
        """(offset, length) of each checksummed chunk of partition i."""
        size = self.partitions[i].size
        return [(o, min(self.chunk_size, size - o)) for o in range(0, size, self.chunk_size)]

    def names(self) -> list[str]:
        """Every name a loader returns: the tensors in load order, then the aliases."""
        return [t.name for t in self.tensors] + list(self.aliases)
