"""Mutation fuzzing: damaged checkpoints load exactly or fail with a CheckpointError, cheaply.

A small valid checkpoint is mutated thousands of times: raw byte flips, structural JSON edits
re-sealed with valid checksums (so they reach the validator, not just the CRC), header
fields, truncation and extension of the index and of partitions. Any other exception, or a
case that does more work than its bytes on disk justify (reads, read calls, memory), fails
the test with the seed that reproduces it.
"""

import copy
import json
import os
import random
import shutil
import struct

import pytest
import torch

import ckpt
from bas import crc32 as _crc32
from ckpt.convert.safetensors import SafetensorsFile
from ckpt.format import HEADER_SIZE, INDEX_FILE, MAGIC
from tests.workmeter import metered

CASES = int(os.environ.get("CKPT_FUZZ_CASES", "3000"))
VALUES = [-1, 0, 1, 3, 255, 256, 4096, 8191, 2 ** 31, 2 ** 32, 2 ** 60, 2 ** 63, 2 ** 70,
          "", "x", "../x", "part-00000.bin", "float32", "bool", "uint64", [], [0], [1] * 65,
          {}, {"a": 1}, None, True, False, 1.5]


def _base(directory: str) -> dict[str, bytes]:
    g = torch.Generator().manual_seed(0)
    sd = {"w": torch.randn(40, 30, generator=g), "b": torch.arange(7, dtype=torch.int16),
          "s": torch.tensor(2.5, dtype=torch.bfloat16), "e": torch.zeros(0, 2),
          "m": torch.tensor([True, False, True]), "f8": torch.ones(9).to(torch.float8_e5m2)}
    sd["t"] = sd["w"]
    ckpt.save(sd, directory, chunk_size=4096, partition_size=4096, alignment=256)
    files = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            files[name] = f.read()
    return files


def _seal(body: bytes, rng: random.Random) -> bytes:
    major, minor, flags = 1, 0, 0
    if rng.random() < 0.05:
        major, minor, flags = rng.choice([(0, 0, 0), (2, 0, 0), (1, 7, 0), (1, 0, 4)])
    head = struct.pack("<8sHHIQI", MAGIC, major, minor, flags, len(body), _crc32(body))
    return head + struct.pack("<I", _crc32(head)) + body


def _nodes(doc, path=()):
    yield path, doc
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(
        doc, list) else ()
    for key, value in items:
        yield from _nodes(value, (*path, key))


def _edit_json(index: bytes, rng: random.Random) -> bytes:
    doc = json.loads(index[HEADER_SIZE:])
    for _ in range(rng.randint(1, 3)):
        path, node = rng.choice(list(_nodes(doc)))
        if not path:
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        key, roll = path[-1], rng.random()
        if roll < 0.6:
            value = copy.deepcopy(rng.choice(VALUES))
            if isinstance(node, int) and not isinstance(node, bool) and rng.random() < 0.5:
                value = node + rng.choice([-4096, -256, -1, 1, 256, 4096])
            parent[key] = value
        elif roll < 0.75 and isinstance(parent, dict):
            del parent[key]
        elif roll < 0.85 and isinstance(parent, dict):
            parent[rng.choice(["extra", "name", "size"])] = copy.deepcopy(rng.choice(VALUES))
        elif isinstance(parent, list):
            j = rng.randrange(len(parent))
            action = rng.choice(["dup", "swap", "drop"])
            if action == "dup":
                parent.insert(j, copy.deepcopy(parent[key]))
            elif action == "swap":
                parent[key], parent[j] = parent[j], parent[key]
            else:
                del parent[key]
    return _seal(json.dumps(doc).encode(), rng)


def _flip(data: bytes, rng: random.Random, lo: int = 0) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if len(out) > lo:
            out[rng.randrange(lo, len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _resize(data: bytes, rng: random.Random) -> bytes:
    if rng.random() < 0.5 and data:
        return data[:rng.randrange(len(data))]
    return data + bytes(rng.randrange(256) for _ in range(rng.choice([1, 7, 4096])))


def _mutate(files: dict[str, bytes], rng: random.Random) -> dict[str, bytes]:
    parts = [n for n in files if n != INDEX_FILE]
    roll = rng.random()
    if roll < 0.45:
        return {INDEX_FILE: _edit_json(files[INDEX_FILE], rng)}
    if roll < 0.6:
        return {INDEX_FILE: _flip(files[INDEX_FILE], rng)}
    if roll < 0.7:
        return {INDEX_FILE: _resize(files[INDEX_FILE], rng)}
    name = rng.choice(parts)
    if roll < 0.85:
        return {name: _flip(files[name], rng)}
    return {name: _resize(files[name], rng)}


def test_mutated_checkpoints_load_or_fail_typed(tmp_path):
    directory = str(tmp_path / "m")
    files = _base(directory)
    ckpt.load(directory, threads=1)  # lazy imports are no case's work
    outcomes = {"loaded": 0}
    for seed in range(CASES):
        rng = random.Random(seed)
        changed = _mutate(files, rng)
        for name, data in changed.items():
            with open(os.path.join(directory, name), "wb") as f:
                f.write(data)
        sizes = [len(changed.get(name, data)) for name, data in files.items()]
        disk = sum(sizes)
        traced = seed % 10 == 0  # tracemalloc doubles a case's cost: heap on every tenth
        with metered(heap=traced) as work:
            try:
                out = ckpt.load(directory, threads=1)
                outcomes["loaded"] += 1
            except ckpt.CheckpointError as exc:
                outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
                out = None
            except Exception as exc:
                pytest.fail(f"seed {seed}: {type(exc).__name__}: {exc}")
        if out is not None:
            assert list(out) == ckpt.read_index(directory).names()
            del out
        # bounded by the bytes on disk, never by what a damaged index claims: every file
        # read at most twice, in block-sized or larger calls, and mapped at most twice
        limits = {"bytes_read": 2 * disk + 4096, "read_calls": 2 * (len(sizes) + disk // 4096)
                  + 8, "mapped": 2 * disk + 4096}
        if traced:
            limits["heap_peak"] = 8 * disk + (256 << 10)
        over = {k: getattr(work, k) for k, limit in limits.items() if getattr(work, k) > limit}
        assert not over, f"seed {seed}: {over} exceed {limits} ({disk} bytes on disk)"
        for name in changed:
            with open(os.path.join(directory, name), "wb") as f:
                f.write(files[name])
    assert len(outcomes) >= 8, outcomes  # the mutations reach many different checks


def test_mutated_safetensors_headers_parse_or_fail_typed(tmp_path):
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(3, 4), "b": torch.ones(2, dtype=torch.bfloat16),
               "c": torch.arange(5)}, tmp_path / "ok.safetensors")
    good = (tmp_path / "ok.safetensors").read_bytes()
    n = struct.unpack("<Q", good[:8])[0]
    path = tmp_path / "fuzz.safetensors"
    for seed in range(CASES // 6):
        rng = random.Random(seed)
        if rng.random() < 0.7:
            header = json.loads(good[8:8 + n])
            body = json.loads(_edit_json(_seal(json.dumps(header).encode(), rng),
                                         rng)[HEADER_SIZE:])
            raw = json.dumps(body).encode()
            data = struct.pack("<Q", len(raw)) + raw + good[8 + n:]
        else:
            data = _resize(_flip(good, rng), rng)
        path.write_bytes(data)
        try:
            with SafetensorsFile(path) as st:
                for e in st.entries:
                    assert sum(len(p) for p in st.iter_bytes(e)) == e.end - e.begin
        except ckpt.ConvertError:
            pass
        except Exception as exc:
            pytest.fail(f"seed {seed}: {type(exc).__name__}: {exc}")
    shutil.rmtree(tmp_path)
