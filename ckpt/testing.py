"""Test helpers shipped with ckpt: the golden state dict, hostile-file cases, byte comparison.

    python -m ckpt.testing golden DIR    rewrite the golden checkpoint (format changes only)
    python -m ckpt.testing hostile DIR   write every hostile case as DIR/<case>/ (for readers
                                         in other languages), from the golden checkpoint

A hostile case is (name, error class, mutate): mutate(dir) damages a copy of a valid
checkpoint so that every conforming reader must reject it with that error.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
from collections.abc import Callable

import torch

from bas import crc32 as _crc32
from ckpt import errors as E
from ckpt.format import HEADER_SIZE, INDEX_FILE, MAGIC

__all__ = ["GOLDEN_OPTIONS", "golden_state_dict", "hostile_cases", "rewrite_index", "same"]

GOLDEN_OPTIONS = {"alignment": 256, "chunk_size": 4096, "partition_size": 4096}


def golden_state_dict() -> dict[str, torch.Tensor]:
    """Every dtype and corner case, with values computed without a random generator."""
    f = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 4 - 1
    sd = {
        "float32": f,
        "float16": (torch.arange(6, dtype=torch.float32) - 2.5).half(),
        "bfloat16": (torch.arange(5, dtype=torch.float32) * 1.5).bfloat16().reshape(5, 1),
        "float64": torch.tensor([3.141592653589793, -2.718281828459045], dtype=torch.float64),
        "int8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "uint8": torch.tensor([0, 1, 255], dtype=torch.uint8),
        "int16": torch.tensor([-32768, 32767], dtype=torch.int16),
        "uint16": torch.tensor([0, 65535], dtype=torch.uint16),
        "int32": torch.tensor([-(2 ** 31), 2 ** 31 - 1], dtype=torch.int32),
        "uint32": torch.tensor([0, 2 ** 32 - 1], dtype=torch.uint32),
        "int64": torch.tensor([-(2 ** 63), 2 ** 63 - 1], dtype=torch.int64),
        "uint64": torch.tensor([0, 2 ** 64 - 1], dtype=torch.uint64),
        "bool": torch.tensor([True, False, True]),
        "complex64": torch.tensor([1 + 2j, -3.5j], dtype=torch.complex64),
        "complex128": torch.tensor([[0.25 - 1j]], dtype=torch.complex128),
        "complex32": torch.tensor([1.0, 2.0, -0.5, 4.0], dtype=torch.float16).view(
            torch.complex32),
        "float4_e2m1fn_x2": torch.tensor([0x12, 0xF0], dtype=torch.uint8).view(
            torch.float4_e2m1fn_x2),
        "scalar": torch.tensor(7, dtype=torch.int32),
        "empty": torch.zeros(0, 3, dtype=torch.float32),
        "view": f[1, 1:3],  # stored as its two elements, not the whole storage
        "transposed": f.t(),  # stored contiguous
    }
    fp8 = torch.tensor([0.5, -1.0, 2.0, 0.0])
    for name in ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
                 "float8_e8m0fnu"):
        dt = getattr(torch, name, None)
        if dt is not None:
            sd[name] = fp8.abs().clamp(min=0.25).to(dt) if name.endswith("e8m0fnu") else fp8.to(dt)
    sd["tied"] = f  # an alias of "float32"
    return sd


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and bytes (NaN-safe, works for every dtype)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return bytes(_raw(a)) == bytes(_raw(b))


def _raw(t: torch.Tensor):
    from ckpt.torch.tensors import tensor_bytes

    return tensor_bytes(t)


# -- hostile cases --------------------------------------------------------------------------

def read_index_doc(directory: str) -> dict:
    with open(os.path.join(directory, INDEX_FILE), "rb") as f:
        return json.loads(f.read()[HEADER_SIZE:])


def write_raw_index(directory: str, body: bytes, *, major: int = 1, minor: int = 0,
                    flags: int = 0, length: int | None = None) -> None:
    """An index file with a correct header around any body (so the body's rules are hit)."""
    length = len(body) if length is None else length
    head = struct.pack("<8sHHIQI", MAGIC, major, minor, flags, length, _crc32(body))
    with open(os.path.join(directory, INDEX_FILE), "wb") as f:
        f.write(head + struct.pack("<I", _crc32(head)) + body)


def rewrite_index(directory: str, edit: Callable[[dict], None], **header) -> None:
    """Apply edit(doc) to the index JSON and write it back with valid checksums."""
    doc = read_index_doc(directory)
    edit(doc)
    write_raw_index(directory, json.dumps(doc).encode("utf-8"), **header)


def _patch(directory: str, name: str, offset: int, data: bytes) -> None:
    with open(os.path.join(directory, name), "r+b") as f:
        f.seek(offset)
        f.write(data)


def _resize(directory: str, name: str, delta: int) -> None:
    path = os.path.join(directory, name)
    os.truncate(path, os.path.getsize(path) + delta)


def _t(i: int, key: str, value) -> Callable[[dict], None]:
    def edit(doc):
        doc["tensors"][i][key] = value
    return edit


def _p(i: int, key: str, value) -> Callable[[dict], None]:
    def edit(doc):
        doc["partitions"][i][key] = value
    return edit


def _doc(fn) -> Callable[[str], None]:
    return lambda d: rewrite_index(d, fn)


def _raw_body(body: bytes) -> Callable[[str], None]:
    return lambda d: write_raw_index(d, body)


def hostile_cases() -> list[tuple[str, type, Callable[[str], None]]]:
    """(name, expected error, mutate(dir)) for every class of bad input the spec names."""
    deep = b"[" * 100_000 + b"]" * 100_000
    P = "part-00000.bin"
    return [
        ("bad_magic", E.BadMagicError, lambda d: _patch(d, INDEX_FILE, 0, b"PK\x03\x04")),
        ("empty_index", E.BadMagicError,
         lambda d: open(os.path.join(d, INDEX_FILE), "wb").close()),
        ("short_header", E.IndexTooLargeError,
         lambda d: os.truncate(os.path.join(d, INDEX_FILE), 20)),
        ("major_version_2", E.UnsupportedVersionError,
         lambda d: rewrite_index(d, lambda doc: None, major=2)),
        ("flags_set", E.UnsupportedVersionError,
         lambda d: rewrite_index(d, lambda doc: None, flags=1)),
        ("header_crc", E.IndexDecodeError, lambda d: _patch(d, INDEX_FILE, 10, b"\x07")),
        ("index_crc", E.IndexDecodeError, lambda d: _patch(d, INDEX_FILE, HEADER_SIZE + 2,
                                                            b"Z")),
        ("huge_index_length", E.IndexTooLargeError,
         lambda d: rewrite_index(d, lambda doc: None, length=1 << 40)),
        ("index_truncated", E.IndexTooLargeError, lambda d: _resize(d, INDEX_FILE, -5)),
        ("index_extended", E.IndexTooLargeError, lambda d: _resize(d, INDEX_FILE, 3)),
        ("not_json", E.IndexDecodeError, _raw_body(b"\x00garbage{")),
        ("not_utf8", E.IndexDecodeError, _raw_body(b'{"a":"\xff\xfe"}')),
        ("deeply_nested", E.IndexDecodeError, _raw_body(deep)),
        ("duplicate_key", E.IndexDecodeError, _raw_body(b'{"alignment":256,"alignment":256}')),
        ("float_number", E.IndexDecodeError, _raw_body(b'{"alignment":256.0}')),
        ("long_integer", E.IndexDecodeError, _raw_body(b'{"alignment":' + b"9" * 40 + b"}")),
        ("not_an_object", E.SchemaError, _raw_body(b"[1,2,3]")),
        ("missing_key", E.SchemaError, _doc(lambda doc: doc.pop("aliases"))),
        ("unknown_key", E.SchemaError, _doc(lambda doc: doc.update(extra=1))),
        ("shape_not_list", E.SchemaError, _doc(_t(0, "shape", "3x4"))),
        ("bool_as_int", E.SchemaError, _doc(_t(0, "offset", False))),
        ("negative_offset", E.SchemaError, _doc(_t(1, "offset", -256))),
        ("empty_name", E.SchemaError, _doc(_t(0, "name", ""))),
        ("long_name", E.SchemaError, _doc(_t(0, "name", "x" * 2000))),
        ("duplicate_name", E.SchemaError, _doc(_t(1, "name", "float32"))),
        ("unknown_dtype", E.UnsupportedDtypeError, _doc(_t(0, "dtype", "float128"))),
        ("negative_shape", E.ShapeError, _doc(_t(0, "shape", [-3, -4]))),
        ("shape_overflow", E.ShapeError, _doc(_t(0, "shape", [1 << 40, 1 << 40, 1 << 40]))),
        ("too_many_dims", E.ShapeError, _doc(_t(0, "shape", [1] * 65))),
        ("wrong_length", E.LengthMismatchError, _doc(_t(0, "length", 47))),
        ("wrong_shape_for_length", E.LengthMismatchError, _doc(_t(0, "shape", [4, 4]))),
        ("overlapping_offsets", E.LayoutError, _doc(_t(1, "offset", 0))),
        ("misaligned_offset", E.LayoutError, _doc(_t(1, "offset", 260))),
        ("gap_offset", E.LayoutError, _doc(_t(1, "offset", 512))),
        ("offset_out_of_range", E.LayoutError, _doc(_t(1, "offset", 1 << 50))),
        ("partition_out_of_range", E.LayoutError, _doc(_t(0, "partition", 99))),
        ("partition_order", E.LayoutError, _doc(lambda doc: doc["tensors"].reverse())),
        ("alignment_not_power_of_two", E.LayoutError, _doc(lambda doc: doc.update(
            alignment=300))),
        ("chunk_size_zero", E.LayoutError, _doc(lambda doc: doc.update(chunk_size=0))),
        ("partition_size_unaligned", E.LayoutError, _doc(_p(0, "size", 4000))),
        ("partition_size_too_big", E.LayoutError, _doc(_p(0, "size", 1 << 20))),
        ("checksum_count", E.LayoutError, _doc(lambda doc: doc["partitions"][0]["crc32"].append(
            0))),
        ("checksum_range", E.SchemaError, _doc(lambda doc: doc["partitions"][0]["crc32"].insert(
            0, 1 << 33) or doc["partitions"][0]["crc32"].pop())),
        ("path_traversal", E.PartitionNameError, _doc(_p(0, "file", "../evil.bin"))),
        ("absolute_path", E.PartitionNameError, _doc(_p(0, "file", "/etc/passwd"))),
        ("hidden_name", E.PartitionNameError, _doc(_p(0, "file", ".hidden"))),
        ("index_as_partition", E.PartitionNameError, _doc(_p(0, "file", INDEX_FILE))),
        ("duplicate_partition", E.PartitionNameError, _doc(_p(1, "file", P))),
        ("empty_partition", E.LayoutError, _doc(lambda doc: doc["partitions"].append(
            {"file": "part-99999.bin", "size": 0, "crc32": []}))),
        ("alias_missing_target", E.AliasError, _doc(lambda doc: doc["aliases"].update(
            x="nope"))),
        ("alias_chain", E.AliasError, _doc(lambda doc: doc["aliases"].update(x="tied"))),
        ("alias_collides", E.AliasError, _doc(lambda doc: doc["aliases"].update(
            float16="float32"))),
        ("metadata_not_string", E.SchemaError, _doc(lambda doc: doc["metadata"].update(
            k=1))),
        ("partition_truncated", E.PartitionSizeError, lambda d: _resize(d, P, -4096)),
        ("partition_extended", E.PartitionSizeError, lambda d: _resize(d, P, 1)),
        ("partition_missing", E.MissingPartitionError, lambda d: os.unlink(os.path.join(d, P))),
        ("partition_symlink", E.MissingPartitionError, _symlink_partition),
        ("partition_fifo", E.MissingPartitionError, _fifo_partition),
        ("index_fifo", E.NotACheckpointError, _fifo_index),
        ("no_index", E.NotACheckpointError, lambda d: os.unlink(os.path.join(d, INDEX_FILE))),
        ("corrupted_data", E.ChecksumError, lambda d: _flip(d, P, 5)),
        ("corrupted_padding", E.ChecksumError, lambda d: _flip(d, P, 4095)),
    ]


def _flip(directory: str, name: str, offset: int) -> None:
    with open(os.path.join(directory, name), "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))


def _symlink_partition(directory: str) -> None:
    path = os.path.join(directory, "part-00000.bin")
    shutil.move(path, path + ".real")
    os.symlink(path + ".real", path)


def _fifo_partition(directory: str) -> None:
    path = os.path.join(directory, "part-00000.bin")
    os.unlink(path)
    os.mkfifo(path)


def _fifo_index(directory: str) -> None:
    path = os.path.join(directory, INDEX_FILE)
    os.unlink(path)
    os.mkfifo(path)


def main(argv: list[str]) -> int:
    from ckpt.torch.tensors import save

    if len(argv) != 2 or argv[0] not in ("golden", "hostile"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "golden":
        save(golden_state_dict(), argv[1], **GOLDEN_OPTIONS)
        return 0
    os.makedirs(argv[1], exist_ok=True)
    base = os.path.join(argv[1], "_valid")
    save(golden_state_dict(), base, **GOLDEN_OPTIONS)
    for name, _, mutate in hostile_cases():
        shutil.copytree(base, os.path.join(argv[1], name))
        mutate(os.path.join(argv[1], name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
