"""The model a worker serves: a transformers causal LM built from checkpoint metadata and tensors.

    loaded = store.load(name)                                   # ckpt: zero-copy tensors
    model = build_model(loaded.metadata, loaded.tensors, device="cuda")

The model is built with its parameters on the meta device (nothing is allocated or initialised
twice) and then given the checkpoint's tensors as they are (assign semantics, no copy); tied
weights are tied again and non-persistent buffers (rotary frequencies) are computed as usual.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import torch

from serving.protocol import META_CONFIG, ServingError

__all__ = ["build_model"]


def build_model(metadata: Mapping[str, str], tensors: Mapping[str, torch.Tensor],
                device: str | torch.device = "cpu") -> torch.nn.Module:
    """The causal LM that metadata[META_CONFIG] describes, holding tensors; eval mode, no grad.

    tensors: the checkpoint's state dict (names as the model's state_dict), ideally already on
    device; any that are not are copied there. Raises ServingError(500) when the metadata has
    no config or the architecture is unknown to transformers, and ckpt's CheckpointError when
    tensors do not fill the model.
    """
    import transformers

    from ckpt.torch.modules import init_empty, load_into

    if META_CONFIG not in metadata:
        raise ServingError(500, f"checkpoint metadata has no model config ({META_CONFIG!r})")
    data = json.loads(metadata[META_CONFIG])
    try:
        config = transformers.AutoConfig.for_model(**data)
    except (KeyError, ValueError) as exc:
        raise ServingError(500, f"unknown model config: {exc}") from exc
    with init_empty():
        model = transformers.AutoModelForCausalLM.from_config(config)
    load_into(model, tensors, device=device)
    target = torch.device(device)
    if any(p.device.type != target.type or target.index not in (None, p.device.index)
           for p in model.parameters()):
        model.to(target)  # tensors loaded elsewhere: one copy, the rest stays zero-copy
    model.requires_grad_(False)
    return model.eval()
