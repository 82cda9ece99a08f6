"""The torch-file reader of ckpt.convert: torch.load(weights_only=True) (never runs pickled
code), mmap=True where the file allows, so tensors are paged in as they are written out."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ckpt.errors import ConvertError
from ckpt.torch.tensors import dtype_name, plan, tensor_bytes

__all__ = ["add_torch_file"]


def add_torch_file(writer, path: str, seen: set[str], claim, progress) -> None:
    """Add every tensor of a torch .pt/.bin file (aliases kept) to writer."""

    state = _state_dict(_torch_load(path), path)
    stored, aliases = plan(state)
    for name in stored:
        claim(seen, name, path)
        t = state[name]
        writer.add(name, dtype_name(t.dtype), tuple(t.shape), tensor_bytes(t, name))
        if progress is not None:
            progress(name)
    for name, target in aliases.items():
        claim(seen, name, path)
        writer.alias(name, target)


def _torch_load(path: str):
    if path.endswith(".safetensors"):  # torch.load picks its reader by this suffix, not content
        try:
            with open(path, "rb") as f:
                return torch.load(f, map_location="cpu", weights_only=True)
        except Exception as exc:  # the weights-only unpickler fails in many ways on odd bytes
            raise ConvertError(f"{path}: refused or unreadable torch file ({exc!r})") from None
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

