"""The download sink: chunks reach the local copy while the stream is still being read, and
nothing is published unless every byte arrived."""

import io
import os

import pytest
import torch

import ckpt
from ckpt.torch.loader import read_packed
from ckpt.unpack import Unpacker


class _Counting(io.BytesIO):
    pass


def _packed(tmp_path) -> bytes:
    sd = {f"w{i}": torch.full((64, 64), float(i)) for i in range(4)}
    ckpt.save(sd, tmp_path / "src", chunk_size=8192)
    out = io.BytesIO()
    ckpt.pack(tmp_path / "src", out)
    return out.getvalue()


def test_chunks_reach_the_copy_while_the_stream_is_read(tmp_path):
    stream = _Counting(_packed(tmp_path))
    seen = []

    class Sink(Unpacker):
        def chunk(self, partition, offset, view):
            seen.append(stream.tell())  # how far the download is when this chunk is handed on
            super().chunk(partition, offset, view)

    sink = Sink(tmp_path / "copy")
    index, buf = read_packed(stream, sink=sink)
    sink.commit()
    total = len(stream.getvalue())
    assert len(seen) == sum(len(p.crc32) for p in index.partitions) > 2
    assert seen[0] < total // 2 and seen == sorted(seen)  # overlapped, in stream order
    assert ckpt.verify(tmp_path / "copy").total_bytes == index.total_bytes
    assert bytes(buf) == b"".join((tmp_path / "copy" / p.file).read_bytes()
                                  for p in index.partitions)


def test_an_incomplete_copy_is_never_published(tmp_path):
    data = _packed(tmp_path)
    sink = Unpacker(tmp_path / "copy")
    with pytest.raises(ckpt.PartitionSizeError):
        read_packed(io.BytesIO(data[:len(data) - 4096]), sink=sink)
    with pytest.raises(ckpt.PartitionSizeError, match="arrived"):
        sink.commit()
    assert os.listdir(tmp_path) == ["src"]


def test_abort_removes_the_temporary_directory(tmp_path):
    with Unpacker(tmp_path / "copy") as sink:
        read_packed(io.BytesIO(_packed(tmp_path)), sink=sink)
    assert os.listdir(tmp_path) == ["src"]  # never committed: nothing at copy
