"""A bounded, validating reader of safetensors files that streams tensor bytes (no torch).

safetensors layout: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape,
data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the data region; offsets are
relative to the data region. Hostile headers (too large, overlapping or out-of-range
offsets, wrong lengths) raise ConvertError naming the problem.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from ckpt.errors import ConvertError
from ckpt.format import DTYPES

__all__ = ["SAFETENSORS_DTYPES", "SafetensorsFile", "StEntry"]

MAX_HEADER = 100 << 20  # the cap the safetensors library itself enforces
BLOCK = 8 << 20  # bytes per streamed piece

# safetensors dtype tag -> the format's dtype name: every tag of the safetensors spec that torch
# can hold. The spec's F6_E2M3 and F6_E3M2 have no torch dtype and are refused by name.
SAFETENSORS_DTYPES = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16",
    "F16": "float16", "BF16": "bfloat16", "I32": "int32", "U32": "uint32", "F32": "float32",
    "F64": "float64", "I64": "int64", "U64": "uint64", "C64": "complex64",
    "F8_E5M2": "float8_e5m2", "F8_E4M3": "float8_e4m3fn", "F8_E8M0": "float8_e8m0fnu",
    "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F4": "float4_e2m1fn_x2",
}
# Sub-byte tags: values per byte. The safetensors header counts values (F4 x [2, 6] is 6
# bytes); torch packs them along the last dimension (float4_e2m1fn_x2 x [2, 3]).
_PER_BYTE = {"F4": 2}


@dataclass(frozen=True)
class StEntry:
    name: str
    dtype: str  # the format's dtype name
    shape: tuple[int, ...]
    begin: int  # absolute file offsets
    end: int


class SafetensorsFile:
    """One open safetensors file: entries in data order, metadata, streamed bytes."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        try:
            self._f = open(self.path, "rb")  # closed by close()
        except OSError as exc:
            raise ConvertError(f"{self.path}: cannot open ({exc.strerror})") from exc
        try:
            self.entries, self.metadata = self._parse()
        except BaseException:
            self._f.close()
            raise

    def _parse(self) -> tuple[list[StEntry], dict[str, str]]:
        size = os.fstat(self._f.fileno()).st_size
        head = self._f.read(8)
        if len(head) < 8:
            raise ConvertError(f"{self.path}: too short for a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or n > size - 8:
            raise ConvertError(f"{self.path}: safetensors header of {n} bytes is too large "
                               f"(cap {MAX_HEADER}, file {size})")
        try:
            doc = json.loads(self._f.read(n).decode("utf-8"),
                             object_pairs_hook=_no_duplicates)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ConvertError(f"{self.path}: safetensors header is not JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise ConvertError(f"{self.path}: safetensors header is not a JSON object")
        meta = doc.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise ConvertError(f"{self.path}: __metadata__ must map strings to strings")
        data_start, data_size = 8 + n, size - 8 - n
        entries = [self._entry(name, info, data_start) for name, info in doc.items()]
        entries.sort(key=lambda e: (e.begin, e.end))
        pos = data_start
        for e in entries:
            if e.begin < pos or e.end > data_start + data_size:
                raise ConvertError(f"{self.path}: tensor {e.name!r} overlaps another or lies "
                                   f"outside the data")
            pos = e.end
        return entries, dict(meta)

    def _entry(self, name: str, info, data_start: int) -> StEntry:
        what = f"{self.path}: tensor {name!r}"
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise ConvertError(f"{what}: expected dtype, shape and data_offsets")
        tag = info["dtype"]
        dtype = SAFETENSORS_DTYPES.get(tag) if isinstance(tag, str) else None
        if dtype is None:
            raise ConvertError(f"{what}: unsupported safetensors dtype {tag!r} (supported: "
                               f"{', '.join(SAFETENSORS_DTYPES)})")
        shape, offs = info["shape"], info["data_offsets"]
        if (not isinstance(shape, list) or len(shape) > 64
                or not all(type(d) is int and 0 <= d < 1 << 60 for d in shape)):
            raise ConvertError(f"{what}: bad shape {shape!r}")
        per_byte = _PER_BYTE.get(tag, 1)
        if per_byte > 1:
            if not shape or shape[-1] % per_byte:
                raise ConvertError(f"{what}: {tag} x {shape} packs {per_byte} values per byte "
                                   f"along the last dimension, whose size must be a multiple "
                                   f"of {per_byte}")
            shape = shape[:-1] + [shape[-1] // per_byte]
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(type(o) is int and 0 <= o < 1 << 62 for o in offs)
                or offs[0] > offs[1]):
            raise ConvertError(f"{what}: bad data_offsets {offs!r}")
        nbytes = DTYPES[dtype]
        for d in shape:
            nbytes = min(nbytes * d, 1 << 62)
        if offs[1] - offs[0] != nbytes:
            raise ConvertError(f"{what}: {offs[1] - offs[0]} bytes, {tag} x {info['shape']} "
                               f"needs {nbytes}")
        return StEntry(name, dtype, tuple(shape), data_start + offs[0], data_start + offs[1])

    def iter_bytes(self, entry: StEntry) -> Iterator[memoryview]:
        """The entry's bytes in pieces of at most BLOCK (one reused buffer: consume each)."""
        buf = bytearray(min(BLOCK, entry.end - entry.begin))
        self._f.seek(entry.begin)
        left = entry.end - entry.begin
        while left:
            view = memoryview(buf)[:min(left, len(buf))]
            n = self._f.readinto(view)
            if not n:
                raise ConvertError(f"{self.path}: file ends inside tensor {entry.name!r}")
            yield view[:n]
            left -= n

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _no_duplicates(items):
    obj = {}
    for key, value in items:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj
