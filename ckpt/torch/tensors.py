"""The torch adapter: dtype names, tensors to bytes for the writer, one buffer to tensor views.

Everything torch-specific about the format lives here (and in modules.py / cuda.py): the core
(format, writer, reader) moves bytes only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import numpy as np
import torch

from ckpt.errors import CheckpointError, SchemaError, UnsupportedDtypeError
from ckpt.format import DTYPES, Index
from ckpt.writer import Writer

__all__ = ["dtype_name", "plan", "save", "tensor_bytes", "torch_dtype", "views"]


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype for a format dtype name (UnsupportedDtypeError if this torch lacks it)."""
    dt = getattr(torch, name, None) if name in DTYPES else None
    if not isinstance(dt, torch.dtype):
        raise UnsupportedDtypeError(f"dtype {name!r} is not available in torch "
                                    f"{torch.__version__}")
    return dt


def dtype_name(dt: torch.dtype) -> str:
    """The format's name for a torch dtype (quantized and sub-byte dtypes are refused)."""
    name = str(dt).removeprefix("torch.")
    if name not in DTYPES or getattr(torch, name, None) is not dt:
        raise UnsupportedDtypeError(f"dtype {dt} cannot be stored (see docs/FORMAT.md, dtypes)")
    return name


def tensor_bytes(t: torch.Tensor, name: str = "tensor") -> np.ndarray:
    """The tensor's own elements in C order as a uint8 numpy array, copying only if needed.

    A view yields its elements only (never the rest of its storage); a non-contiguous,
    conjugated or GPU tensor is copied once, on its own, so saving never holds two copies of
    a whole model.
    """
    if not isinstance(t, torch.Tensor):
        raise SchemaError(f"{name!r} is a {type(t).__name__}, not a tensor")
    if t.layout != torch.strided or t.is_quantized:
        raise UnsupportedDtypeError(f"{name!r}: only dense tensors can be stored, got "
                                    f"{t.layout}{' quantized' if t.is_quantized else ''}")
    if t.device.type == "meta":
        raise CheckpointError(f"{name!r} is on the meta device: it has no data to save")
    dtype_name(t.dtype)
    t = t.detach()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    if t.is_complex():  # copy as real pairs: torch warns on copies of complex32 itself
        t = torch.view_as_real(t)
    t = t.contiguous()
    if t.device.type != "cpu":
        t = t.cpu()
    flat = t.reshape(-1)
    if flat.numel() <= 1 and flat.stride(0) != 1:  # empty or single views may keep any stride
        flat = flat.as_strided((flat.numel(),), (1,))
    return flat.view(torch.uint8).numpy()


def _identity(t: torch.Tensor):
    """What makes two tensors the same tensor: same memory, same view, same type."""
    if t.layout != torch.strided or t.device.type == "meta" or t.numel() == 0:
        return None
    # x.conj() and x._neg_view() share x's memory but read other values: not aliases
    return (str(t.device), t.untyped_storage().data_ptr(), t.storage_offset(),
            tuple(t.shape), tuple(t.stride()), t.dtype, t.is_conj(), t.is_neg())


def plan(state_dict: Mapping[str, torch.Tensor]) -> tuple[list[str], dict[str, str]]:
    """(names to store in order, aliases): a tensor identical to an earlier one is an alias.

    Only exact identity makes an alias (tied weights); a view of part of another tensor is
    stored as its own elements.
    """
    stored: list[str] = []
    aliases: dict[str, str] = {}
    first: dict = {}
    for name, t in state_dict.items():
        key = _identity(t) if isinstance(t, torch.Tensor) else None
        if key is not None and key in first:
            aliases[name] = first[key]
            continue
        if key is not None:
            first[key] = name
        stored.append(name)
    return stored, aliases


def save(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike, *,
         metadata: Mapping[str, str] | None = None, progress: Callable | None = None,
         **options) -> Index:
    """Save a state dict as a checkpoint directory at path, atomically; returns its index.

    Tensors are stored in the mapping's order (the load order). options: alignment,
    chunk_size, partition_size, wait, ns (see Writer). progress(done_bytes, total_bytes) after each
    tensor.
    """
    if not isinstance(state_dict, Mapping):
        raise SchemaError(f"save takes a mapping of names to tensors, got "
                          f"{type(state_dict).__name__}")
    stored, aliases = plan(state_dict)
    total = sum(_nbytes(state_dict[n]) for n in stored)
    with Writer(path, metadata=dict(metadata or {}), **options) as writer:
        done = 0
        for name in stored:
            t = state_dict[name]
            data = tensor_bytes(t, name)
            writer.add(name, dtype_name(t.dtype), tuple(t.shape), data)
            done += data.nbytes
            del data
            if progress is not None:
                progress(done, total)
        for name, target in aliases.items():
            writer.alias(name, target)
    return writer.index


def views(index: Index, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Tensors for every name of the index as views of `flat` (all partitions back to back).

    Aliases map to the very same tensor object as their target.
    """
    bases = index.partition_bases()
    out: dict[str, torch.Tensor] = {}
    for t in index.tensors:
        start = bases[t.partition] + t.offset
        piece = flat[start:start + t.length].view(torch_dtype(t.dtype))
        out[t.name] = piece.view(t.shape)
    for alias, target in index.aliases.items():
        out[alias] = out[target]
    return out


def _nbytes(t) -> int:
    return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0
