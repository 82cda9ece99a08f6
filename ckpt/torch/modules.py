"""Fill torch modules from a checkpoint without building their weights twice.

    with ckpt.init_empty():                 # parameters on meta, buffers real
        model = MyModel(config)
    ckpt.load_into(model, "model.ckpt")     # assign the loaded views, re-tie, move buffers

`init_empty` moves each parameter to the meta device as it is registered (so nothing is
initialised) while buffers stay real: non-persistent buffers (rotary frequencies, masks),
which a checkpoint never holds, are computed by the constructor as usual. A module built
entirely under `torch.device("meta")` loads too: a submodule whose non-persistent buffers
were lost is rebuilt from the config it keeps (transformers' convention) when it has one;
whatever stays on meta is named in the error, with how to build the module instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from contextlib import contextmanager

import torch
from torch import nn

from ckpt.errors import CheckpointError

__all__ = ["init_empty", "load_into", "load_transformers"]


@contextmanager
def init_empty():
    """Build modules with parameters on the meta device and buffers on the CPU."""
    register = nn.Module.register_parameter

    def register_on_meta(module, name, param):
        register(module, name, param)
        if param is not None and param.device.type != "meta":
            kind = type(module._parameters[name])
            module._parameters[name] = kind(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def _tied_groups(module: nn.Module) -> list[list[str]]:
    """Names of parameters that are one object (tied weights), first name first."""
    by_id: dict[int, list[str]] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), []).append(name)
    return [names for names in by_id.values() if len(names) > 1]


def _owner(module: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, leaf = name.rpartition(".")
    return (module.get_submodule(path) if path else module), leaf


def load_into(module: nn.Module, source, *, device: str | torch.device = "cpu",
              strict: bool = True, **load_options) -> nn.Module:
    """Give module the checkpoint's tensors (zero copy, assign semantics); returns module.

    source: a checkpoint path or an already loaded mapping of tensors. Tied parameters are
    tied again (a checkpoint may hold only one name of a tied group), real buffers move to
    device, and nothing may stay on the meta device. load_options go to ckpt.load.
    """
    from ckpt.torch.cuda import check_cuda

    device = check_cuda(device)  # no CUDA: one clear error before anything is read or moved
    if isinstance(source, Mapping):
        tensors = dict(source)
    else:
        from ckpt.torch.loader import load

        tensors = load(source, device, **load_options)
    groups = _tied_groups(module)
    for names in groups:
        present = [n for n in names if n in tensors]
        for n in names:
            if present and n not in tensors:
                tensors[n] = tensors[present[0]]
    module.load_state_dict(tensors, strict=strict, assign=True)
    for names in groups:  # assign=True wrapped each name in its own Parameter: re-tie
        first_owner, first_leaf = _owner(module, names[0])
        shared = first_owner._parameters[first_leaf]
        for n in names[1:]:
            owner, leaf = _owner(module, n)
            owner._parameters[leaf] = shared
    target = torch.device(device)
    _rebuild_buffers(module, target)
    for sub in module.modules():
        for name, buf in sub._buffers.items():
            if buf is not None and buf.device.type != "meta" and buf.device != target:
                sub._buffers[name] = buf.to(target)
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()]
            if t.device.type == "meta"]
    if left:
        raise CheckpointError(f"load_into: {len(left)} tensors are still on the meta device "
                              f"({', '.join(left[:5])}{', ...' if len(left) > 5 else ''}); "
                              f"they are not in the checkpoint (build the module under "
                              f"ckpt.init_empty() so non-persistent buffers are computed)")
    return module


def _rebuild_buffers(module: nn.Module, device: torch.device) -> None:
    """Recompute non-persistent buffers left on meta by a meta build, where possible.

    A submodule that keeps the config it was built from (transformers' rotary embeddings and
    the like) is built again from it on the CPU and its buffers are taken; any other keeps
    its meta buffers, which load_into then reports.
    """
    for sub in module.modules():
        lost = [n for n in sub._non_persistent_buffers_set
                if sub._buffers.get(n) is not None and sub._buffers[n].device.type == "meta"]
        config = getattr(sub, "config", None)
        if not lost or config is None:
            continue
        try:
            with torch.device("cpu"):
                fresh = type(sub)(config)
        except Exception:  # best effort: load_into names whatever stays on meta
            continue
        for name in lost:
            buf = fresh._buffers.get(name)
            if buf is not None and buf.device.type != "meta":
                sub._buffers[name] = buf.to(device)


def load_transformers(config, path: str | os.PathLike, *, device: str | torch.device = "cpu",
                      model_class=None, **load_options):
    """A ready transformers model (eval mode) from a config object and a checkpoint.

    config: a transformers PretrainedConfig built in code, or None to use the config saved
    in the checkpoint's metadata by `python -m ckpt convert` of a model directory. Nothing is
    fetched from a hub. model_class defaults to AutoModelForCausalLM.
    """
    import transformers

    from ckpt.torch.cuda import check_cuda

    check_cuda(device)  # before the model is built
    if config is None:
        config = _saved_config(path)
    cls = model_class or transformers.AutoModelForCausalLM
    with init_empty():
        model = cls.from_config(config)
    load_into(model, path, device=device, **load_options)
    return model.eval()


def _saved_config(path):
    import transformers

    from ckpt.source import read_index, resolve_dir

    meta = read_index(resolve_dir(path)).metadata
    if "hf_config" not in meta:
        raise CheckpointError(f"{path}: no saved config (metadata 'hf_config'); pass config")
    data = json.loads(meta["hf_config"])
    return transformers.AutoConfig.for_model(**data)
