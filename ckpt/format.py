"""The checkpoint index as bytes: the header, the JSON, encode and decode (docs/FORMAT.md).

Layers: ckpt/schema.py (constants and plain types) <- ckpt/validate.py (the MUST rules) <- this
module, which re-exports the schema so that callers import the format from here.

Framework-neutral: no torch here. `Index.decode` is the one gate every reader goes through; it
either returns an index whose offsets, lengths, names and checksums are consistent, or raises a
FormatError subclass naming the problem. Work and memory are bounded by MAX_INDEX_BYTES.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from dataclasses import dataclass

from bas import crc32 as _crc32
from ckpt import validate
from ckpt.errors import (
    BadMagicError,
    IndexDecodeError,
    IndexTooLargeError,
    UnsupportedVersionError,
)
from ckpt.schema import (  # noqa: F401 - re-exported: callers import the format from here
    BLOCK,
    DEFAULT_ALIGNMENT,
    DEFAULT_CHUNK_SIZE,
    DTYPES,
    HEADER_SIZE,
    INDEX_FILE,
    MAGIC,
    MAX_ALIGNMENT,
    MAX_BYTES,
    MAX_CHUNK_SIZE,
    MAX_INDEX_BYTES,
    MAX_NAME_BYTES,
    MAX_NDIM,
    MIN_ALIGNMENT,
    MIN_CHUNK_SIZE,
    PARTITION_NAME,
    VERSION,
    IndexFields,
    Partition,
    TensorEntry,
    align_up,
    partition_file_name,
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

_HEADER = struct.Struct("<8sHHIQII")  # magic, major, minor, flags, index length, crcs
assert _HEADER.size == HEADER_SIZE

@dataclass(frozen=True)
class Index(IndexFields):
    """A decoded, validated index (construct through `decode`, or `validate()` what you built)."""

    def validate(self, source: str = "index") -> Index:
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
        minor, length, crc = decode_header(bytes(data[:HEADER_SIZE]), source)
        if len(data) != HEADER_SIZE + length:
            raise IndexTooLargeError(f"{source}: header declares an index of {length} bytes but "
                                     f"the file holds {len(data) - HEADER_SIZE} after the header")
        body = bytes(data[HEADER_SIZE:])
        if _crc32(body) != crc:
            raise IndexDecodeError(f"{source}: index checksum mismatch (corrupted index)")
        fields = validate.index_from_json(_parse_json(body, source), minor, source)
        return cls(*(getattr(fields, f.name) for f in dataclasses.fields(fields)))


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
