"""Convert safetensors files (single or sharded), torch .pt/.bin files and Hugging Face model
directories into checkpoints, streaming: one tensor (safetensors: one 8 MiB piece) at a time.

torch files are read with torch.load(weights_only=True), which refuses to run pickled code,
and mmap=True where the file allows, so tensors are paged in as they are written out.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping

from ckpt.errors import ConvertError
from ckpt.format import Index
from ckpt.safetensors import SafetensorsFile
from ckpt.writer import Writer

__all__ = ["convert", "detect"]

_SHARD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}\Z")
_HF_FILES = ("model.safetensors.index.json", "model.safetensors",
             "pytorch_model.bin.index.json", "pytorch_model.bin")
MAX_CONFIG = 1 << 20


def detect(src: str) -> tuple[str, list[str]]:
    """(kind, files) of a source: kind is "safetensors" or "torch"; files in write order."""
    if os.path.isdir(src):
        for name in _HF_FILES:
            if os.path.isfile(os.path.join(src, name)):
                return detect(os.path.join(src, name))
        raise ConvertError(f"{src}: no {' or '.join(_HF_FILES)} in this directory")
    if not os.path.isfile(src):
        raise ConvertError(f"{src}: no such file")
    if src.endswith(".json"):
        return _sharded(src)
    with open(src, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04" or head[:2] == b"\x80\x02" or src.endswith((".pt", ".pth",
                                                                            ".bin")):
        return "torch", [src]
    return "safetensors", [src]


def _sharded(index_path: str) -> tuple[str, list[str]]:
    try:
        with open(index_path, "rb") as f:
            doc = json.loads(f.read(64 << 20).decode("utf-8"))
        weight_map = doc["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError,
            RecursionError) as exc:
        raise ConvertError(f"{index_path}: not a shard index ({exc})") from None
    shards: list[str] = []
    for shard in weight_map.values():
        if not isinstance(shard, str) or not _SHARD_NAME.match(shard):
            raise ConvertError(f"{index_path}: unsafe shard file name {shard!r}")
        if shard not in shards:
            shards.append(shard)
    kind = "safetensors" if all(s.endswith(".safetensors") for s in shards) else "torch"
    return kind, [os.path.join(os.path.dirname(index_path), s) for s in shards]


def convert(src: str | os.PathLike, dst: str | os.PathLike, *,
            progress: Callable[[str], None] | None = None, **options) -> Index:
    """Convert src into a checkpoint directory at dst (atomically); returns its index.

    options go to Writer (alignment, chunk_size, partition_size). progress(name) is called
    after each tensor. A model directory's config.json is kept as metadata "hf_config".
    """
    src = os.fspath(src)
    kind, files = detect(src)
    metadata = {"source_format": kind}
    if os.path.isdir(src):
        config = os.path.join(src, "config.json")
        if os.path.isfile(config) and os.path.getsize(config) <= MAX_CONFIG:
            try:
                with open(config, encoding="utf-8") as f:
                    metadata["hf_config"] = json.dumps(json.load(f), sort_keys=True)
            except (ValueError, RecursionError, OSError) as exc:  # JSON and UTF-8 errors
                raise ConvertError(f"{config}: unreadable config.json ({exc})") from None
    with Writer(dst, metadata=metadata, **options) as writer:
        seen: set[str] = set()
        for path in files:
            if kind == "safetensors":
                _add_safetensors(writer, path, seen, progress)
            else:
                _add_torch(writer, path, seen, progress)
    return writer.index


def _claim(seen: set[str], name: str, path: str) -> None:
    if name in seen:
        raise ConvertError(f"{path}: tensor {name!r} appears in more than one shard")
    seen.add(name)


def _add_safetensors(writer: Writer, path: str, seen: set[str], progress) -> None:
    with SafetensorsFile(path) as st:
        for e in st.entries:
            _claim(seen, e.name, path)
            writer.add(e.name, e.dtype, e.shape, st.iter_bytes(e))
            if progress is not None:
                progress(e.name)


def _add_torch(writer: Writer, path: str, seen: set[str], progress) -> None:
    from ckpt.tensors import dtype_name, plan, tensor_bytes

    state = _state_dict(_torch_load(path), path)
    stored, aliases = plan(state)
    for name in stored:
        _claim(seen, name, path)
        t = state[name]
        writer.add(name, dtype_name(t.dtype), tuple(t.shape), tensor_bytes(t, name))
        if progress is not None:
            progress(name)
    for name, target in aliases.items():
        _claim(seen, name, path)
        writer.alias(name, target)


def _torch_load(path: str):

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):  # legacy (non-zip) files cannot be mapped: read them whole
            raise ConvertError(f"{path}: torch.load failed: {exc}") from None
    except Exception as exc:  # the weights-only unpickler fails in many ways on odd bytes
        raise ConvertError(f"{path}: refused or unreadable torch file ({exc!r})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's legacy reader fails in many ways on odd files
        raise ConvertError(f"{path}: refused or unreadable torch file ({exc})") from None


def _state_dict(obj, path: str) -> Mapping:
    import torch

    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping):
        raise ConvertError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ConvertError(f"{path}: entries that are not named tensors: {bad[:5]}")
    return obj

