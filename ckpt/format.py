"""The checkpoint index: constants, dtypes, encode/decode and every MUST rule of docs/FORMAT.md.

Framework-neutral: no torch here. `Index.decode` is the one gate every reader goes through; it
either returns an index whose offsets, lengths, names and checksums are consistent, or raises a
FormatError subclass naming the problem. Work and memory are bounded by MAX_INDEX_BYTES.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field

from bas import crc32 as _crc32
from ckpt.errors import (
    BadMagicError,
    IndexDecodeError,
    IndexTooLargeError,
    UnsupportedVersionError,
)

__all__ = [
    "BLOCK",
    "DEFAULT_ALIGNMENT",
    "DEFAULT_CHUNK_SIZE",
    "DTYPES",
    "HEADER_SIZE",
    "INDEX_FILE",
    "MAGIC",
    "MAX_INDEX_BYTES",
    "VERSION",
    "Index",
    "Partition",
    "TensorEntry",
    "align_up",
    "decode_header",
    "partition_file_name",
]

MAGIC = b"BASCKPT\x00"
VERSION = (1, 0)  # (major, minor): readers reject another major; minor adds optional keys only
INDEX_FILE = "index.ckpt"
_HEADER = struct.Struct("<8sHHIQII")  # magic, major, minor, flags, index length, crcs
HEADER_SIZE = _HEADER.size  # 32
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
class Index:
    """A decoded, validated index (construct through `decode`, or `validate()` what you built)."""

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

    def validate(self, source: str = "index") -> Index:
        from ckpt import validate

        validate.check_index(self, source)
        return self

    # -- bytes ---------------------------------------------------------------------------

    def encode(self) -> bytes:
        """The whole index file: header, then compact UTF-8 JSON (deterministic)."""
        self.validate()
        doc = {
            "alignment": self.alignment,
            "chunk_size": self.chunk_size,
            "partitions": [{"file": p.file, "size": p.size, "crc32": list(p.crc32)}
                           for p in self.partitions],
            "tensors": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape),
                         "partition": t.partition, "offset": t.offset, "length": t.length}
                        for t in self.tensors],
            "aliases": dict(self.aliases),
            "metadata": dict(self.metadata),
        }
        body = json.dumps(doc, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
        if len(body) > MAX_INDEX_BYTES:
            raise IndexTooLargeError(f"index of {len(body)} bytes exceeds the cap of "
                                     f"{MAX_INDEX_BYTES} bytes (too many tensors or metadata)")
        return encode_header(len(body), _crc32(body)) + body

    @classmethod
    def decode(cls, data: bytes, source: str = "index") -> Index:
        """Parse and validate a whole index file; raise a FormatError subclass if bad."""
        from ckpt import validate

        minor, length, crc = decode_header(bytes(data[:HEADER_SIZE]), source)
        if len(data) != HEADER_SIZE + length:
            raise IndexTooLargeError(f"{source}: header declares an index of {length} bytes but "
                                     f"the file holds {len(data) - HEADER_SIZE} after the header")
        body = bytes(data[HEADER_SIZE:])
        if _crc32(body) != crc:
            raise IndexDecodeError(f"{source}: index checksum mismatch (corrupted index)")
        return validate.index_from_json(_parse_json(body, source), minor, source)


def encode_header(length: int, crc: int) -> bytes:
    head = _HEADER.pack(MAGIC, VERSION[0], VERSION[1], 0, length, crc, 0)
    return head[:-4] + struct.pack("<I", _crc32(head[:-4]))


def decode_header(head: bytes, source: str = "index") -> tuple[int, int, int]:
    """(minor version, index length, index crc) from the first HEADER_SIZE bytes; checks caps."""
    if len(head) < HEADER_SIZE:
        if not MAGIC.startswith(head[:len(MAGIC)]) or not head:
            raise BadMagicError(f"{source}: not a bas checkpoint index (bad magic)")
        raise IndexTooLargeError(f"{source}: truncated header ({len(head)} of {HEADER_SIZE} "
                                 f"bytes)")
    magic, major, minor, flags, length, crc, head_crc = _HEADER.unpack(head[:HEADER_SIZE])
    if magic != MAGIC:
        raise BadMagicError(f"{source}: not a bas checkpoint index (bad magic {magic!r})")
    if _crc32(head[:HEADER_SIZE - 4]) != head_crc:
        raise IndexDecodeError(f"{source}: header checksum mismatch (corrupted header)")
    if major != VERSION[0]:
        raise UnsupportedVersionError(f"{source}: format version {major}.{minor}; this reader "
                                      f"implements {VERSION[0]}.x")
    if flags:
        raise UnsupportedVersionError(f"{source}: unknown header flags {flags:#x}")
    if length > MAX_INDEX_BYTES:
        raise IndexTooLargeError(f"{source}: index of {length} bytes exceeds the cap of "
                                 f"{MAX_INDEX_BYTES} bytes")
    return minor, length, crc


def _parse_json(body: bytes, source: str):
    def pairs(items):
        obj = {}
        for key, value in items:
            if key in obj:
                raise IndexDecodeError(f"{source}: duplicate key {key!r} in the index")
            obj[key] = value
        return obj

    def no_float(text):
        raise IndexDecodeError(f"{source}: non-integer number {text[:32]!r} in the index")

    def bounded_int(text):
        if len(text) > 20:
            raise IndexDecodeError(f"{source}: integer {text[:24]!r}... is too long")
        return int(text)

    try:
        text = body.decode("utf-8")
        return json.loads(text, object_pairs_hook=pairs, parse_float=no_float,
                          parse_int=bounded_int, parse_constant=no_float)
    except IndexDecodeError:
        raise
    except RecursionError:
        raise IndexDecodeError(f"{source}: index JSON nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise IndexDecodeError(f"{source}: index is not valid UTF-8 JSON ({exc})") from None
