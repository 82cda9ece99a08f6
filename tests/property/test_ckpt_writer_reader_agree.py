"""The writer accepts exactly what the reader accepts (one validator), and a refused save
never costs the checkpoint that was there before."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ckpt
from ckpt.crc import crc32
from ckpt.errors import CheckpointError, FormatError, SchemaError, ShapeError
from ckpt.format import (
    BLOCK,
    DTYPES,
    HEADER_SIZE,
    MAX_BYTES,
    Index,
    Partition,
    TensorEntry,
    align_up,
    encode_header,
)

_CHUNK = 1 << 20

json_scalars = st.one_of(st.text(max_size=8), st.integers(-3, 3), st.floats(allow_nan=True),
                         st.booleans(), st.none())
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=6)
# names and text: mostly valid (so that "both accept" is exercised as much as "both refuse"),
# sometimes with lone surrogates or far too long
_valid_text = st.text(min_size=1, max_size=12)
texts = st.one_of(_valid_text, _valid_text, _valid_text, _valid_text,
                  st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=3),
                  st.text(alphabet="ab", min_size=1020, max_size=1030))
_valid_dim = st.integers(0, 4)
dims = st.one_of(_valid_dim, _valid_dim, _valid_dim, _valid_dim, _valid_dim,
                 st.sampled_from([-1, MAX_BYTES + 1, 1 << 62]), st.booleans())
_valid_shape = st.lists(_valid_dim, max_size=4)
shapes = st.one_of(_valid_shape, _valid_shape, _valid_shape, st.lists(dims, max_size=4),
                   st.lists(st.integers(1, 1), min_size=63, max_size=66))


@st.composite
def indexes(draw):
    tensors, end = [], 0
    names = draw(st.lists(texts, min_size=1, max_size=3))
    for name in names:
        dtype = draw(st.one_of(st.sampled_from(sorted(DTYPES)), st.just("float48")))
        shape = tuple(draw(shapes))
        numel = math.prod(int(d) for d in shape)
        length = numel * DTYPES.get(dtype, 1) if 0 <= numel <= 1 << 20 else 0
        offset = align_up(end, 4096)
        tensors.append(TensorEntry(name, dtype, shape, 0, offset, length))
        end = offset + length
    size = align_up(end, BLOCK)
    crcs = tuple([0] * -(-size // _CHUNK))
    key = st.one_of(texts, texts, texts, st.integers(0, 3))
    metadata = draw(st.one_of(
        st.dictionaries(texts, _valid_text, max_size=3),
        st.dictionaries(key, st.one_of(texts, texts, json_values), max_size=3)))
    aliases = draw(st.one_of(st.just({}),
                             st.dictionaries(texts, st.sampled_from(names), max_size=2)))
    return Index(4096, _CHUNK, (Partition("part-00000.bin", size, crcs),), tuple(tensors),
                 aliases, metadata)


def _raw_bytes(index: Index) -> bytes:
    """The index as a careless writer would put it on disk: any JSON value, ASCII escapes."""
    doc = {
        "alignment": index.alignment, "chunk_size": index.chunk_size,
        "partitions": [{"file": p.file, "size": p.size, "crc32": list(p.crc32)}
                       for p in index.partitions],
        "tensors": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape),
                     "partition": t.partition, "offset": t.offset, "length": t.length}
                    for t in index.tensors],
        "aliases": index.aliases, "metadata": index.metadata,
    }
    body = json.dumps(doc, separators=(",", ":")).encode("ascii")  # int keys become strings
    return encode_header(len(body), crc32(body)) + body


def _reader_accepts(index: Index) -> bool:
    try:
        Index.decode(_raw_bytes(index))
    except FormatError:
        return False
    return True


def _json_changed_it(index: Index) -> bool:
    """The careless encoding handed the reader another index than the one the writer got
    (int keys become strings, an escaped surrogate pair becomes one character): the writer
    refuses such input, the reader accepts what it actually received."""
    try:
        return Index.decode(_raw_bytes(index)) != index
    except FormatError:
        return False


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(indexes())
def test_writer_accepts_exactly_what_the_reader_accepts(index):
    try:
        written = index.encode()
        writer_ok = True
    except FormatError:
        writer_ok = False
    reader_ok = _reader_accepts(index)
    assert writer_ok == reader_ok or _json_changed_it(index)
    if writer_ok:
        assert Index.decode(written) == index
        assert len(written) >= HEADER_SIZE




@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(index=indexes())
def test_save_publishes_exactly_what_load_accepts(tmp_path_factory, index):
    """Through the real Writer: it refuses what the reader would refuse, and what it
    publishes loads back with the same names, shapes and metadata."""
    path = tmp_path_factory.mktemp("w") / "m.ckpt"
    try:
        with ckpt.Writer(path, alignment=index.alignment, chunk_size=index.chunk_size,
                         metadata=index.metadata) as w:
            for t in index.tensors:
                w.add(t.name, t.dtype, t.shape, bytes(t.length))
            for alias, target in index.aliases.items():
                w.alias(alias, target)
        writer_ok = True
    except CheckpointError:
        writer_ok = False
    reader_ok = _reader_accepts(index)
    assert writer_ok == reader_ok or (not writer_ok and _json_changed_it(index))
    if writer_ok:
        got = ckpt.read_index(path)  # the canonical layout the generator drew; real CRCs
        assert [(p.file, p.size) for p in got.partitions] == [
            (p.file, p.size) for p in index.partitions]
        assert (got.tensors, got.aliases, got.metadata) == (
            index.tensors, index.aliases, index.metadata)
        assert os.listdir(path.parent) == ["m.ckpt"]
    else:
        assert not os.path.exists(path)


def _sd(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(4, 8, generator=g), "b": torch.randn(8, generator=g)}


@pytest.mark.parametrize("metadata", [
    {"step": 5}, {"lr": 0.5}, {"done": True}, {"none": None}, {"list": ["a"]},
    {"dict": {"a": "b"}}, {5: "five"}, {"bad": "\ud800"}, {"\udfff": "x"},
], ids=["int", "float", "bool", "none", "list", "dict", "int-key", "surrogate-value",
        "surrogate-key"])
def test_bad_metadata_save_keeps_the_good_checkpoint(tmp_path, metadata):
    path = tmp_path / "m.ckpt"
    good = _sd(1)
    ckpt.save(good, path, metadata={"step": "4"})
    with pytest.raises(SchemaError):
        ckpt.save(_sd(2), path, metadata=metadata)
    loaded = ckpt.load(path)
    assert torch.equal(loaded["w"], good["w"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ckpt"]  # no leftovers


def test_65_dimension_tensor_is_refused_before_publish(tmp_path):
    path = tmp_path / "m.ckpt"
    good = _sd(1)
    ckpt.save(good, path)
    deep = torch.zeros((1,) * 65)
    with pytest.raises(ShapeError, match="65 dimensions"):
        ckpt.save({"deep": deep}, path)
    assert torch.equal(ckpt.load(path)["b"], good["b"])


def test_64_dimension_tensor_round_trips(tmp_path):
    deep = torch.arange(2, dtype=torch.float32).reshape((1,) * 63 + (2,))
    ckpt.save({"deep": deep}, tmp_path / "m.ckpt")
    assert torch.equal(ckpt.load(tmp_path / "m.ckpt")["deep"], deep)


def test_surrogate_tensor_name_is_a_schema_error_not_unicode_error(tmp_path):
    with pytest.raises(SchemaError):
        ckpt.save({"w\ud800": torch.zeros(2)}, tmp_path / "m.ckpt")


def test_float_shape_dimension_is_refused(tmp_path):
    with ckpt.Writer(tmp_path / "m.ckpt") as w, pytest.raises(CheckpointError):
        w.add("x", "float32", (2.5,), np.zeros(2, np.float32))
