"""Convert safetensors files (single or sharded), torch .pt/.bin files and Hugging Face model
directories into checkpoints, streaming: one tensor (safetensors: one 8 MiB piece) at a time.

A source is recognised by its content, never by its name (detect/_sniff): safetensors (u64
header length, then '{'), torch zip archives (a zip with a data.pkl), legacy torch files
(pickle protocol 2-5) and JSON shard indexes; anything else is refused as "not a recognised
format". READERS maps each kind to its reader: safetensors.py (bounded, no torch) and
torchfile.py (torch.load(weights_only=True), imported only for torch files).
"""

from __future__ import annotations

import json
import os
import re
import struct
import zipfile
from collections.abc import Callable, Mapping

from ckpt.convert.safetensors import MAX_HEADER, SafetensorsFile
from ckpt.errors import ConvertError
from ckpt.format import Index
from ckpt.writer import Writer

__all__ = ["convert", "detect"]

_SHARD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}\Z")
_HF_FILES = ("model.safetensors.index.json", "model.safetensors",
             "pytorch_model.bin.index.json", "pytorch_model.bin")
MAX_CONFIG = 1 << 20


def detect(src: str) -> tuple[str, list[str]]:
    """(kind, files) of a source recognised by its content: kind is "safetensors" or "torch";
    files in write order. ConvertError naming the source when it is no format we read."""
    if os.path.isdir(src):
        return detect(_weights_in(src))
    kind = _sniff(src)
    if kind == "index":
        return _sharded(src)
    return kind, [src]


def _sniff(path: str) -> str:
    """"safetensors", "torch" or "index" (a JSON shard index), from the bytes of path."""
    if not os.path.isfile(path):
        raise ConvertError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            if len(head) > 8 and head[8:9] == b"{":  # u64 header length, then the JSON header
                (n,) = struct.unpack("<Q", head[:8])
                if 2 <= n <= MAX_HEADER:
                    return "safetensors"
            if head[:4] == b"PK\x03\x04" and _holds_data_pkl(f):  # torch.save's zip archive
                return "torch"
    except OSError as exc:
        raise ConvertError(f"{path}: cannot read ({exc.strerror})") from None
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch"  # a legacy (pre-zip) torch file: pickle protocol 2 to 5
    if head.lstrip(b" \t\r\n\xef\xbb\xbf")[:1] == b"{":
        return "index"
    seen = f"starts with {head[:8]!r}" if head else "an empty file"
    raise ConvertError(f"{path}: not a recognised format ({seen}; expected safetensors, a torch "
                       f".pt/.bin file or a shard index .json)")


def _holds_data_pkl(f) -> bool:
    try:
        names = zipfile.ZipFile(f).namelist()
    except Exception:  # noqa: BLE001 - zipfile fails in many ways on damaged archives
        return False
    return any(n == "data.pkl" or n.endswith("/data.pkl") for n in names)


def _weights_in(directory: str) -> str:
    """The file naming a model directory's weights: a standard Hugging Face name, else the one
    shard index, .safetensors file or torch file in it."""
    for name in _HF_FILES:
        if os.path.isfile(os.path.join(directory, name)):
            return os.path.join(directory, name)
    names = sorted(os.listdir(directory))
    for suffixes in ((".safetensors.index.json", ".bin.index.json"), (".safetensors",),
                     (".bin", ".pt", ".pth")):
        found = [n for n in names if n.endswith(suffixes)
                 and os.path.isfile(os.path.join(directory, n))]
        if len(found) == 1:
            return os.path.join(directory, found[0])
        if found:
            raise ConvertError(f"{directory}: several weight files {found[:4]} and no shard "
                               f"index; convert one file or add a shard index")
    raise ConvertError(f"{directory}: not a recognised format (no {', '.join(_HF_FILES)}, shard "
                       f"index, .safetensors or .bin file in this directory)")


def _sharded(index_path: str) -> tuple[str, list[str]]:
    try:
        with open(index_path, "rb") as f:
            doc = json.loads(f.read(64 << 20).decode("utf-8-sig"))
        weight_map = doc["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError,
            RecursionError) as exc:
        raise ConvertError(f"{index_path}: not a recognised format (starts like JSON but "
                           f"is no shard index: {exc!r})") from None
    shards: list[str] = []
    for shard in weight_map.values():
        if not isinstance(shard, str) or not _SHARD_NAME.match(shard):
            raise ConvertError(f"{index_path}: unsafe shard file name {shard!r}")
        if shard not in shards:
            shards.append(shard)
    files = [os.path.join(os.path.dirname(index_path), s) for s in shards]
    kinds = {path: _sniff(path) for path in files}
    if set(kinds.values()) - {"safetensors", "torch"} or len(set(kinds.values())) > 1:
        raise ConvertError(f"{index_path}: shards must all be safetensors or all torch files, "
                           f"got {sorted(set(kinds.values()))}")
    return next(iter(kinds.values()), "safetensors"), files


def convert(src: str | os.PathLike, dst: str | os.PathLike, *,
            progress: Callable[[str], None] | None = None,
            metadata: Mapping[str, str] | None = None, **options) -> Index:
    """Convert src into a checkpoint directory at dst (atomically); returns its index.

    options go to Writer (alignment, chunk_size, partition_size). progress(name) is called
    after each tensor. A model directory's config.json is kept as metadata "hf_config";
    metadata (str -> str) is added to the index's metadata and wins over those two keys.
    """
    src = os.fspath(src)
    kind, files = detect(src)
    meta = {"source_format": kind}
    if os.path.isdir(src):
        config = os.path.join(src, "config.json")
        if os.path.isfile(config) and os.path.getsize(config) <= MAX_CONFIG:
            try:
                with open(config, encoding="utf-8") as f:
                    meta["hf_config"] = json.dumps(json.load(f), sort_keys=True)
            except (ValueError, RecursionError, OSError) as exc:  # JSON and UTF-8 errors
                raise ConvertError(f"{config}: unreadable config.json ({exc})") from None
    meta.update(metadata or {})
    with Writer(dst, metadata=meta, **options) as writer:
        seen: set[str] = set()
        for path in files:
            READERS[kind](writer, path, seen, _claim, progress)
    return writer.index


def _claim(seen: set[str], name: str, path: str) -> None:
    if name in seen:
        raise ConvertError(f"{path}: tensor {name!r} appears in more than one shard")
    seen.add(name)


def _add_safetensors(writer: Writer, path: str, seen: set[str], claim, progress) -> None:
    with SafetensorsFile(path) as st:
        for e in st.entries:
            claim(seen, e.name, path)
            writer.add(e.name, e.dtype, e.shape, st.iter_bytes(e))
            if progress is not None:
                progress(e.name)


def _add_torch(writer: Writer, path: str, seen: set[str], claim, progress) -> None:
    from ckpt.convert.torchfile import add_torch_file  # torch only for torch files

    add_torch_file(writer, path, seen, claim, progress)


#: the format table: what detect() calls a source -> the reader that adds its tensors
READERS = {"safetensors": _add_safetensors, "torch": _add_torch}
