"""The index format: header, encode/decode, every validation rule, dtypes, golden files."""

import json
import os
import struct
import zlib

import pytest
import torch

import ckpt
from bas import crc32 as _crc32
from ckpt import errors as E
from ckpt.format import (
    DTYPES,
    HEADER_SIZE,
    MAGIC,
    MAX_INDEX_BYTES,
    VERSION,
    Index,
    Partition,
    TensorEntry,
    decode_header,
)
from ckpt.testing import GOLDEN_OPTIONS, golden_state_dict, same

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "data", "golden", "tiny.ckpt")


def _index(**over) -> Index:
    fields = dict(
        alignment=256, chunk_size=4096,
        partitions=(Partition("part-00000.bin", 4096, (0,)),),
        tensors=(TensorEntry("a", "float32", (2, 3), 0, 0, 24),
                 TensorEntry("b", "bool", (), 0, 256, 1)),
        aliases={"c": "a"}, metadata={"k": "v"})
    fields.update(over)
    return Index(**fields)


def test_encode_decode_round_trip():
    index = _index()
    data = index.encode()
    assert data[:8] == MAGIC
    assert struct.unpack_from("<HH", data, 8) == VERSION
    assert Index.decode(data) == index
    assert index.names() == ["a", "b", "c"]


def test_encoding_is_deterministic_compact_json():
    data = _index().encode()
    body = data[HEADER_SIZE:]
    assert b" " not in body
    assert json.loads(body)["tensors"][0] == {"name": "a", "dtype": "float32", "shape": [2, 3],
                                              "partition": 0, "offset": 0, "length": 24}
    assert _index().encode() == data


def test_crc32_is_zlib_crc32():
    data = bytes(range(256)) * 17
    assert _crc32(data) == zlib.crc32(data)
    assert _crc32(data[100:], _crc32(data[:100])) == zlib.crc32(data)


def test_header_checks_cap_before_reading_the_index():
    head = _index().encode()[:HEADER_SIZE]
    assert decode_header(head)[1] == len(_index().encode()) - HEADER_SIZE
    big = struct.pack("<8sHHIQI", MAGIC, 1, 0, 0, MAX_INDEX_BYTES + 1, 0)
    big += struct.pack("<I", _crc32(big))
    with pytest.raises(E.IndexTooLargeError, match="cap"):
        decode_header(big)


def test_newer_minor_version_ignores_unknown_keys_older_rejects_them():
    doc = json.loads(_index().encode()[HEADER_SIZE:])
    doc["future"] = {"x": 1}
    doc["tensors"][0]["future"] = 1
    body = json.dumps(doc).encode()
    for minor, ok in ((VERSION[1] + 1, True), (VERSION[1], False)):
        head = struct.pack("<8sHHIQI", MAGIC, 1, minor, 0, len(body), _crc32(body))
        data = head + struct.pack("<I", _crc32(head)) + body
        if ok:
            assert Index.decode(data).tensors[0].name == "a"
        else:
            with pytest.raises(E.SchemaError, match="unknown keys"):
                Index.decode(data)


@pytest.mark.parametrize("over, error", [
    (dict(alignment=128), E.LayoutError),
    (dict(chunk_size=5000), E.LayoutError),
    (dict(tensors=(TensorEntry("a", "float32", (2, 3), 0, 0, 25),)), E.LengthMismatchError),
    (dict(tensors=(TensorEntry("a", "float99", (2,), 0, 0, 8),)), E.UnsupportedDtypeError),
    (dict(tensors=(TensorEntry("a", "uint8", (-1,), 0, 0, 0),)), E.ShapeError),
    (dict(tensors=(TensorEntry("a", "uint8", (5000,), 0, 0, 5000),)), E.LayoutError),
    (dict(aliases={"a": "b"}), E.AliasError),
    (dict(aliases={"c": "c2"}), E.AliasError),
    (dict(partitions=(Partition("a/b", 4096, (0,)),)), E.PartitionNameError),
])
def test_validation_rejects(over, error):
    with pytest.raises(error):
        _index(**over).validate()


def test_empty_checkpoint_is_valid():
    index = Index(partitions=(), tensors=())
    assert Index.decode(index.encode()).total_bytes == 0


def test_dtype_table_matches_torch_item_sizes():
    for name, size in DTYPES.items():
        dt = getattr(torch, name, None)
        if dt is not None:
            assert dt.itemsize == size, name
    for name in ("bool", "float8_e4m3fn", "float8_e5m2", "uint16", "uint32", "uint64",
                 "complex64", "complex128", "bfloat16"):
        assert name in DTYPES


def test_dtype_names_refuse_quantized_and_sub_byte():
    from ckpt.torch.tensors import dtype_name

    for dt in (torch.qint8, torch.quint8, torch.uint4, torch.int2):
        with pytest.raises(E.UnsupportedDtypeError):
            dtype_name(dt)


# -- golden files: a committed checkpoint pins the format ----------------------------------

def test_golden_checkpoint_loads_to_values_built_in_code():
    expected = golden_state_dict()
    loaded = ckpt.load(GOLDEN)
    assert set(loaded) == set(expected)
    for name, t in expected.items():
        assert same(loaded[name], t), name
    assert loaded["tied"] is loaded["float32"]


def test_writer_reproduces_the_golden_bytes(tmp_path):
    ckpt.save(golden_state_dict(), tmp_path / "g", **GOLDEN_OPTIONS)
    names = sorted(os.listdir(GOLDEN))
    assert sorted(os.listdir(tmp_path / "g")) == names
    for name in names:
        with open(os.path.join(GOLDEN, name), "rb") as a, open(tmp_path / "g" / name, "rb") as b:
            assert a.read() == b.read(), f"{name} changed: a format change needs a new version"


def test_golden_header_bytes():
    with open(os.path.join(GOLDEN, "index.ckpt"), "rb") as f:
        head = f.read(HEADER_SIZE)
    assert head[:12] == b"BASCKPT\x00\x01\x00\x00\x00"
    index = ckpt.read_index(GOLDEN)
    assert (index.alignment, index.chunk_size, len(index.partitions)) == (256, 4096, 2)
