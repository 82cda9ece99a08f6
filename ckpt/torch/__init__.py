"""The torch adapters of ckpt: tensors to and from checkpoint bytes (tensors.py), loads into
zero-copy tensors (loader.py, mapped.py), modules on the meta device (modules.py), the GPU
path (cuda.py) and the tiered Store (store.py). Everything else in ckpt needs no torch."""
